"""Building blocks of embedding-search supernets.

``SearchedEmbedding`` stands in for a model's ``FieldEmbedding`` during a search: the
categorical fields under search are embedded by the search's own module at a common width,
every other field (sequences, numericals, crosses) by a plain ``FieldEmbedding``, and the
output keeps ``FieldEmbedding``'s contract (one ``[B, d_f]`` tensor per field, in ``names``
order), so the towers of ``build_model`` are reused unchanged.

``CandidateTables`` holds, for one field, a table per candidate dim, each with its own
projection to the largest dim and a batch norm without affine parameters (so the mixing
weights learn which dim helps, not which scale: methods.md checklist item 3). AutoDim mixes
them per field, AutoEmb per value.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import torch
from torch import nn

from autodrs.data.dataset import Batch, EncodedData
from autodrs.data.schema import Schema
from autodrs.nn.embedding import FieldEmbedding
from autodrs.spec import ArchSpec, cross_name


def searchable_fields(schema: Schema, spec: ArchSpec) -> list[str]:
    """The categorical fields a spec uses: the fields an embedding search sizes."""
    return [n for n in spec.used_fields(schema) if schema.field(n).kind == "categorical"]


def value_counts(data: EncodedData, schema: Schema, name: str) -> torch.Tensor:
    """Occurrences of each id of categorical field ``name`` in ``data`` (float, [vocab])."""
    col = schema.categorical.index(name)
    return torch.bincount(data.cat[:, col], minlength=schema.field(name).vocab_size).float()


class SearchedEmbedding(nn.Module, ABC):
    """``FieldEmbedding``'s contract, with ``searched`` fields embedded by ``embed_field``."""

    def __init__(self, schema: Schema, spec: ArchSpec, searched: list[str], width: int,
                 first_order: bool = False) -> None:
        """``first_order``: stand in for a model's first-order weights, the other fields
        embedded as ``LinearTerm`` embeds them (dim 1, zero-initialised)."""
        super().__init__()
        used = spec.used_fields(schema)
        self.searched = list(searched)
        self.width = width
        self.register_buffer("search_cols", torch.tensor(
            [schema.categorical.index(n) for n in self.searched], dtype=torch.long),
            persistent=False)
        rest = [n for n in used if n not in self.searched]
        rest_spec = spec.copy(fields=rest, pruning={})
        self.rest = (FieldEmbedding(schema, rest_spec, dim_override=1, init_std=0.0)
                     if first_order else FieldEmbedding(schema, rest_spec))
        self.names = list(used) + [cross_name(c) for c in spec.crosses]
        rest_dims = dict(zip(self.rest.names, self.rest.dims, strict=True))
        self.dims = [width if n in self.searched else rest_dims[n] for n in self.names]

    @abstractmethod
    def embed_field(self, index: int, ids: torch.Tensor) -> torch.Tensor:
        """``[B, width]`` embedding of searched field ``self.searched[index]``."""

    def forward(self, batch: Batch) -> list[torch.Tensor]:
        out = dict(zip(self.rest.names, self.rest(batch), strict=True))
        ids = batch.cat.index_select(1, self.search_cols)
        for i, name in enumerate(self.searched):
            out[name] = self.embed_field(i, ids[:, i])
        return [out[n] for n in self.names]

    def embedding_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())


class CandidateTables(nn.Module):
    """One field at every candidate dim: ``forward(ids) -> [B, K, max_dim]``, candidate k
    being ``BN_k(W_k E_k[ids] + b_k)`` (batch norm without affine)."""

    def __init__(self, vocab: int, candidates: list[int], init_std: float = 0.01) -> None:
        super().__init__()
        self.candidates = list(candidates)
        width = max(candidates)
        self.tables = nn.ModuleList()
        self.projections = nn.ModuleList()
        self.norms = nn.ModuleList()
        for d in self.candidates:
            table = nn.Embedding(vocab, d)
            nn.init.normal_(table.weight, std=init_std)
            self.tables.append(table)
            self.projections.append(nn.Linear(d, width))
            self.norms.append(nn.BatchNorm1d(width, affine=False))

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return torch.stack([norm(proj(table(ids))) for table, proj, norm in
                            zip(self.tables, self.projections, self.norms, strict=True)], dim=1)


class SharedCandidateTables(nn.Module):
    """One field at every candidate dim by weight sharing (AutoDim's second storage): one
    table of the largest dim and one projection; candidate d reads the first d coordinates
    of the table and the first d rows of the projection, ``BN_d(E[ids, :d] W[:d] + b)``
    (batch norm without affine). ``forward(ids) -> [B, K, max_dim]``."""

    def __init__(self, vocab: int, candidates: list[int], init_std: float = 0.01) -> None:
        super().__init__()
        self.candidates = list(candidates)
        width = max(candidates)
        self.table = nn.Embedding(vocab, width)
        nn.init.normal_(self.table.weight, std=init_std)
        self.projection = nn.Linear(width, width)
        self.norms = nn.ModuleList(nn.BatchNorm1d(width, affine=False) for _ in candidates)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        e = self.table(ids)
        w, b = self.projection.weight, self.projection.bias
        return torch.stack([norm(e[:, :d] @ w[:, :d].T + b) for d, norm in
                            zip(self.candidates, self.norms, strict=True)], dim=1)
