"""``build_model(schema, spec)``: the only way a model is built from a spec.

A model is a sum of towers over the field embeddings: a first-order ``linear`` term, an
``fm`` term, and a deep head over the concatenation of an ``mlp`` (optionally fed with
``inner`` pair products, as in IPNN), ``cross`` layers (DCN-V2) and ``attention`` layers
(AutoInt). Each hand-crafted backbone is a preset of these switches. Interactions with a
function of their own (``autodrs.nn.functions``) add a tower of per-pair logit terms, and a
``dag`` (``autodrs.models.dag``) replaces the towers by a graph of blocks.
"""

from __future__ import annotations

from itertools import combinations

import torch
from torch import nn

from autodrs.data.dataset import Batch
from autodrs.data.schema import Schema
from autodrs.models.dag import BlockDAG, BlockGraph
from autodrs.nn.controller import FieldController
from autodrs.nn.embedding import FieldEmbedding
from autodrs.nn.functions import PairFunctionTower
from autodrs.nn.layers import (
    MLP,
    CrossNetV2,
    FactorizationMachine,
    PairProducts,
    SelfAttentionInteraction,
)
from autodrs.nn.regularization import field_l2_penalty, owned_parameters
from autodrs.spec import PAIR_FUNCTIONS, ArchSpec, SpecError

LINEAR_TAG = "@linear"  # names the first-order tables' seeded initial draws


class LinearTerm(nn.Module):
    """First-order term: a scalar weight per categorical value and per numerical field
    (stored as kept values only for the fields ``spec.linear_pruning`` prunes)."""

    def __init__(self, schema: Schema, spec: ArchSpec) -> None:
        super().__init__()
        self.weights = FieldEmbedding(schema, spec, dim_override=1, init_std=0.0,
                                      pruning=spec.linear_pruning, init_tag=LINEAR_TAG)
        self.bias = nn.Parameter(torch.zeros(()))

    def forward(self, batch: Batch) -> torch.Tensor:
        return torch.cat(self.weights(batch), dim=1).sum(1) + self.bias


