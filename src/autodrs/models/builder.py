"""``build_model(schema, spec)``: the only way a model is built from a spec.

A model is a sum of towers over the field embeddings: a first-order ``linear`` term, an
``fm`` term, and a deep head over the concatenation of an ``mlp`` (optionally fed with
``inner`` pair products, as in IPNN), ``cross`` layers (DCN-V2) and ``attention`` layers
(AutoInt). Each hand-crafted backbone is a preset of these switches. Interactions with a
function of their own (``autodrs.nn.functions``) add a tower of per-pair logit terms,
product tuples of order >= 3 a higher-order FM term, and AutoGroup groups and OptInter's
Hadamard pairs inputs to the deep head; a ``dag`` (``autodrs.models.dag``) replaces the
towers by a graph of blocks.
"""

from __future__ import annotations

from itertools import combinations

import torch
from torch import nn

from autodrs.data.dataset import Batch
from autodrs.data.schema import FIRST_ID, Schema
from autodrs.models.dag import BlockDAG, BlockGraph
from autodrs.nn.controller import FieldController
from autodrs.nn.embedding import FieldEmbedding
from autodrs.nn.functions import PairFunctionTower
from autodrs.nn.init import linear
from autodrs.nn.layers import (
    MLP,
    CrossNetV2,
    FactorizationMachine,
    PairProducts,
    SelfAttentionInteraction,
)
from autodrs.nn.regularization import field_l2_penalty, owned_parameters
from autodrs.nn.sequence import SequenceEncoder, resolve_sequence
from autodrs.spec import PAIR_FUNCTIONS, ArchSpec, Interaction, cross_name

LINEAR_TAG = "@linear"  # names the first-order tables' seeded initial draws


class HigherOrderProducts(nn.Module):
    """``sum_c w_c N(sum_k prod_(t in c) e_tk)`` over field tuples ``c`` of order >= 3 (``N``:
    a batch norm without affine with ``norm``, ``w_c``: trainable weights when given):
    the higher-order FM term of the kept triples (PROFIT, FIVES)."""

    def __init__(self, tuples: list[tuple[int, ...]], weights: list[float] | None = None,
                 norm: bool = False) -> None:
        super().__init__()
        self.orders = sorted({len(t) for t in tuples})
        for order in self.orders:
            index = [t for t in tuples if len(t) == order]
            self.register_buffer(f"index_{order}", torch.tensor(index, dtype=torch.long),
                                 persistent=False)
        # the weights in the order the products are computed (grouped by order)
        by_order = sorted(range(len(tuples)), key=lambda k: len(tuples[k]))
        self.weight = (nn.Parameter(torch.tensor([weights[k] for k in by_order]))
                       if weights is not None else None)
        self.norm = nn.BatchNorm1d(len(tuples), affine=False) if norm else None

    def forward(self, stacked: torch.Tensor) -> torch.Tensor:
        parts = []
        for order in self.orders:
            index = getattr(self, f"index_{order}")
            product = stacked.index_select(1, index[:, 0])
            for t in range(1, order):
                product = product * stacked.index_select(1, index[:, t])
            parts.append(product.sum(-1))
        products = torch.cat(parts, dim=1)
        if self.norm is not None:
            products = self.norm(products)
        if self.weight is not None:
            products = products * self.weight
        return products.sum(1)


def group_power(e: torch.Tensor, member_weight: torch.Tensor, weight: torch.Tensor,
                order: int, compensation: float) -> torch.Tensor:
    """AutoGroup's order-p interaction of every group at once (vega's ``FeatureGroupLayer``):
    ``(sum_i c_ig w_ig e_ik)^p - lambda sum_i w_ig^p e_ik^p`` from ``e [B, F, D]``,
    ``member_weight = c * w [F, G]`` and ``weight = w [F, G]`` (the compensation term is not
    multiplied by the membership, as in the official code); summed over k for p > 1, the
    ``[B, G * D]`` group vectors for p = 1."""
    out = torch.einsum("bfd,fg->bgd", e, member_weight).pow(order)
    out = out - compensation * torch.einsum("bfd,fg->bgd", e.pow(order), weight.pow(order))
    return out.flatten(1) if order == 1 else out.sum(-1)


