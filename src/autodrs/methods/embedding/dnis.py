"""DNIS, Differentiable Neural Input Search (Cheng, Shen, Huang; arXiv 2006.04466; AutoSrh,
TKDE 2023): a continuous dimension mask per frequency group, searched on validation loss,
then pruned.

Each field's values are grouped by train frequency (equal shares of the field's
occurrences, most frequent first) and its ``D`` dims cut into blocks. A soft selection
``alpha[f, g, k]`` in [0, 1] (initialised to 1) multiplies block k of the embeddings of the
values in group g: ``e = E[id] * alpha[f, group(id)]`` (repeated over each block). After a
warm start (plain training), weights take Adam steps on training batches and alpha a step on
a validation batch after each: its gradient is divided by its mean absolute value per row
(``alpha_grad_norm``), SGD with lr 0.01, then clamped to [0, 1]. Pruning keeps the
(field, group, block) entries with the largest alpha up to a ``keep`` share of the table
entries; each field's dim is its kept blocks averaged over its groups' occurrences, or,
with ``granularity=group``, each group keeps its own blocks as a per-value pruning mask.
The pruned spec is retrained from scratch.
"""

from __future__ import annotations

import time
from typing import Any

import torch
from torch import nn

from autodrs.data.schema import Schema
from autodrs.methods.embedding.common import (
    EmbeddingSupernet,
    dims_result,
    option,
    searched_fields,
    train_supernet,
    unsearched,
)
from autodrs.nn.mixed import SearchedEmbedding, value_counts
from autodrs.nn.pruned import encode_mask
from autodrs.search.base import (
    Method,
    SearchContext,
    SearchError,
    StageResult,
    no_result,
    register_method,
)
from autodrs.spec import ArchSpec


def frequency_groups(counts: torch.Tensor, groups: int) -> torch.Tensor:
    """Group of each id: equal shares of the occurrences, most frequent values first; values
    never seen in train (and the reserved ids) fall in the last, rarest group."""
    order = torch.argsort(counts, descending=True, stable=True)
    total = float(counts.sum())
    before = torch.cumsum(counts[order], 0) - counts[order]
    share = before / total if total > 0 else torch.ones_like(before)
    group = torch.empty_like(order)
    group[order] = (share * groups).long().clamp(max=groups - 1)
    group[counts == 0] = groups - 1
    return group


class RowNormalisedSGD(torch.optim.Optimizer):
    """SGD whose gradient is divided by its mean absolute value over the last axis (one
    row of alpha), followed by a clamp to [low, high] (DNIS's alpha update).

    ``l1`` adds DNIS's optional L1 term on alpha (>= 0, so its gradient is a constant),
    scaled by the mean |gradient| over all of alpha so that one setting fits any loss
    scale. After the row normalisation, a row whose validation gradient is weak against
    that mean (a field the loss does not need) is driven down by the L1 term at the full
    step size until the clamp zeroes it; a row with a strong gradient moves as the
    validation loss asks. Without it a noise field's alpha hardly moves from 1: on the
    planted synthetic data its dims then matched the relevant fields'."""

    def __init__(self, params: list[nn.Parameter], lr: float = 0.01, low: float = 0.0,
                 high: float = 1.0, l1: float = 0.0) -> None:
        super().__init__(params, {"lr": lr, "low": low, "high": high, "l1": l1})

    @torch.no_grad()
    def step(self, closure: Any = None) -> None:
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                grad = p.grad
                if group["l1"]:
                    grad = grad + group["l1"] * grad.abs().mean()
                scale = grad.abs().mean(dim=-1, keepdim=True).clamp_min(1e-12)
                p.add_(grad / scale, alpha=-group["lr"])
                p.clamp_(group["low"], group["high"])


