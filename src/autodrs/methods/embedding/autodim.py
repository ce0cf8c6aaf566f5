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


class AutoDimEmbedding(SearchedEmbedding):
    """Candidate tables per searched field, mixed by Gumbel-softmax weights per field."""

    def __init__(self, schema: Schema, spec: ArchSpec, fields: list[str],
                 candidates: list[int], temperature: Temperature,
                 storage: str = "shared") -> None:
        super().__init__(schema, spec, fields, max(candidates))
        self.candidates = list(candidates)
        tables = SharedCandidateTables if storage == "shared" else CandidateTables
        self.fields = nn.ModuleList(tables(schema.field(f).vocab_size, candidates)
                                    for f in fields)
        self.alpha = nn.Parameter(torch.zeros(len(fields), len(candidates)))
        self.temperature = temperature
        self.pinned: torch.Tensor | None = None

    def weights(self, index: int) -> torch.Tensor:
        if self.pinned is not None:
            return nn.functional.one_hot(self.pinned[index], len(self.candidates)).float()
        return gumbel_softmax(self.alpha[index], self.temperature.value, training=self.training)

    def embed_field(self, index: int, ids: torch.Tensor) -> torch.Tensor:
        mixed = self.fields[index](ids)
        return (self.weights(index).unsqueeze(-1) * mixed).sum(1)


class AutoDimSupernet(EmbeddingSupernet):
    def __init__(self, schema: Schema, spec: ArchSpec, fields: list[str],
                 candidates: list[int], storage: str = "shared") -> None:
        temperature = Temperature()
        super().__init__(schema, spec,
                         AutoDimEmbedding(schema, spec, fields, candidates, temperature,
                                          storage))
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
        return AutoDimSupernet(self.schema, ctx.spec, self.fields, self.candidates,
                               self.storage)


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