class GroupInteractions(nn.Module):
    """The kept AutoGroup feature groups: batch-normalised embeddings (no affine), one
    ``group_power`` per group with trainable member weights (Xavier-uniform, as vega's
    ``hash_wt``); the output feeds the deep head."""

    def __init__(self, n_fields: int, dim: int, groups: list[tuple[list[int], int]],
                 compensation: float) -> None:
        super().__init__()
        self.norm = nn.BatchNorm1d(n_fields * dim, affine=False)
        self.orders = sorted({p for _, p in groups})
        self.compensation = compensation
        self.weights = nn.ParameterDict()
        for p in self.orders:
            members = [m for m, order in groups if order == p]
            mask = torch.zeros(n_fields, len(members))
            for g, fields in enumerate(members):
                mask[fields, g] = 1.0
            self.register_buffer(f"mask_{p}", mask, persistent=False)
            self.weights[str(p)] = nn.Parameter(nn.init.xavier_uniform_(
                torch.empty(n_fields, len(members))))
        self.out_dim = sum(dim if p == 1 else 1 for _, p in groups)

    def forward(self, stacked: torch.Tensor) -> torch.Tensor:
        b, f, d = stacked.shape
        e = self.norm(stacked.reshape(b, f * d)).reshape(b, f, d)
        parts = []
        for p in self.orders:
            w = self.weights[str(p)]
            parts.append(group_power(e, getattr(self, f"mask_{p}") * w, w, p,
                                     self.compensation))
        return torch.cat(parts, dim=1)


class PersonalPairs(nn.Module):
    """BP-FIS's personalised FM pairs: ``sum_p m[u, p] <e_i, e_j>``, where ``m[u, p]`` is 1
    when pair p lists the example's ``user_field`` value among its ``users`` (ids outside
    the vocabulary, OOV included, get only the pairs every listed user keeps)."""

    def __init__(self, schema: Schema, user_field: str, index: dict[str, int],
                 pairs: list[Interaction]) -> None:
        super().__init__()
        f = schema.field(user_field)
        self.column = schema.categorical.index(user_field)
        ids = {v: k + FIRST_ID for k, v in enumerate(f.vocab or [])}
        mask = torch.zeros(f.vocab_size, len(pairs))
        for p, inter in enumerate(pairs):
            rows = [ids[u] for u in inter.users or [] if u in ids]
            mask[rows, p] = 1.0
            if rows and len(rows) == len(ids):
                mask[:, p] = 1.0
        self.register_buffer("mask", mask, persistent=False)
        self.products = PairProducts([(index[i.fields[0]], index[i.fields[1]]) for i in pairs])

    def forward(self, stacked: torch.Tensor, batch: Batch) -> torch.Tensor:
        return (self.products(stacked) * self.mask[batch.cat[:, self.column]]).sum(1)


