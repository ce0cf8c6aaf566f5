"""PROFIT (Gao, Li, Yao, Jin, Li; NeurIPS 2021, "Progressive Feature Interaction Search for
Deep Sparse Network"): a low-rank architecture, searched order by order.

The architecture weight of an order-k interaction is a rank-R CP decomposition,

    alpha_(i1..ik) = sum_r prod_t beta^(r)_(i_t),

so order k costs ``R * F`` parameters instead of ``F^k``. The supernet adds
``sum alpha_(i1..ik) * BN(<e_i1, ..., e_ik>)`` (a batch norm without affine per interaction, so
alpha measures importance rather than scale) to the FM/DeepFM logit. The search is
progressive: order 2 is searched first (DARTS-style, first-order: beta steps on validation
batches, weights on training batches), its top ``keep`` pairs are fixed, then order 3 is
searched over the triples that extend a kept pair, warm-started from the order-2 weights.
No public code exists; this follows the paper's description.
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
    search_config,
    start_search,
    train_supernet,
)
from autodrs.search.base import Method, SearchContext, SearchError, StageResult, register_method
from autodrs.search.gradient import ArchStep
from autodrs.spec import Interaction


class LowRankOrder(nn.Module):
    """``sum_c alpha_c BN(prod-sum of e over c)`` over candidate interactions ``c`` of one
    order, with ``alpha`` from rank-R CP factors ``beta [R, order, F]``."""

    def __init__(self, n_fields: int, candidates: list[tuple[int, ...]], rank: int) -> None:
        super().__init__()
        order = len(candidates[0])
        self.register_buffer("index", torch.tensor(candidates, dtype=torch.long),
                             persistent=False)
        # alpha starts near 0.5 for every candidate, as a gate that neither keeps nor drops
        init = (0.5 / rank) ** (1.0 / order)
        self.beta = nn.Parameter(init + 0.01 * torch.randn(rank, order, n_fields))
        self.norm = nn.BatchNorm1d(len(candidates), affine=False)
        # 0 for candidates dropped once the order is fixed
        self.register_buffer("mask", torch.ones(len(candidates)), persistent=False)

    def alpha(self) -> torch.Tensor:
        # beta[r, t, index[c, t]] multiplied over t, summed over r
        picked = torch.stack([self.beta[:, t, self.index[:, t]]
                              for t in range(self.index.shape[1])], dim=1)  # [R, order, C]
        return picked.prod(1).sum(0) * self.mask

    def fix(self, kept: list[int]) -> None:
        """Freeze this order: its alpha stays, candidates outside ``kept`` are dropped."""
        self.beta.requires_grad_(False)
        self.mask.zero_()
        self.mask[kept] = 1.0

    def forward(self, stacked: torch.Tensor) -> torch.Tensor:
        product = stacked[:, self.index[:, 0]]
        for t in range(1, self.index.shape[1]):
            product = product * stacked[:, self.index[:, t]]
        return (self.norm(product.sum(-1)) * self.alpha()).sum(1)


class ProgressiveInteraction(nn.Module):
    """Fixed lower orders (their alpha frozen) plus the order under search."""

    def __init__(self) -> None:
        super().__init__()
        self.orders = nn.ModuleList()

    def forward(self, stacked: torch.Tensor, batch: Batch) -> InteractionOutput:
        return InteractionOutput(logit=sum(order(stacked) for order in self.orders))


class PROFITSupernet(InteractionSupernet):
    def arch_parameters(self) -> list[nn.Parameter]:
        return [self.interaction.orders[-1].beta]

    def derive(self) -> dict[str, float]:
        names = self.field_names
        out = {}
        for order in self.interaction.orders:
            with torch.no_grad():
                alpha = order.alpha().tolist()
            for combo, a in zip(order.index.tolist(), alpha, strict=True):
                out["*".join(names[i] for i in combo)] = a
        return out


@register_method
class PROFIT(Method):
    """PROFIT: CP-factorised interaction weights searched order by order.

    Options: ``backbone`` (deepfm | fm), ``rank`` (R, 4), ``max_order`` (2 or 3, default 3),
    ``keep`` (pairs kept, default the number of fields), ``keep3`` (triples kept, default
    half the number of fields), ``arch_lr`` (Adam on beta, 0.01), ``search_epochs`` per order
    (default 2).
    """

    name = "profit"
    component = "interaction"
    strategies = ("gradient",)

    def search(self, ctx: SearchContext) -> StageResult:
        strategy, t0, spec, names = start_search(self, ctx)
        n = len(names)
        rank = option(ctx, "rank", 4, int)
        max_order = option(ctx, "max_order", 3, int)
        keep = option(ctx, "keep", n, int)
        keep3 = option(ctx, "keep3", max(1, n // 2), int)
        arch_lr = option(ctx, "arch_lr", 0.01)
        if rank < 1 or keep < 1 or keep3 < 1 or arch_lr <= 0 or max_order not in (2, 3):
            raise SearchError("profit needs rank, keep, keep3 >= 1, arch_lr > 0 and "
                              "max_order 2 or 3")
        config = search_config(ctx, default_epochs=2)
        torch.manual_seed(ctx.seed)
        module = ProgressiveInteraction()
        supernet = PROFITSupernet(ctx.dataset.schema, spec, module)
        loss = arch_loss(spec)
        scores: dict[tuple[str, ...], float] = {}
        ranking: list[tuple[str, ...]] = []
        kept_pairs: list[tuple[int, ...]] = []
        candidates: list[tuple[int, ...]] = list(combinations(range(n), 2))
        for order in range(2, max_order + 1):
            if order == 3:
                # order priority: a useful triple extends a kept pair
                candidates = sorted({tuple(sorted((*p, k))) for p in kept_pairs
                                     for k in range(n) if k not in p})
                if not candidates:
                    break
            module.orders.append(LowRankOrder(n, candidates, rank))
            arch_opt = torch.optim.Adam(supernet.arch_parameters(), lr=arch_lr)
            step = ArchStep(arch_opt, loss, mode="bilevel", every=1, valid=ctx.dataset.valid,
                            batch_size=config.batch_size, seed=ctx.seed + order)
            train_supernet(ctx, supernet, [step], config)
            with torch.no_grad():
                alpha = module.orders[-1].alpha().tolist()
            found = {tuple(names[i] for i in c): abs(a)
                     for c, a in zip(candidates, alpha, strict=True)}
            best = ranked(found)
            scores.update(found)
            ranking += best
            top = set(best[: keep if order == 2 else keep3])
            chosen = [c for c in candidates if tuple(names[i] for i in c) in top]
            if order == 2:
                kept_pairs = chosen
                module.orders[-1].fix([candidates.index(c) for c in chosen])
        pairs = [tuple(names[i] for i in c) for c in kept_pairs]
        kept = [Interaction(fields=list(p)) for p in ranked({p: scores[p] for p in pairs})]
        triples = [k for k in ranking if len(k) == 3][:keep3]
        # the kept triples reach the model as third-order product terms
        kept += [Interaction(fields=list(t)) for t in triples]
        return interaction_result(
            self.name, strategy, spec, scores, kept, time.perf_counter() - t0,
            ranking=ranking, extra={"rank": rank, "triples": [list(t) for t in triples]},
        )
