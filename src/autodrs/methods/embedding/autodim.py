"""AutoDim (Zhao et al., WWW 2021, "Memory-efficient Embedding for Recommendations"):
one embedding dim per field, searched by gradient.

Candidates are stored by weight sharing (the paper's second storage; option ``storage``,
default ``shared``): field f has one table E_f of the largest dim and one projection W_f,
candidate d_k reads their first d_k coordinates, ``x_{f,k} = BN_k(E_f[id, :d_k] W_f[:d_k] +
b_f)`` (batch norm without affine). With ``storage=tables`` every candidate has its own
table and projection, ``x_{f,k} = BN_k(W_{f,k} E_{f,k}[id] + b_{f,k})``. Trained side by
side, each small table learns the field's main directions on its own and the larger ones
also fit the training rows' noise, so on validation batches the smallest candidate wins:
on the planted synthetic data nearly every field, relevant or noise, got dim 2 (on
movielens-100k the same tables scored on *training* batches favoured the large dims for
user_id and item_id). Shared, a larger candidate holds the smaller ones' coordinates plus
its own; on the synthetic data the relevant fields then got the larger dims on every seed
(``benchmarks/embedding.py``; README). The field's embedding is ``e_f = sum_k p_{f,k} x_{f,k}`` with
``p_f = softmax((log_softmax(alpha_f) + g) / tau)`` (Gumbel noise g, tau = max(0.01,
1 - 5e-5 t) per weight step). Weights take Adam steps on training batches; alpha takes an
Adam step on a validation batch every 10 steps (first-order bi-level). Each field keeps
``argmax_k alpha_{f,k}``; the chosen spec (``field_dims``) is retrained from scratch.

On a huge vocabulary searched on a sample of its rows, most ids never occur in the
sample's training rows, yet a full table gives each of them a row at the largest candidate
dim, with its gradient and two Adam moments (a 10M-row Criteo-layout search: 5.9M ids at
dim 64, 6 GB). A field whose training rows use at most ``COMPACT_SHARE`` of its ids gets a
table of the ids used plus one row that every unused id shares: a row no training step
updates, as the unused ids' own rows would have been. Fields using more of their ids keep
the full table (so small data is searched as before).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
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
    search_epochs,
    searched_fields,
    unsearched,
)
from autodrs.methods.embedding.space import EmbeddingDimSpace
from autodrs.nn.mixed import CandidateTables, SearchedEmbedding, SharedCandidateTables
from autodrs.search.base import (
    Method,
    SearchContext,
    SearchError,
    StageResult,
    no_result,
    register_method,
)
from autodrs.search.gradient import Temperature, gumbel_softmax, run_gradient
from autodrs.spec import ArchSpec

STORAGES = ("shared", "tables")
# a field whose training rows use at most this share of its ids gets a compact table
COMPACT_SHARE = 0.5


def used_ids(data: Any, schema: Schema, fields: list[str],
             batch_rows: int = 1 << 16) -> dict[str, torch.Tensor | None]:
    """For each field, the ids ``data``'s rows use (sorted) when they are at most
    ``COMPACT_SHARE`` of its vocabulary, else None (the field keeps a full table)."""
    cols = [schema.categorical.index(f) for f in fields]
    marks = [torch.zeros(schema.field(f).vocab_size, dtype=torch.bool) for f in fields]
    for batch in data.batches(batch_rows):
        for mark, col in zip(marks, cols, strict=True):
            mark[batch.cat[:, col]] = True
    out: dict[str, torch.Tensor | None] = {}
    for f, mark in zip(fields, marks, strict=True):
        used = mark.nonzero().flatten()
        out[f] = used if len(used) <= COMPACT_SHARE * len(mark) else None
    return out


class AutoDimEmbedding(SearchedEmbedding):
    """Candidate tables per searched field, mixed by Gumbel-softmax weights per field."""

    def __init__(self, schema: Schema, spec: ArchSpec, fields: list[str],
                 candidates: list[int], temperature: Temperature,
                 storage: str = "shared",
                 used: dict[str, torch.Tensor | None] | None = None) -> None:
        """``used``: per field, the ids its table holds (the rest share one more row), or
        None for a full table (``used_ids``)."""
        super().__init__(schema, spec, fields, max(candidates))
        self.candidates = list(candidates)
        tables = SharedCandidateTables if storage == "shared" else CandidateTables
        used = used or {}
        self.compact: list[bool] = []
        for i, f in enumerate(fields):
            ids = used.get(f)
            self.compact.append(ids is not None)
            # id -> row of the compact table; every id not used maps to the last row
            index = torch.zeros(0, dtype=torch.int32)
            if ids is not None:
                index = torch.full((schema.field(f).vocab_size,), len(ids), dtype=torch.int32)
                index[ids] = torch.arange(len(ids), dtype=torch.int32)
            self.register_buffer(f"rows_{i}", index, persistent=False)
        self.fields = nn.ModuleList(
            tables(schema.field(f).vocab_size if not compact else len(used[f]) + 1,
                   candidates)
            for f, compact in zip(fields, self.compact, strict=True))
        self.alpha = nn.Parameter(torch.zeros(len(fields), len(candidates)))
        self.temperature = temperature
        self.pinned: torch.Tensor | None = None

    def weights(self, index: int) -> torch.Tensor:
        if self.pinned is not None:
            return nn.functional.one_hot(self.pinned[index], len(self.candidates)).float()
        return gumbel_softmax(self.alpha[index], self.temperature.value, training=self.training)

    def embed_field(self, index: int, ids: torch.Tensor) -> torch.Tensor:
        if self.compact[index]:
            ids = getattr(self, f"rows_{index}")[ids].long()
        mixed = self.fields[index](ids)
        return (self.weights(index).unsqueeze(-1) * mixed).sum(1)


class AutoDimSupernet(EmbeddingSupernet):
    def __init__(self, schema: Schema, spec: ArchSpec, fields: list[str],
                 candidates: list[int], storage: str = "shared",
                 used: dict[str, torch.Tensor | None] | None = None) -> None:
        temperature = Temperature()
        super().__init__(schema, spec,
                         AutoDimEmbedding(schema, spec, fields, candidates, temperature,
                                          storage, used))
        self.temperatures = [temperature]

    def arch_parameters(self) -> list[nn.Parameter]:
        return [self.embedding.alpha]

    def probabilities(self) -> dict[str, list[float]]:
        p = torch.softmax(self.embedding.alpha.detach(), dim=1)
        return {f: [round(float(v), 4) for v in p[i]]
                for i, f in enumerate(self.embedding.searched)}

    def derive(self) -> dict[str, Any]:
        emb = self.embedding
        best = emb.alpha.detach().argmax(1)
        return {f: emb.candidates[int(best[i])] for i, f in enumerate(emb.searched)}

    @contextmanager
    def fixed(self, decision: dict[str, Any]) -> Iterator[AutoDimSupernet]:
        """Weight sharing: every field pinned to its decided candidate."""
        emb = self.embedding
        emb.pinned = torch.tensor([emb.candidates.index(int(decision[f])) for f in emb.searched])
        try:
            yield self
        finally:
            emb.pinned = None


class AutoDimSpace(EmbeddingDimSpace):
    """Per-field dims whose relaxed face is the AutoDim supernet."""

    name = "autodim"

    def __init__(self, schema: Schema, base: ArchSpec, fields: list[str],
                 candidates: list[int], storage: str = "shared") -> None:
        super().__init__(schema, base, fields, candidates)
        self.schema = schema
        self.storage = storage

    def supernet(self, ctx: SearchContext) -> AutoDimSupernet:
        used = used_ids(ctx.dataset.train, self.schema, self.fields)
        return AutoDimSupernet(self.schema, ctx.spec, self.fields, self.candidates,
                               self.storage, used)


@register_method
class AutoDim(Method):
    """``--methods autodim``: options ``candidates`` (default 2,4,8,16,32,64), ``storage``
    (``shared``, the default, or ``tables``: see the module docstring), ``arch_lr``
    (3e-3), ``arch_every`` (10 weight steps per architecture step, fewer on short epochs:
    ``common.arch_every``), ``search_epochs``. A budget that ends the search before one
    epoch of architecture steps found nothing (``common.unsearched``): the stage says so
    (``no_result``) instead of presenting dims."""

    name = "autodim"
    component = "embedding"
    strategies = ("gradient",)

    def search(self, ctx: SearchContext) -> StageResult:
        strategy = self.resolve_strategy(ctx)
        t0 = time.perf_counter()
        storage = str(ctx.options.get("storage", "shared"))
        if storage not in STORAGES:
            raise SearchError(f"autodim option storage must be one of {', '.join(STORAGES)}, "
                              f"got {storage!r}")
        space = AutoDimSpace(ctx.dataset.schema, ctx.spec, searched_fields(ctx),
                             candidate_dims(ctx), storage)
        every = arch_every(ctx, 10)
        found = run_gradient(space, ctx, mode="bilevel", every=every,
                             arch_lr=option(ctx, "arch_lr", 3e-3), epochs=search_epochs(ctx))
        reason = unsearched(self.name, ctx, found.arch_steps, found.stopped_by_budget, every)
        if reason is not None:
            return no_result(self.name, strategy, ctx.spec, reason, time.perf_counter() - t0)
        supernet = found.supernet
        assert isinstance(supernet, AutoDimSupernet)
        probs = supernet.probabilities()
        dims = {f: int(d) for f, d in found.decision.items()}
        return dims_result(
            self.name, strategy, ctx, found.spec, dims, time.perf_counter() - t0,
            extra={"probabilities": probs, "candidates": space.candidates, "storage": storage,
                   "arch_steps": found.arch_steps, "stopped_by_budget": found.stopped_by_budget})