class HadamardPairs(nn.Module):
    """OptInter's "factorise": per pair, the elementwise product of the two fields' own
    embeddings (a table of ``dim`` per field, apart from the model's), ``[B, P * dim]``."""

    def __init__(self, schema: Schema, spec: ArchSpec, pairs: list[Interaction],
                 dim: int) -> None:
        super().__init__()
        involved = {n for i in pairs for n in i.fields}
        sub = spec.copy(fields=[n for n in spec.used_fields(schema) if n in involved],
                        crosses=[c for c in spec.crosses if cross_name(c) in involved],
                        field_dims={}, pruning={}, linear_pruning={}, interactions=None)
        self.embedding = FieldEmbedding(schema, sub, dim_override=dim)
        index = {n: k for k, n in enumerate(self.embedding.names)}
        self.register_buffer("left", torch.tensor([index[i.fields[0]] for i in pairs],
                                                  dtype=torch.long), persistent=False)
        self.register_buffer("right", torch.tensor([index[i.fields[1]] for i in pairs],
                                                   dtype=torch.long), persistent=False)
        self.out_dim = len(pairs) * dim

    def forward(self, batch: Batch) -> torch.Tensor:
        e = torch.stack(self.embedding(batch), dim=1)
        return (e.index_select(1, self.left) * e.index_select(1, self.right)).flatten(1)


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
        # a behaviour sequence encoded by attention / searched blocks in place of its mean
        self.sequence = None
        if spec.sequence is not None:
            self.sequence = SequenceEncoder(
                schema, spec, self.embedding.sequences[resolve_sequence(schema, spec)[0]])
            self._sequence_slot = names.index(self.sequence.history)
        common = spec.embed_dim
        index = {n: i for i, n in enumerate(names)}
        pairs: list[tuple[int, int]] | None = None
        pair_weights: list[float] | None = None
        self.functions = None
        self.higher = None  # product tuples of order >= 3 (a logit term)
        self.groups = None  # AutoGroup groups (deep-head inputs)
        self.hadamard = None  # OptInter's factorised pairs (deep-head inputs)
        self.personal = None  # BP-FIS's per-user pairs (an FM term)
        if spec.interactions is not None:
            # memorised interactions are modelled by their cross feature's embedding, pairs
            # with a function of their own by the pair-function tower
            products = [i for i in spec.interactions
                        if i.function == "product" and len(i.fields) == 2 and i.users is None]
            personal = [i for i in spec.interactions if i.users is not None]
            if personal:
                self.personal = PersonalPairs(schema, str(spec.user_field), index, personal)
            pairs = [(index[i.fields[0]], index[i.fields[1]]) for i in products]
            if any(i.weight is not None for i in products):
                pair_weights = [1.0 if i.weight is None else float(i.weight)
                                for i in products]
            tuples = [i for i in spec.interactions
                      if i.function == "product" and len(i.fields) > 2]
            if tuples:
                self.higher = HigherOrderProducts(
                    [tuple(index[n] for n in i.fields) for i in tuples],
                    [1.0 if i.weight is None else float(i.weight) for i in tuples]
                    if any(i.weight is not None for i in tuples) else None,
                    norm=spec.pair_norm)
            groups = [i for i in spec.interactions if i.function == "group"]
            if groups:
                self.groups = GroupInteractions(
                    len(names), common, [([index[n] for n in i.fields], int(i.order or 1))
                                         for i in groups], spec.group_compensation)
            factorised = [i for i in spec.interactions if i.function == "hadamard"]
            if factorised:
                self.hadamard = HadamardPairs(schema, spec, factorised,
                                              int(spec.pair_dim or common))
            own = [i for i in spec.interactions if i.function in PAIR_FUNCTIONS]
            if own:
                self.functions = PairFunctionTower(
                    [(index[i.fields[0]], index[i.fields[1]]) for i in own],
                    [i.function for i in own], common,
                    [1.0 if i.weight is None else float(i.weight) for i in own]
                    if any(i.weight is not None for i in own) else None)
        self.needs_stack = bool(spec.fm or spec.inner or spec.attention_layers
                                or self.functions is not None or self.higher is not None
                                or self.groups is not None)
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
        # what the interactions add to the deep head's input (the MLP's, else the read-out's)
        extra_dim = ((self.groups.out_dim if self.groups is not None else 0)
                     + (self.hadamard.out_dim if self.hadamard is not None else 0))
        self.inner = None
        if spec.inner:
            self.inner = PairProducts(pairs if pairs is not None
                                      else list(combinations(range(len(names)), 2)))
        # the DAG is built where the towers' layers are (after the linear term's tables), so
        # a DAG of a backbone's shape draws the backbone's initial weights at the same seed
        self.dag = (BlockDAG(BlockGraph.from_dict(spec.dag), names, dims, common,
                             spec.dropout, spec.batch_norm)
                    if spec.dag is not None else None)
        self.mlp = None
        if spec.mlp:
            n_pairs = 0 if self.inner is None else int(self.inner.left.numel())
            self.mlp = MLP(flat_dim + n_pairs + extra_dim, spec.mlp, spec.dropout,
                           spec.batch_norm)
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
        if self.mlp is None:
            head_dims += extra_dim
        self.head = linear(head_dims, 1) if head_dims else None  # xavier, zero bias
        self.bias = nn.Parameter(torch.zeros(())) if self.linear is None else None
        # every field in one plain table, used as looked up: take the [B, F, d] lookup as is
        # rather than splitting it into fields and stacking them again (a cheaper step)
        self.one_lookup = (self.embedding.one_table and self.controller is None
                           and self.dag is None and not self.project)

    def stacked(self, embeddings: list[torch.Tensor]) -> torch.Tensor:
        return torch.stack([
            self.project[n](e) if n in self.project else e
            for n, e in zip(self.field_names, embeddings, strict=True)
        ], dim=1)

    def forward(self, batch: Batch) -> torch.Tensor:
        if self.one_lookup:
            stacked = self.embedding.stacked(batch)
            embeddings = None
        else:
            embeddings = self.embedding(batch)
            if self.sequence is not None:
                embeddings[self._sequence_slot] = self.sequence(batch)
            if self.controller is not None:
                embeddings = self.controller(embeddings)
            stacked = self.stacked(embeddings) if self.needs_stack else None
        logit = self.linear(batch) if self.linear is not None else self.bias
        if self.fm is not None:
            logit = logit + self.fm(stacked)
        if self.personal is not None:
            logit = logit + self.personal(stacked, batch)
        if self.functions is not None:
            logit = logit + self.functions(stacked)
        if self.higher is not None:
            logit = logit + self.higher(stacked)
        if self.dag is not None:
            logit = self.dag(embeddings, logit)
        if self.head is not None:
            flat = stacked.flatten(1) if embeddings is None else torch.cat(embeddings, dim=1)
            parts = []
            products = self.inner(stacked) if self.inner is not None else None
            extra = []
            if self.groups is not None:
                extra.append(self.groups(stacked))
            if self.hadamard is not None:
                extra.append(self.hadamard(batch))
            if self.mlp is not None:
                mlp_in = [flat] + ([products] if products is not None else []) + extra
                parts.append(self.mlp(torch.cat(mlp_in, dim=1)))
            else:
                if products is not None:
                    parts.append(products)
                parts += extra
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
    """Build the model a spec describes over a fitted schema (on data with several labels,
    or for a spec with a ``multitask`` part, a ``models.multitask.MultiTaskModel``)."""
    if spec.multitask is not None or len(schema.tasks) > 1:
        from autodrs.models.multitask import MultiTaskModel

        return MultiTaskModel(schema, spec)  # type: ignore[return-value]
    return CTRModel(schema, spec)


