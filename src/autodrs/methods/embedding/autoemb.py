"""AutoEmb (Zhao, Wang, Chen, Zheng, Liu, Tang; ICDM 2021, arXiv 2002.11252): the embedding
dim of each value chosen from its popularity by a frequency-aware controller.

Every candidate dim d_k (default 2, 8, 16) has its own table, projection to the largest dim
and batch norm without affine (``CandidateTables``). A controller per field, a small MLP over
the value's frequency features (log count and frequency rank in train), gives soft weights
``p(id) = softmax(MLP(freq(id)))`` over the candidates, and the value's embedding is
``sum_k p_k(id) x_k(id)``. Weights take Adam steps on training batches, the controllers on
validation batches (first-order DARTS; AutoEmb's streaming variant uses each incoming batch
as validation data first). Each value keeps its most probable dim: stored as a per-value
pruning mask over the leading coordinates (``granularity=value``), or one dim per field from
the occurrence-weighted probabilities (``granularity=field``); retrained from scratch.
"""

from __future__ import annotations

import time
from typing import Any

import torch
from torch import nn

from autodrs.data.schema import Schema
from autodrs.methods.embedding.common import (
    EmbeddingSupernet,
    arch_every,
    candidate_dims,
    dims_result,
    option,
    searched_fields,
    train_supernet,
    unsearched,
)
from autodrs.nn.mixed import CandidateTables, SearchedEmbedding, value_counts
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

DEFAULT_CANDIDATES = (2, 8, 16)


def frequency_features(counts: torch.Tensor) -> torch.Tensor:
    """Per id: log count scaled to [0, 1] and frequency rank (0 the most frequent, 1 the
    rarest), the controller's view of a value's popularity."""
    log = torch.log1p(counts)
    rank = torch.empty_like(counts)
    rank[torch.argsort(counts, descending=True, stable=True)] = torch.linspace(
        0, 1, len(counts)) if len(counts) > 1 else torch.zeros(1)
    return torch.stack([log / log.max().clamp_min(1.0), rank], dim=1)


class AutoEmbEmbedding(SearchedEmbedding):
    """Candidate tables per searched field, mixed per value by a frequency controller."""

    def __init__(self, schema: Schema, spec: ArchSpec, fields: list[str],
                 candidates: list[int], features: list[torch.Tensor], hidden: int = 16) -> None:
        super().__init__(schema, spec, fields, max(candidates))
        self.candidates = list(candidates)
        self.fields = nn.ModuleList(CandidateTables(schema.field(f).vocab_size, candidates)
                                    for f in fields)
        self.controllers = nn.ModuleList(
            nn.Sequential(nn.Linear(features[0].shape[1], hidden), nn.ReLU(),
                          nn.Linear(hidden, len(candidates)))
            for _ in fields)
        for i, feat in enumerate(features):
            self.register_buffer(f"freq_{i}", feat, persistent=False)

    def weights(self, index: int, ids: torch.Tensor) -> torch.Tensor:
        features = getattr(self, f"freq_{index}")[ids]
        return torch.softmax(self.controllers[index](features), dim=-1)

    def embed_field(self, index: int, ids: torch.Tensor) -> torch.Tensor:
        mixed = self.fields[index](ids)
        return (self.weights(index, ids).unsqueeze(-1) * mixed).sum(1)


class AutoEmbSupernet(EmbeddingSupernet):
    def __init__(self, schema: Schema, spec: ArchSpec, fields: list[str],
                 candidates: list[int], features: list[torch.Tensor]) -> None:
        super().__init__(schema, spec, AutoEmbEmbedding(schema, spec, fields, candidates,
                                                        features))

    def arch_parameters(self) -> list[nn.Parameter]:
        return list(self.embedding.controllers.parameters())

    @torch.no_grad()
    def value_probabilities(self) -> list[torch.Tensor]:
        """``[vocab, K]`` candidate probabilities of every value of each searched field."""
        emb = self.embedding
        return [emb.weights(i, torch.arange(getattr(emb, f"freq_{i}").shape[0]))
                for i in range(len(emb.searched))]

    def derive(self) -> dict[str, Any]:
        cands = torch.tensor(self.embedding.candidates)
        return {f: cands[p.argmax(1)].tolist()
                for f, p in zip(self.embedding.searched, self.value_probabilities(), strict=True)}


@register_method
class AutoEmb(Method):
    """``--methods autoemb``: options ``candidates`` (2,8,16), ``granularity`` (``value`` or
    ``field``), ``arch_lr`` (3e-3), ``arch_every`` (1), ``search_epochs``."""

    name = "autoemb"
    component = "embedding"
    strategies = ("gradient",)

    def search(self, ctx: SearchContext) -> StageResult:
        strategy = self.resolve_strategy(ctx)
        t0 = time.perf_counter()
        schema, spec = ctx.dataset.schema, ctx.spec
        fields = searched_fields(ctx)
        candidates = candidate_dims(ctx, DEFAULT_CANDIDATES)
        granularity = str(ctx.options.get("granularity", "value"))
        if granularity not in ("value", "field"):
            raise SearchError(f"granularity must be 'value' or 'field', got {granularity!r}")
        counts = [value_counts(ctx.dataset.train, schema, f) for f in fields]
        torch.manual_seed(ctx.seed)
        supernet = AutoEmbSupernet(schema, spec, fields, candidates,
                                   [frequency_features(c) for c in counts])
        optimizer = torch.optim.Adam(supernet.arch_parameters(),
                                     lr=option(ctx, "arch_lr", 3e-3))
        every = arch_every(ctx, 1)
        arch_steps, stopped = train_supernet(ctx, supernet, optimizer, every=every)
        reason = unsearched(self.name, ctx, arch_steps, stopped, every)
        if reason is not None:
            return no_result(self.name, strategy, ctx.spec, reason, time.perf_counter() - t0)

        probs = supernet.value_probabilities()
        per_value = supernet.derive()
        width = max(candidates)
        out = spec.copy()
        dims: dict[str, float] = {}
        if granularity == "value":
            out.field_dims = {**spec.field_dims, **dict.fromkeys(fields, width)}
            out.pruning = dict(spec.pruning)
            for f in fields:
                value_dims = torch.tensor(per_value[f])
                mask = torch.arange(width).unsqueeze(0) < value_dims.unsqueeze(1)
                out.pruning[f] = encode_mask(mask)
                dims[f] = float(mask.float().mean())
        else:
            chosen = {}
            for f, p, c in zip(fields, probs, counts, strict=True):
                share = (p * c.unsqueeze(1)).sum(0) / c.sum().clamp_min(1.0)
                chosen[f] = candidates[int(share.argmax())]
            out.field_dims = {**spec.field_dims, **chosen}
            out.pruning = {k: v for k, v in spec.pruning.items() if k not in chosen}
            dims = {f: int(d) for f, d in chosen.items()}
        mean_dim = {f: round(float((torch.tensor(per_value[f]).float() * c).sum()
                                   / c.sum().clamp_min(1.0)), 3)
                    for f, c in zip(fields, counts, strict=True)}
        return dims_result(
            self.name, strategy, ctx, out, dims, time.perf_counter() - t0,
            extra={"occurrence_weighted_dim": mean_dim, "candidates": candidates,
                   "granularity": granularity, "arch_steps": arch_steps,
                   "stopped_by_budget": stopped})
