"""AutoGroup (Liu, Xue, et al.; SIGIR 2020): learned feature groups per interaction order.

For each order p = 1..P there are ``n_p`` groups; whether field i belongs to group g is a
binary choice with structure logits ``[F, n_p, 2]`` (init U(+-0.001)), sampled by
straight-through Gumbel-softmax ``y = softmax((logits + G) / tau)``, hard one-hot forward,
soft gradient backward; ``c_ig = y[i, g, 0]``. With the structure fixed the hard argmax is
taken without noise. On batch-normalised embeddings (no affine) each group gives one
order-p interaction (the official code's form; its compensation term is not multiplied by
the selection)

    I^p_g = sum_k [ (sum_i c_ig w_ig e_ik)^p - lambda * sum_i w_ig^p e_ik^p ]

(order 1 keeps the group vectors; ``w`` starts Xavier-uniform as vega's ``hash_wt``), and
all group outputs feed the MLP. Each training batch is used twice: a network step with the
structure fixed (the trainer's Adam), then a structure step with Gumbel noise (Adam at
``struct_lr``).

Delivered model: the groups found, with their members and order, as ``group`` interactions
of the spec (``autodrs.models.builder.GroupInteractions``, the same interaction on the same
deep head), every order included; empty groups are dropped. Ranking: an order-2 group g
contributes ``2 c_ig c_jg w_ig w_jg <e_i, e_j>`` to every pair of its members, so a pair
scores the magnitude of that sum over the groups; triples score the same from the order-3
groups and are ranked after the pairs.

At the official ``struct_lr`` (1e4) and ``tau`` (0.01) one Adam step saturates a
membership's softmax, whose gradient is then zero: each membership is fixed by the sign of
one batch gradient (docs/interaction.md has the measurement), so the groups barely select.
"""

from __future__ import annotations

import time
from itertools import combinations

import torch
from torch import nn

from autodrs.data.dataset import Batch
from autodrs.methods.interaction.common import (
    InteractionOutput,
    InteractionSupernet,
    arch_loss,
    interaction_result,
    option,
    ranked,
    start_search,
    train_supernet,
)
from autodrs.models.builder import group_power
from autodrs.search.base import Method, SearchContext, SearchError, StageResult, register_method
from autodrs.search.gradient import ArchStep, gumbel_softmax, straight_through
from autodrs.spec import ArchSpec, Interaction


class FeatureGroups(nn.Module):
    """Groups of fields per order and their power-sum interactions."""

    def __init__(self, n_fields: int, dim: int, groups: list[int], tau: float,
                 compensation: float) -> None:
        super().__init__()
        self.dim = dim
        self.norm = nn.BatchNorm1d(n_fields * dim, affine=False)
        self.structure = nn.ParameterList(
            nn.Parameter(torch.empty(n_fields, n, 2).uniform_(-0.001, 0.001)) for n in groups)
        self.field_weight = nn.ParameterList(
            nn.Parameter(nn.init.xavier_uniform_(torch.empty(n_fields, n))) for n in groups)
        self.groups = list(groups)
        self.tau = tau
        self.compensation = compensation
        self.fix_structure = True

    @property
    def feature_dim(self) -> int:
        return self.groups[0] * self.dim + sum(self.groups[1:])

    def choice(self, order: int) -> torch.Tensor:
        """``c`` of order ``order`` (1-based): hard 0/1 ``[F, n_p]`` with a soft gradient."""
        logits = self.structure[order - 1]
        if self.fix_structure or not self.training:
            return straight_through(torch.softmax(logits / self.tau, dim=-1))[..., 0]
        return gumbel_softmax(logits, self.tau, hard=True)[..., 0]

    def forward(self, stacked: torch.Tensor, batch: Batch) -> InteractionOutput:
        b, f, d = stacked.shape
        e = self.norm(stacked.reshape(b, f * d)).reshape(b, f, d)
        parts = []
        for order in range(1, len(self.groups) + 1):
            w = self.field_weight[order - 1]
            parts.append(group_power(e, self.choice(order) * w, w, order, self.compensation))
        return InteractionOutput(features=torch.cat(parts, dim=1))


class AutoGroupSupernet(InteractionSupernet):
    def arch_parameters(self) -> list[nn.Parameter]:
        return list(self.interaction.structure)

    def derive(self) -> dict[str, list[list[str]]]:
        """The members of every group, per order."""
        with torch.no_grad():
            return {f"order{p}": [[self.field_names[i] for i in members]
                                  for members in group_members(self.interaction, p)]
                    for p in range(1, len(self.interaction.groups) + 1)}