class CTRModel(nn.Module):
    def __init__(self, schema: Schema, spec: ArchSpec) -> None:
        super().__init__()
        spec.validate(schema)
        self.spec = spec
        self.embedding = FieldEmbedding(schema, spec)
        self.controller = (FieldController(self.embedding.dims, spec.controller.k,
                                           spec.controller.dropout)
                           if spec.controller is not None else None)
        names, dims = self.embedding.names, self.embedding.dims
        self.field_names = names
        common = spec.embed_dim
        index = {n: i for i, n in enumerate(names)}
        pairs: list[tuple[int, int]] | None = None
        pair_weights: list[float] | None = None
        self.functions = None
        if spec.interactions is not None:
            # memorised interactions are modelled by their cross feature's embedding, pairs
            # with a function of their own by the pair-function tower
            products = [i for i in spec.interactions if i.function == "product"]
            pairs = []
            for inter in products:
                if len(inter.fields) != 2:
                    raise SpecError(f"interaction {inter.key}: only pairs are supported by fm/inner")
                pairs.append((index[inter.fields[0]], index[inter.fields[1]]))
            if any(i.weight is not None for i in products):
                pair_weights = [1.0 if i.weight is None else float(i.weight)
                                for i in products]
            own = [i for i in spec.interactions if i.function in PAIR_FUNCTIONS]
            if own:
                self.functions = PairFunctionTower(
                    [(index[i.fields[0]], index[i.fields[1]]) for i in own],
                    [i.function for i in own], common,
                    [1.0 if i.weight is None else float(i.weight) for i in own]
                    if any(i.weight is not None for i in own) else None)
        self.dag = (BlockDAG(BlockGraph.from_dict(spec.dag), names, dims, common)
                    if spec.dag is not None else None)
        self.needs_stack = bool(spec.fm or spec.inner or spec.attention_layers
                                or self.functions is not None)
        self.project = nn.ModuleDict()
        if self.needs_stack:
            for n, d in zip(names, dims, strict=True):
                if d != common:
                    self.project[n] = nn.Linear(d, common, bias=False)
        self.linear = LinearTerm(schema, spec) if spec.linear else None
        fm_pairs = pairs
        if spec.pair_norm and fm_pairs is None:
            fm_pairs = list(combinations(range(len(names)), 2))
        self.fm = (FactorizationMachine(fm_pairs, pair_weights, norm=spec.pair_norm)
                   if spec.fm else None)
        head_dims = 0
        flat_dim = sum(dims)
        self.inner = None
        if spec.inner:
            self.inner = PairProducts(pairs if pairs is not None
                                      else list(combinations(range(len(names)), 2)))
        self.mlp = None
        if spec.mlp:
            n_pairs = 0 if self.inner is None else int(self.inner.left.numel())
            self.mlp = MLP(flat_dim + n_pairs, spec.mlp, spec.dropout, spec.batch_norm)
            head_dims += self.mlp.out_dim
        self.cross = CrossNetV2(flat_dim, spec.cross_layers) if spec.cross_layers else None
        if self.cross is not None:
            head_dims += self.cross.out_dim
        self.attention = None
        if spec.attention_layers:
            self.attention = SelfAttentionInteraction(common, len(names), spec.attention_layers,
                                                      spec.attention_heads)
            head_dims += self.attention.out_dim
        if self.inner is not None and self.mlp is None:
            head_dims += int(self.inner.left.numel())
        self.head = nn.Linear(head_dims, 1) if head_dims else None
        self.bias = nn.Parameter(torch.zeros(())) if self.linear is None else None

    def stacked(self, embeddings: list[torch.Tensor]) -> torch.Tensor:
        return torch.stack([
            self.project[n](e) if n in self.project else e
            for n, e in zip(self.field_names, embeddings, strict=True)
        ], dim=1)

    def forward(self, batch: Batch) -> torch.Tensor:
        embeddings = self.embedding(batch)
        if self.controller is not None:
            embeddings = self.controller(embeddings)
        logit = self.linear(batch) if self.linear is not None else self.bias
        stacked = self.stacked(embeddings) if self.needs_stack else None
        if self.fm is not None:
            logit = logit + self.fm(stacked)
        if self.functions is not None:
            logit = logit + self.functions(stacked)
        if self.dag is not None:
            logit = logit + self.dag(embeddings)
        if self.head is not None:
            flat = torch.cat(embeddings, dim=1)
            parts = []
            products = self.inner(stacked) if self.inner is not None else None
            if self.mlp is not None:
                mlp_in = flat if products is None else torch.cat([flat, products], dim=1)
                parts.append(self.mlp(mlp_in))
            elif products is not None:
                parts.append(products)
            if self.cross is not None:
                parts.append(self.cross(flat))
            if self.attention is not None:
                parts.append(self.attention(stacked))
            logit = logit + self.head(torch.cat(parts, dim=1)).squeeze(1)
        return logit

    def regularization(self) -> torch.Tensor | float:
        """Per-field L2 on the embedding tables when the spec sets ``l2_fields``."""
        if not self.spec.l2_fields:
            return 0.0
        if not hasattr(self, "_l2_owned"):
            self._l2_owned = owned_parameters(self.embedding)
            self._l2_strengths = torch.tensor(
                [float(self.spec.l2_fields.get(n, 0.0)) for n in self.embedding.names])
        return field_l2_penalty(self._l2_owned, self._l2_strengths)

    def embedding_parameters(self) -> int:
        n = self.embedding.embedding_parameters()
        if self.linear is not None:
            n += self.linear.weights.embedding_parameters()
        return n


def build_model(schema: Schema, spec: ArchSpec) -> CTRModel:
    """Build the model a spec describes over a fitted schema."""
    return CTRModel(schema, spec)


def count_parameters(model: nn.Module) -> dict[str, int]:
    total = sum(p.numel() for p in model.parameters())
    emb = model.embedding_parameters() if isinstance(model, CTRModel) else 0
    return {"embedding": int(emb), "total": int(total)}


def state_bytes(module: nn.Module) -> int:
    """Bytes of the tensors ``module.state_dict()`` holds (what ``model.pt`` stores)."""
    return int(sum(t.numel() * t.element_size() for t in module.state_dict().values()))


def count_bytes(model: nn.Module) -> dict[str, int]:
    """Stored bytes of the embedding tables (first-order weights included, as in
    ``count_parameters``) and of the whole model; a pruned table counts its kept entries and
    its sparse index."""
    emb = 0
    if isinstance(model, CTRModel):
        emb = state_bytes(model.embedding)
        if model.linear is not None:
            emb += state_bytes(model.linear.weights)
    return {"embedding": emb, "total": state_bytes(model)}