class DNISEmbedding(SearchedEmbedding):
    """A ``D``-dim table per searched field, masked by ``alpha[f, group(id)]`` per block."""

    def __init__(self, schema: Schema, spec: ArchSpec, fields: list[str],
                 groups_of: list[torch.Tensor], width: int, block: int, groups: int) -> None:
        super().__init__(schema, spec, fields, width)
        self.block = block
        self.tables = nn.ModuleList()
        for f in fields:
            table = nn.Embedding(schema.field(f).vocab_size, width)
            nn.init.normal_(table.weight, std=0.01)
            self.tables.append(table)
        for i, g in enumerate(groups_of):
            self.register_buffer(f"group_{i}", g, persistent=False)
        self.alpha = nn.Parameter(torch.ones(len(fields), groups, width // block))

    def embed_field(self, index: int, ids: torch.Tensor) -> torch.Tensor:
        mask = self.alpha[index][getattr(self, f"group_{index}")[ids]]
        return self.tables[index](ids) * mask.repeat_interleave(self.block, dim=1)


class DNISSupernet(EmbeddingSupernet):
    def __init__(self, schema: Schema, spec: ArchSpec, fields: list[str],
                 groups_of: list[torch.Tensor], width: int, block: int, groups: int) -> None:
        super().__init__(schema, spec, DNISEmbedding(schema, spec, fields, groups_of, width,
                                                     block, groups))

    def arch_parameters(self) -> list[nn.Parameter]:
        return [self.embedding.alpha]

    def derive(self) -> dict[str, Any]:
        return {"alpha": self.embedding.alpha.detach().tolist()}


# the L1 term on alpha, relative to the mean |validation gradient| of alpha (see
# ``RowNormalisedSGD``)
L1 = 0.1
ZERO = 1e-6  # an alpha the search clamped to zero: its block is pruned whatever the budget


def prune(alpha: torch.Tensor, rows: torch.Tensor, keep: float) -> torch.Tensor:
    """Kept (field, group, block) entries: the largest alpha first (ties: frequent groups,
    then leading blocks) until the next would take more than ``keep`` of the table entries
    (``rows[f, g]`` rows a block), so every kept alpha is at least every pruned one;
    entries whose alpha is zero are never kept. At least one block of each field's most
    frequent group is kept."""
    F, G, K = alpha.shape
    cost = rows.unsqueeze(-1).expand(F, G, K).reshape(-1).double()
    budget = keep * float(cost.sum())
    g_idx = torch.arange(G).view(1, G, 1).expand(F, G, K).reshape(-1)
    k_idx = torch.arange(K).view(1, 1, K).expand(F, G, K).reshape(-1)
    keys = sorted(range(F * G * K), key=lambda i: (-float(alpha.reshape(-1)[i]),
                                                    int(g_idx[i]), int(k_idx[i]), i))
    kept = torch.zeros(F * G * K, dtype=torch.bool)
    used = 0.0
    flat = alpha.reshape(-1)
    for i in keys:
        if float(flat[i]) <= ZERO:
            break  # keys run from the largest alpha down: the rest are zero too
        if used + float(cost[i]) > budget:
            # the cut: every entry after this one has a smaller alpha. Skipping it to keep
            # cheaper ones further down would keep rare groups and small fields whatever
            # their alpha (on the planted data: noise fields at the relevant ones' dims)
            break
        kept[i] = True
        used += float(cost[i])
    kept = kept.view(F, G, K)
    for f in range(F):
        if not kept[f, 0].any():
            kept[f, 0, int(alpha[f, 0].argmax())] = True
    return kept


@register_method
class DNIS(Method):
    """``--methods dnis``: options ``dnis_dim`` (the searched width D, default the spec's
    ``embed_dim``), ``block`` (dims per block, 2), ``groups`` (frequency groups per field,
    4), ``warm_epochs`` (1), ``search_epochs``, ``arch_lr`` (0.01), ``l1`` (0.1, relative: see
    ``RowNormalisedSGD``), ``keep`` (share of table entries kept, 0.5; blocks whose alpha
    the search drove to zero are pruned whatever the budget), ``granularity`` (``field``
    dims or per-``group`` masks)."""

    name = "dnis"
    component = "embedding"
    strategies = ("gradient",)

    def search(self, ctx: SearchContext) -> StageResult:
        strategy = self.resolve_strategy(ctx)
        t0 = time.perf_counter()
        schema, spec = ctx.dataset.schema, ctx.spec
        fields = searched_fields(ctx)
        width = option(ctx, "dnis_dim", spec.embed_dim, int)
        block = option(ctx, "block", 2, int)
        groups = option(ctx, "groups", 4, int)
        keep = option(ctx, "keep", 0.5)
        granularity = str(ctx.options.get("granularity", "field"))
        if width <= 0 or block <= 0 or width % block:
            raise SearchError(f"dnis_dim ({width}) must be a positive multiple of block ({block})")
        if groups < 1:
            raise SearchError(f"groups must be >= 1, got {groups}")
        if not 0.0 < keep <= 1.0:
            raise SearchError(f"keep must be in (0, 1], got {keep}")
        if granularity not in ("field", "group"):
            raise SearchError(f"granularity must be 'field' or 'group', got {granularity!r}")

        counts = [value_counts(ctx.dataset.train, schema, f) for f in fields]
        groups_of = [frequency_groups(c, groups) for c in counts]
        torch.manual_seed(ctx.seed)
        supernet = DNISSupernet(schema, spec, fields, groups_of, width, block, groups)
        optimizer = RowNormalisedSGD(supernet.arch_parameters(), lr=option(ctx, "arch_lr", 0.01),
                                     l1=option(ctx, "l1", L1))
        arch_steps, stopped = train_supernet(ctx, supernet, optimizer, every=1,
                                             warm_epochs=option(ctx, "warm_epochs", 1, int))
        reason = unsearched(self.name, ctx, arch_steps, stopped, 1)
        if reason is not None:
            return no_result(self.name, strategy, ctx.spec, reason, time.perf_counter() - t0)

        alpha = supernet.embedding.alpha.detach()
        rows = torch.stack([torch.bincount(g, minlength=groups) for g in groups_of]).float()
        kept = prune(alpha, rows, keep)
        mass = torch.stack([torch.bincount(g, weights=c, minlength=groups)
                            for g, c in zip(groups_of, counts, strict=True)])
        mass = mass / mass.sum(1, keepdim=True).clamp_min(1.0)
        blocks = kept.sum(-1).float()
        out = spec.copy()
        if granularity == "field":
            per_field = {f: block * max(1, int(round(float((mass[i] * blocks[i]).sum()))))
                         for i, f in enumerate(fields)}
            out.field_dims = {**spec.field_dims, **per_field}
            out.pruning = {k: v for k, v in spec.pruning.items() if k not in per_field}
            dims: dict[str, float] = {f: int(d) for f, d in per_field.items()}
        else:
            out.field_dims = {**spec.field_dims, **dict.fromkeys(fields, width)}
            out.pruning = dict(spec.pruning)
            dims = {}
            for i, f in enumerate(fields):
                cols = kept[i].repeat_interleave(block, dim=1)  # [G, D]
                mask = cols[groups_of[i]]
                out.pruning[f] = encode_mask(mask)
                dims[f] = float(mask.float().mean())
        return dims_result(
            self.name, strategy, ctx, out, dims, time.perf_counter() - t0,
            extra={"alpha": {f: [[round(float(a), 4) for a in row] for row in alpha[i]]
                             for i, f in enumerate(fields)},
                   "kept_blocks": {f: [int(b) for b in blocks[i]] for i, f in enumerate(fields)},
                   "group_share": {f: [round(float(m), 4) for m in mass[i]]
                                   for i, f in enumerate(fields)},
                   "arch_steps": arch_steps, "stopped_by_budget": stopped,
                   "granularity": granularity, "keep": keep})