def group_members(module: FeatureGroups, order: int) -> list[list[int]]:
    chosen = module.choice(order).detach().T  # [n_p, F]
    return [torch.nonzero(row).flatten().tolist() for row in chosen]


@register_method
class AutoGroup(Method):
    """AutoGroup: straight-through Gumbel field groups per order, same-batch updates.

    Options: ``backbone`` (deepfm | fm), ``max_order`` (3), ``groups`` (per order,
    comma-separated; default the number of fields for each order), ``tau`` (0.01),
    ``compensation`` (lambda, 0.01), ``struct_lr`` (1e4, Adam, as the official callback),
    ``search_epochs``.
    """

    name = "autogroup"
    component = "interaction"
    strategies = ("gradient",)

    def search(self, ctx: SearchContext) -> StageResult:
        strategy, t0, spec, names = start_search(self, ctx)
        max_order = option(ctx, "max_order", 3, int)
        if not 2 <= max_order <= 4:
            raise SearchError(f"max_order must be 2, 3 or 4, got {max_order}")
        raw = ctx.options.get("groups")
        groups = ([int(g) for g in str(raw).split(",")] if raw is not None
                  else [len(names)] * max_order)
        if len(groups) != max_order or any(g < 1 for g in groups):
            raise SearchError(f"groups needs {max_order} positive counts, got {raw!r}")
        tau = option(ctx, "tau", 0.01)
        compensation = option(ctx, "compensation", 0.01)
        struct_lr = option(ctx, "struct_lr", 1e4)
        if tau <= 0 or struct_lr <= 0:
            raise SearchError("tau and struct_lr must be > 0")
        torch.manual_seed(ctx.seed)
        module = FeatureGroups(len(names), spec.embed_dim, groups, tau, compensation)
        supernet = AutoGroupSupernet(ctx.dataset.schema, spec, module,
                                     feature_dim=module.feature_dim)
        struct_opt = torch.optim.Adam(supernet.arch_parameters(), lr=struct_lr)
        loss = arch_loss(spec)

        def structure_loss(model: nn.Module, batch: Batch) -> torch.Tensor:
            module.fix_structure = False  # the structure step samples with Gumbel noise
            try:
                return loss(model, batch)
            finally:
                module.fix_structure = True

        train_supernet(ctx, supernet, [ArchStep(struct_opt, structure_loss, mode="same_batch")])
        return self.result(ctx, spec, supernet, names, strategy, time.perf_counter() - t0)

    def result(self, ctx: SearchContext, spec: ArchSpec, supernet: AutoGroupSupernet,
               names: list[str], strategy: str, seconds: float) -> StageResult:
        module: FeatureGroups = supernet.interaction
        weights: dict[tuple[str, ...], float] = {}
        triples: dict[tuple[str, ...], float] = {}
        with torch.no_grad():
            for order, target in ((2, weights), (3, triples)):
                if order > len(module.groups):
                    continue
                w = module.field_weight[order - 1]
                for g, members in enumerate(group_members(module, order)):
                    for combo in combinations(members, order):
                        key = tuple(names[i] for i in combo)
                        # the coefficient of this product in (sum_i w_i e_i)^p
                        coef = float(torch.prod(w[list(combo), g]))
                        coef *= 2.0 if order == 2 else 6.0
                        target[key] = target.get(key, 0.0) + coef
        scores = {(names[i], names[j]): abs(weights.get((names[i], names[j]), 0.0))
                  for i, j in combinations(range(len(names)), 2)}
        kept = [Interaction(fields=[names[i] for i in members], function="group", order=p)
                for p in range(1, len(module.groups) + 1)
                for members in group_members(module, p) if members]
        triple_scores = {k: abs(v) for k, v in triples.items()}
        ranking = ranked(scores) + ranked(triple_scores)
        # the searched supernet has no FM term: the groups feed the MLP
        out = spec.copy(fm=False, group_compensation=module.compensation)
        return interaction_result(
            self.name, strategy, out, {**scores, **triple_scores}, kept, seconds,
            ranking=ranking,
            extra={"groups": supernet.derive(),
                   "pairs": [list(k) for k in ranked(scores) if scores[k] > 0],
                   "triples": [list(k) for k in ranked(triple_scores)]},
        )
