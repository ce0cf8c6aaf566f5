"""AutoFIS (Liu, Zhu, Li, Zhang, Lai, Tang, He, Li, Yu; KDD 2020): a gate per field pair.

Search: the FM term of FM/DeepFM becomes ``sum_(i,j) alpha_ij * BN(<e_i, e_j>)`` with a
batch norm without affine parameters on each pair's inner product (so a gate measures a
pair's importance, not its embeddings' scale) and gates initialised at 0.6 +- 0.001. Both
optimisers step on the gradients of the *same* training batch: Adam on the weights, GRDA on
the gates,

    v_t = v_{t-1} + 1[t=0] w_0 - gamma g_t,  w_t = sign(v_t) max(|v_t| - c gamma^(0.5+mu) (t+1)^mu, 0),

which sets the gates of useless pairs to exactly zero. Pairs whose gate is zero are removed;
the survivors are retrained with their gates kept as trainable attention
(``Interaction.weight``) on the raw products, each gate starting again at 0.6 as in the
official code (its retrain builds a fresh model whose gates start at ``weight_base``; the
search's gates only choose the pairs). Option ``retrain_gates=searched`` starts them at the
searched values instead; on movielens-100k that tested 0.0018 lower over 10 seeds
(``benchmarks/interaction.py --data movielens-100k --methods autofis --seeds 10``: -0.0010
against DeepFM, the restart +0.0008). The official code's retrain keeps the batch
norm on each product (option ``pair_norm``, ``ArchSpec.pair_norm``); on movielens-100k that
retrain tested 0.7848 +- 0.0033 against 0.7905 +- 0.0016 without it
(``benchmarks/interaction.py --data movielens-100k --methods autofis``), so it is off by
default. The ranking is by ``|alpha|``.

``backbone=auto`` (the default pipeline's) searches under an FM head and a DeepFM head and
retrains, per head, the paper's retrain and a plain FM term over the pairs above the largest
drop in gate magnitude (:func:`head_candidates`), keeping what validates best.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import torch
from torch import nn

from autodrs.data.dataset import Batch
from autodrs.data.schema import Schema
from autodrs.experiment import fit_spec
from autodrs.methods.interaction.common import (
    InteractionOutput,
    InteractionSupernet,
    OptimizerStep,
    candidate_interactions,
    interaction_result,
    option,
    planned_steps,
    search_config,
    start_search,
    train_supernet,
)
from autodrs.nn.layers import PairProducts
from autodrs.search.base import Method, SearchContext, SearchError, StageResult, register_method
from autodrs.spec import ArchSpec, Interaction
from autodrs.train.grda import GRDA

# GRDA settings of the official code per backbone: (c, mu); the gate learning rate is 1.0
GRDA_DEFAULTS = {"deepfm": (5e-4, 0.8), "fm": (5e-3, 0.6)}
GATE_INIT = 0.6
GATE_SPREAD = 0.001
SEARCH_EPOCHS = 2
# at least this many weight steps: the gates of pairs of sparse fields (user x item) only
# earn their keep once those fields' embeddings have learned something
SEARCH_STEPS = 400
FINAL_THRESHOLD = 3 * GATE_INIT
AUTO = "auto"  # backbone=auto: both heads searched, the better retrain kept
# the FM head first: it is the structure the input cannot express (no MLP), so under a
# tight budget it is the one retrained
HEADS = ("fm", "deepfm")


def affordable(ctx: SearchContext, longest: float) -> bool:
    """Whether the stage's time left pays for one more retrain, as long as the longest so far
    (or the run's estimate of a retrain, ``retrain_seconds``); always without a budget."""
    left = ctx.remaining()
    return left is None or left > max(longest, option(ctx, "retrain_seconds", 0.0))


def above_largest_drop(kept: list[Interaction],
                       gates: Sequence[float] | None = None) -> list[Interaction]:
    """The pairs ranked above the largest drop between consecutive gate magnitudes
    (``kept`` best first; the searched ``gates`` of its pairs, by default their weights),
    without their gates: the strong pairs of a search whose tail of weak survivors GRDA's
    threshold did not reach."""
    size = [abs(g or 0.0) for g in (gates if gates is not None else
                                     [i.weight for i in kept])]
    cut = (max(range(1, len(kept)), key=lambda k: size[k - 1] - size[k]) if len(kept) > 1
           else len(kept))
    return [Interaction(fields=list(i.fields), function=i.function) for i in kept[:cut]]


def head_candidates(spec: ArchSpec, schema: Schema,
                    gates: Sequence[float] | None = None) -> list[ArchSpec]:
    """What ``backbone=auto`` retrains from one head's search, likeliest first.

    Two sets of pairs: those above the largest drop in searched gate magnitude (``gates``,
    one per kept pair; by default their weights) as a plain FM term,
    then every kept pair with its gate as trainable attention (the paper's retrain). On the
    planted synthetic data (40 epochs, patience 4, 3 seeds) the first tested 0.8347-0.8389
    against 0.8306-0.8360: the weak survivors fit noise, and the trained gates stopped the
    fit at epoch 17 against 30. Under the FM head, numerical fields encoded ``linear`` are
    also tried bucketised, first: with no MLP after them a linear encoding can only act
    monotonically, so the head should not be judged by an encoder chosen for an MLP."""
    kept = list(spec.interactions or [])
    pair_sets = [above_largest_drop(kept, gates), kept] if kept else [kept]
    encodings = [spec.numerical]
    linear = [f for f in spec.used_fields(schema) if schema.field(f).kind == "numerical"
              and spec.numerical.get(f, "linear") == "linear"]
    if not spec.mlp and linear:
        encodings.insert(0, {**spec.numerical, **dict.fromkeys(linear, "bucket")})
    out: list[ArchSpec] = []
    for numerical in encodings:
        for pairs in pair_sets:
            candidate = spec.copy(numerical=dict(numerical), interactions=list(pairs))
            if candidate.provenance and candidate.provenance[-1].get("method") == "autofis":
                candidate.provenance[-1]["kept"] = [list(i.fields) for i in pairs]
            if all(candidate.to_dict() != c.to_dict() for c in out):
                out.append(candidate)
    return out


def default_search_epochs(train_rows: int, batch_size: int) -> int:
    """``SEARCH_EPOCHS``, or more when they hold fewer than ``SEARCH_STEPS`` weight steps.

    On movielens-100k (79 steps an epoch) two epochs left the user and item embeddings
    near their initial values, and the user x item gate, the pair collaborative filtering
    rests on, was pruned on 2 of 3 seeds; with six epochs it was kept on all three."""
    per_epoch = max(1, -(-train_rows // batch_size))
    return max(SEARCH_EPOCHS, -(-SEARCH_STEPS // per_epoch))


class GatedPairInteraction(nn.Module):
    """``sum_p alpha_p * BN(<e_i, e_j>)`` over candidate pairs p = (i, j)."""

    def __init__(self, pairs: list[tuple[int, ...]]) -> None:
        super().__init__()
        self.products = PairProducts(pairs)
        self.norm = nn.BatchNorm1d(len(pairs), affine=False)
        self.gate = nn.Parameter(torch.empty(len(pairs)).uniform_(GATE_INIT - GATE_SPREAD,
                                                                  GATE_INIT + GATE_SPREAD))

    def forward(self, stacked: torch.Tensor, batch: Batch) -> InteractionOutput:
        return InteractionOutput(logit=(self.norm(self.products(stacked)) * self.gate).sum(1))


class AutoFISSupernet(InteractionSupernet):
    def arch_parameters(self) -> list[nn.Parameter]:
        return [self.interaction.gate]

    def derive(self) -> dict[str, float]:
        gates = self.interaction.gate.detach()
        names = self.field_names
        pairs = zip(self.interaction.products.left.tolist(),
                    self.interaction.products.right.tolist(), strict=True)
        return {f"{names[i]}*{names[j]}": float(g) for (i, j), g in zip(pairs, gates,
                                                                        strict=True)}


@register_method
class AutoFIS(Method):
    """AutoFIS: gates on every pair trained by GRDA on the same batches; zero gates pruned.

    Options: ``backbone`` (deepfm | fm | auto: both heads searched, their candidates
    (:func:`head_candidates`) retrained and the one that validates best kept; the default
    pipeline's), ``search_epochs`` (default 2, more on small data:
    ``default_search_epochs``), ``gate_lr`` (1.0), ``pair_norm`` (retrain on
    batch-normalised products as the official code does; off), ``retrain_gates`` (``init``:
    the kept gates restart at 0.6, as the official code's retrain; ``searched``: at their
    searched values),
    ``mu`` (per backbone, from the official code), and the threshold scale: ``c`` when
    given, else ``max(c_paper, threshold / (gate_lr^(0.5+mu) T^mu))`` over the T planned
    search steps, ``threshold`` defaulting to 1.8 (3x the initial gate).

    Why not always the official ``c``: GRDA prunes a gate once the threshold passes its
    accumulator, which starts at the initial gate (0.6) and only grows for pairs the loss
    keeps asking for. The official ``c = 5e-4`` reaches about 2x the initial gate after one
    pass over Criteo (~20k steps of 2,000 rows); over a few hundred steps it would stay near
    0.1 and prune nothing. So the threshold is scaled to reach ``threshold`` at the last
    planned step, never below the official schedule; 1.8 was set on the planted synthetic
    data (see benchmarks/interaction.py).
    """

    name = "autofis"
    component = "interaction"
    strategies = ("gradient",)

    def retrains_choice(self, options: dict[str, Any]) -> bool:
        return str(options.get("backbone", "")).lower() == AUTO

    def search(self, ctx: SearchContext) -> StageResult:
        if self.retrains_choice(ctx.options):
            return self.search_heads(ctx)
        return self.search_head(ctx)

    def search_heads(self, ctx: SearchContext) -> StageResult:
        """``backbone=auto``: search under the FM head (no MLP), then under the DeepFM head,
        retrain each result's candidates (:func:`head_candidates`) with the run's trainer and
        keep the one that validates best. A candidate is only retrained while the time left
        pays for it; the first head's result is returned unretrained when none does."""
        t0 = time.perf_counter()
        tried: list[tuple[StageResult, ArchSpec, float, float]] = []  # + valid AUC, seconds
        longest = 0.0
        first: StageResult | None = None
        for head in HEADS:
            if first is not None and not affordable(ctx, longest):
                break
            found = self.search_head(replace(ctx, options={**ctx.options, "backbone": head}))
            first = first or found
            searched = [found.scores[i.key] for i in found.spec.interactions or []]
            for spec in head_candidates(found.spec, ctx.dataset.schema, searched):
                if not affordable(ctx, longest):
                    break
                outcome = fit_spec(ctx.dataset, spec, ctx.train)
                longest = max(longest, outcome.seconds)
                tried.append((found, spec, outcome.metrics["valid"]["auc"], outcome.seconds))
        assert first is not None
        if not tried:
            first.seconds = time.perf_counter() - t0
            first.extra["heads"] = {"chosen": first.extra["backbone"], "retrained": []}
            return first
        best, spec, _, _ = max(tried, key=lambda t: t[2])
        best.spec = spec
        best.extra["kept"] = [i.key for i in spec.interactions or []]
        best.seconds = time.perf_counter() - t0
        best.extra["heads"] = {
            "chosen": best.extra["backbone"],
            "retrained": [{"backbone": r.extra["backbone"], "numerical": dict(s.numerical),
                           "pairs": len(s.interactions or []),
                           "gates": any(i.weight is not None for i in s.interactions or []),
                           "valid_auc": round(v, 6), "seconds": round(sec, 3)}
                          for r, s, v, sec in tried]}
        return best

    def search_head(self, ctx: SearchContext) -> StageResult:
        strategy, t0, spec, names = start_search(self, ctx)
        backbone = "fm" if not spec.mlp else "deepfm"
        config = search_config(ctx, default_epochs=default_search_epochs(
            len(ctx.dataset.train), ctx.train.batch_size))
        c_paper, mu_default = GRDA_DEFAULTS[backbone]
        mu = option(ctx, "mu", mu_default)
        gate_lr = option(ctx, "gate_lr", 1.0)
        threshold = option(ctx, "threshold", FINAL_THRESHOLD)
        if threshold < 0:
            raise SearchError(f"threshold must be >= 0, got {threshold}")
        steps = planned_steps(ctx, config)
        c = option(ctx, "c", None)
        if c is None:
            c = max(c_paper, threshold / (gate_lr ** (0.5 + mu) * steps ** mu))
        pairs = candidate_interactions(names, 2)
        torch.manual_seed(ctx.seed)
        supernet = AutoFISSupernet(ctx.dataset.schema, spec, GatedPairInteraction(pairs))
        grda = GRDA(supernet.arch_parameters(), lr=gate_lr, c=c, mu=mu)
        trainer = train_supernet(ctx, supernet, [OptimizerStep(grda)], config)
        gates = supernet.interaction.gate.detach().tolist()
        scores = {(names[i], names[j]): abs(g) for (i, j), g in zip(pairs, gates, strict=True)}
        retrain_gates = str(ctx.options.get("retrain_gates", "init")).lower()
        if retrain_gates not in ("init", "searched"):
            raise SearchError(f"retrain_gates must be init or searched, got {retrain_gates!r}")
        survivors = sorted(((p, g) for p, g in zip(pairs, gates, strict=True) if g != 0.0),
                           key=lambda pg: -abs(pg[1]))
        kept = [Interaction(fields=[names[i], names[j]],
                            weight=g if retrain_gates == "searched" else GATE_INIT)
                for (i, j), g in survivors]
        norm = str(ctx.options.get("pair_norm", False)).lower() in ("1", "true", "yes")
        return interaction_result(
            self.name, strategy, spec.copy(pair_norm=norm), scores, kept,
            time.perf_counter() - t0,
            extra={"backbone": backbone, "grda": {"c": c, "mu": mu, "lr": gate_lr},
                   "retrain_gates": retrain_gates,
                   "search_steps": trainer.step,
                   "final_threshold": grda.threshold(grda.param_groups[0], trainer.step - 1)},
        )
