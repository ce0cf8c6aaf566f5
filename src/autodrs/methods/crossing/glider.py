"""GLIDER-style cross proposals (Tsang, Cheng, Liu, Liu; ICLR 2020) from neural interaction
detection (NID; Tsang, Cheng, Liu; ICLR 2018) on a trained MLP.

An MLP over the field embeddings is trained with the shared trainer. NID reads interactions
from its weights: a pair of inputs can only interact inside a first-layer unit that both
feed, so unit h's strength for fields (f, g) is the weaker of their incoming weights,
``min(w_hf, w_hg)``, times the unit's influence on the output,
``z = |w_out|^T |W_L| ... |W_2|``. The score of a pair is ``sum_h z_h min(w_hf, w_hg)``.
Here ``w_hf`` is the norm of unit h's weights over field f's embedding coordinates, each
scaled by that coordinate's spread on validation rows: unlike NID's standardised inputs,
embeddings differ in scale, and a weight on a near-constant coordinate carries no signal.
GLIDER explains a black-box recommender with local surrogates; this global variant reads
the recommender-shaped MLP itself.

Pairs where one field determines the other (``selection.redundancy.determined_pairs``)
are left out: their cross is the determining field again. NID also scores pairs of strong
main effects that do not interact, so proposals are checked before they become crosses:
in pair-score order, the first ``max_crosses`` pairs are each scored by AutoCross's
field-wise LR over the current LR's frozen logit, and kept when the validation logloss
gain exceeds ``min_gain`` (a kept cross joins the logit).

Options: ``hidden`` (MLP widths, default 256,128), ``search_epochs``, ``max_crosses`` (10),
``min_gain`` (5e-4), ``l2`` (5.0).
"""

from __future__ import annotations

import time
from itertools import combinations

import torch
from torch import nn

from autodrs.methods.crossing.autocross import base_model, degenerate, option
from autodrs.methods.crossing.fieldwise import cross_gains
from autodrs.methods.selection.common import search_config
from autodrs.methods.selection.redundancy import determined_pairs
from autodrs.methods.selection.subset import in_schema_order
from autodrs.models.backbones import DEFAULT_MLP
from autodrs.models.builder import CTRModel, build_model
from autodrs.search.base import Method, SearchContext, SearchError, StageResult, register_method
from autodrs.train.trainer import TimeLimit, Trainer, default_threads

SPREAD_ROWS = 10_000


@torch.no_grad()
def nid_pair_scores(model: CTRModel, ctx: SearchContext,
                    fields: list[str]) -> dict[tuple[str, str], float]:
    """NID pair strengths of ``fields`` from a trained model with an MLP over its flat
    embeddings (and no other input to the MLP)."""
    assert model.mlp is not None and model.head is not None
    linears = [m for m in model.mlp.net if isinstance(m, nn.Linear)]
    z = model.head.weight.abs()
    for layer in reversed(linears[1:]):
        z = z @ layer.weight.abs()
    z = z.squeeze(0)
    model.eval()
    sample = ctx.dataset.valid.batch(slice(0, SPREAD_ROWS))
    spread = torch.cat(model.embedding(sample), dim=1).std(0)
    w1 = linears[0].weight.abs() * spread
    bounds, start = {}, 0
    for name, dim in zip(model.embedding.names, model.embedding.dims, strict=True):
        bounds[name] = (start, start + dim)
        start += dim
    per_field = {f: w1[:, bounds[f][0]:bounds[f][1]].norm(dim=1) for f in fields}
    return {(a, b): float((z * torch.minimum(per_field[a], per_field[b])).sum())
            for a, b in combinations(fields, 2)}


@register_method
class Glider(Method):
    name = "glider"
    component = "crossing"
    strategies = ("gradient",)

    def search(self, ctx: SearchContext) -> StageResult:
        strategy = self.resolve_strategy(ctx)
        t0 = time.perf_counter()
        torch.set_num_threads(ctx.train.threads or default_threads())
        max_crosses = option(ctx, "max_crosses", 2 if ctx.fast else 10, int)
        min_gain = option(ctx, "min_gain", 5e-4)
        l2 = option(ctx, "l2", 5.0)
        hidden = ctx.options.get("hidden", DEFAULT_MLP)
        try:
            widths = [int(w) for w in (hidden.split(",") if isinstance(hidden, str) else hidden)]
        except (TypeError, ValueError) as e:
            raise SearchError(f"option hidden={hidden!r} must be comma-separated widths") from e
        if max_crosses < 1 or l2 <= 0 or not widths or min(widths) < 1:
            raise SearchError("glider needs max_crosses >= 1, l2 > 0 and positive MLP widths")
        lr_model, pool = base_model(ctx, l2)
        fields = in_schema_order(ctx.dataset.schema, [p[0] for p in pool if len(p) == 1])
        mlp_spec = ctx.spec.copy(crosses=[], linear=False, fm=False, pair_norm=False, inner=False,
                                 cross_layers=0, attention_layers=0, interactions=None,
                                 controller=None, mlp=widths, batch_norm=False)
        torch.manual_seed(ctx.seed)
        model = build_model(ctx.dataset.schema, mlp_spec)
        fit = Trainer(search_config(ctx), [TimeLimit(ctx.remaining)]).fit(
            model, ctx.dataset.train, ctx.dataset.valid)
        determined = determined_pairs(ctx.dataset.schema, ctx.dataset.train, fields)
        strength = {p: s for p, s in nid_pair_scores(model, ctx, fields).items()
                    if not degenerate(p, determined)}
        top = max(strength.values()) or 1.0
        ranking = sorted(strength, key=lambda p: (-strength[p], p))
        order = torch.arange(len(ctx.dataset.train))
        accepted, gains = [], {}
        for pair in ranking[:max_crosses]:
            if ctx.out_of_budget():
                break
            gains[pair] = cross_gains(lr_model, [pair], len(order), order)[pair]
            if gains[pair] > min_gain:
                lr_model.add(pair)
                accepted.append(pair)
        seconds = time.perf_counter() - t0
        spec = ctx.spec.copy(crosses=[*ctx.spec.crosses, *[list(p) for p in accepted]])
        spec.record(self.name, strategy, ["crosses"], seconds, added=len(accepted))
        spec.validate(ctx.dataset.schema)
        return StageResult(
            method=self.name, strategy=strategy, spec=spec,
            ranking=[list(p) for p in ranking],
            scores={"*".join(p): round(strength[p] / top, 6) for p in ranking},
            seconds=seconds,
            extra={"accepted": [list(p) for p in accepted],
                   "lr_gains": {"*".join(p): round(g, 6) for p, g in gains.items()},
                   "mlp_valid_auc": fit.valid["auc"]})