def count_parameters(model: nn.Module) -> dict[str, int]:
    from autodrs.models.multitask import MultiTaskModel

    total = sum(p.numel() for p in model.parameters())
    emb = (model.embedding_parameters() if isinstance(model, CTRModel | MultiTaskModel)
           else 0)
    return {"embedding": int(emb), "total": int(total)}


def state_bytes(module: nn.Module) -> int:
    """Bytes of the tensors ``module.state_dict()`` holds (what ``model.pt`` stores)."""
    return int(sum(t.numel() * t.element_size() for t in module.state_dict().values()))


def count_bytes(model: nn.Module) -> dict[str, int]:
    """Stored bytes of the embedding tables (first-order weights included, as in
    ``count_parameters``) and of the whole model; a pruned table counts its kept entries and
    its sparse index."""
    from autodrs.models.multitask import MultiTaskModel

    emb = 0
    if isinstance(model, CTRModel):
        emb = state_bytes(model.embedding)
        if model.linear is not None:
            emb += state_bytes(model.linear.weights)
    elif isinstance(model, MultiTaskModel):  # its tasks' models, or its shared tables
        emb = (sum(count_bytes(m)["embedding"] for m in model.models)
               if model.models is not None else state_bytes(model.embedding))
    return {"embedding": emb, "total": state_bytes(model)}
