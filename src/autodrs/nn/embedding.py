"""Field embeddings: every used field (categorical, sequence, numerical, cross) at its own dim.

Categorical fields and crosses of the same dim share one table with per-field offsets, so a
batch costs one lookup per distinct dim. Sequences are mean-pooled over their non-padding
ids. Numerical fields are embedded as ``x * v`` (``linear``), by equal-frequency buckets
(``bucket``) or by AutoDis meta-embeddings (``autodis``). Categorical fields the spec prunes
per value (``spec.pruning``) are stored sparsely, kept entries only (``nn.pruned``);
fields with a vocabulary limit (``spec.vocab_limits``) keep a row for their most frequent
values only, the rarer ids being read as the out-of-vocabulary id before any lookup.
Tables (categorical, cross, sequence, bucket) start N(0, ``EMBEDDING_STD`` = 1e-4), as in
FuxiCTR and DeepCTR-Torch; a pruned table starts from its own seeded draws (``nn.pruned``).
"""

from __future__ import annotations

import torch
from torch import nn

from autodrs.data.dataset import Batch
from autodrs.data.schema import FIRST_ID, OOV, PAD, Schema
from autodrs.nn.anchor import AnchorTable, anchor_mask
from autodrs.nn.init import EMBEDDING_STD
from autodrs.nn.pruned import (
    PrunedColumn,
    PrunedLookup,
    PrunedTable,
    decode_mask,
    initial_values,
    pruned_table,
)
from autodrs.spec import ArchSpec, cross_name

AUTODIS_BUCKETS = 16


class CrossIds(nn.Module):
    """Ids of a cross feature computed from its fields' encoded ids: exact mixed-radix ids
    when the product of vocabularies fits in ``buckets``, hashed ids otherwise."""

    def __init__(self, cols: list[int], vocab_sizes: list[int], buckets: int) -> None:
        super().__init__()
        self.register_buffer("cols", torch.tensor(cols, dtype=torch.long), persistent=False)
        product = 1
        for v in vocab_sizes:
            product *= v
        self.exact = product <= buckets
        self.size = product if self.exact else buckets
        radix = [1] * len(vocab_sizes)
        for i in range(len(vocab_sizes) - 2, -1, -1):
            radix[i] = radix[i + 1] * vocab_sizes[i + 1]
        self.register_buffer("radix", torch.tensor(radix, dtype=torch.long), persistent=False)

    def forward(self, cat: torch.Tensor) -> torch.Tensor:
        ids = cat.index_select(1, self.cols)
        if self.exact:
            return (ids * self.radix).sum(1)
        h = torch.zeros_like(ids[:, 0])
        for i in range(ids.shape[1]):
            h = h * 1_000_003 + ids[:, i] + 1
        return torch.remainder(h, self.size)


class AutoDisEmbedding(nn.Module):
    """AutoDis (Guo et al., KDD 2021): a scalar is softly assigned to H buckets,
    ``p = softmax((W h + b + alpha h) / tau)`` with ``h = LeakyReLU(w x + c)``, and embedded
    as the p-weighted average of H meta-embeddings.

    The biases b and c (which common implementations keep and the paper's equations leave
    out) give each bucket its own kink: without them every logit is linear through x = 0 on
    each side, so the assignment only sharpens with |x| and a non-monotone effect of x
    cannot be represented.

    Given ``centres`` (the field's equal-frequency bucket centres, from its train quantiles),
    the assignment starts as a soft equal-frequency discretisation: every hidden unit is
    ``x + c`` (linear over the data) and bucket k's logit is ``(mu_k x - mu_k^2 / 2) /
    sigma^2`` (a Gaussian around its centre mu_k, the shared ``-x^2 / 2 sigma^2`` cancelling
    in the softmax; sigma is ``width`` times the centres' median spacing), then learned. The
    temperature is then 1: the sharpness lies in the parameters' scale, so an Adam step moves
    a logit by about the learning rate. Dividing by a small tau instead multiplies every
    step by 1/tau: the assignment drifts faster than the meta-embeddings learn, and the end
    buckets are swallowed by their neighbours (on ``synthetic``'s cos-shaped num0 the fitted
    curve went flat over both ends of the range, and lost to 16 hard buckets). Without
    centres (a field with one distinct value) the draws are random, as in ``nn.Linear(1, H)``,
    sharpened by 1 / ``temperature``."""

    def __init__(self, dim: int, centres: list[float] | None = None,
                 buckets: int = AUTODIS_BUCKETS, temperature: float = 0.1, width: float = 1.0,
                 alpha: float = 0.1) -> None:
        super().__init__()
        if centres is not None and len(centres) >= 2:
            buckets = len(centres)
        self.w = nn.Parameter(torch.empty(buckets).uniform_(-1.0, 1.0))
        self.c = nn.Parameter(torch.empty(buckets).uniform_(-1.0, 1.0))
        self.proj = nn.Linear(buckets, buckets)
        self.meta = nn.Parameter(torch.randn(buckets, dim) * 0.01)
        self.alpha = alpha
        with torch.no_grad():
            if centres is not None and len(centres) >= 2:
                mu = torch.tensor(centres, dtype=torch.float32)
                sigma = width * float((mu[1:] - mu[:-1]).median())
                slope, offset = mu / sigma**2, -(mu**2) / (2 * sigma**2)
                shift = 1.0 - float(mu[0])  # every unit's kink one unit below the first centre
                self.w.fill_(1.0)
                self.c.fill_(shift)
                # the units are equal, so the skip term alpha h adds the same to every logit
                self.proj.weight.zero_()
                self.proj.weight[:, 0] = slope
                self.proj.bias.copy_(offset - shift * slope)
            else:
                self.proj.weight.mul_(1.0 / temperature)
                self.proj.bias.mul_(1.0 / temperature)
                self.alpha = alpha / temperature

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = nn.functional.leaky_relu(x.unsqueeze(1) * self.w + self.c)
        logits = self.proj(h) + self.alpha * h
        return torch.softmax(logits, dim=1) @ self.meta


def bucket_centres(boundaries: list[float] | None) -> list[float] | None:
    """The centres of the buckets ``boundaries`` cut (standardised units): the midpoints
    between consecutive boundaries, the two open ends half their neighbour's width beyond
    the outer boundaries (one unit with a single boundary); None without a boundary."""
    if not boundaries:
        return None
    b = [float(v) for v in boundaries]
    if len(b) == 1:
        return [b[0] - 0.5, b[0] + 0.5]
    inner = [(lo + hi) / 2 for lo, hi in zip(b[:-1], b[1:], strict=True)]
    return [b[0] - (b[1] - b[0]) / 2, *inner, b[-1] + (b[-1] - b[-2]) / 2]


class NumericalEmbedding(nn.Module):
    def __init__(self, encoder: str, dim: int, boundaries: list[float] | None) -> None:
        super().__init__()
        self.encoder = encoder
        if encoder == "linear":
            self.vector = nn.Parameter(torch.randn(dim) * 0.01)
        elif encoder == "bucket":
            self.register_buffer("boundaries", torch.tensor(boundaries or [], dtype=torch.float32))
            self.table = nn.Embedding(len(boundaries or []) + 1, dim)
            nn.init.normal_(self.table.weight, std=EMBEDDING_STD)
        else:
            self.autodis = AutoDisEmbedding(dim, bucket_centres(boundaries))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.encoder == "linear":
            return x.unsqueeze(1) * self.vector
        if self.encoder == "bucket":
            return self.table(torch.bucketize(x.contiguous(), self.boundaries))
        return self.autodis(x)


class FieldEmbedding(nn.Module):
    """Embeds the fields a spec uses. ``forward`` returns one ``[B, d_f]`` tensor per field,
    in ``self.names`` order (used fields, then crosses)."""

    def __init__(self, schema: Schema, spec: ArchSpec, dim_override: int | None = None,
                 init_std: float = EMBEDDING_STD, pruning: dict[str, str] | None = None,
                 init_tag: str = "") -> None:
        """``pruning`` (field -> mask) replaces ``spec.pruning``, which only applies at the
        spec's own dims (not under ``dim_override``); ``init_tag`` names the pruned tables'
        initial draws (``initial_values(seed, field + init_tag, mask)``)."""
        super().__init__()
        used = spec.used_fields(schema)
        self.names: list[str] = []
        self.dims: list[int] = []
        cat_cols = {n: i for i, n in enumerate(schema.categorical)}
        num_cols = {n: i for i, n in enumerate(schema.numerical)}

        def dim_of(name: str) -> int:
            return dim_override or spec.dim_of(name)

        def vocab_of(name: str) -> int:
            limit = spec.vocab_limits.get(name)
            return schema.field(name).vocab_size if limit is None else FIRST_ID + int(limit)

        # ids past a field's limit are read as OOV (so crosses and lookups see them alike)
        limited = [(cat_cols[n], FIRST_ID + int(k)) for n, k in spec.vocab_limits.items()
                   if n in cat_cols and n in used]
        self.register_buffer("limit_cols", torch.tensor([c for c, _ in limited],
                                                        dtype=torch.long), persistent=False)
        self.register_buffer("limit_ends", torch.tensor([e for _, e in limited],
                                                        dtype=torch.long), persistent=False)

        # categorical fields and crosses, grouped by dim into shared tables
        self.crosses = nn.ModuleList()
        sources: list[tuple[str, int, int, int]] = []  # (name, dim, vocab, source index)
        # per-value pruned fields keep their own sparse table
        if pruning is None:
            pruning = spec.pruning if dim_override is None else {}
        self.pruned = nn.ModuleDict()
        self._pruned_cols: dict[str, int] = {}
        for name in used:
            f = schema.field(name)
            if f.kind == "categorical" and name in pruning:
                mask = decode_mask(pruning[name], f.vocab_size, dim_of(name), name)
                # seeded per field: built under a search's seed, it starts from that search's
                # step-0 weights times the mask (lottery-ticket retrain)
                values = initial_values(torch.initial_seed(), name + init_tag, mask)
                self.pruned[name] = pruned_table(mask, values)
                self._pruned_cols[name] = cat_cols[name]
            elif f.kind == "categorical" and name in spec.anchors and dim_override is None:
                # ANT: anchors and a sparse transform (``nn.anchor``), at the spec's own dim
                self.pruned[name] = AnchorTable(
                    anchor_mask(spec.anchors[name], f.vocab_size, name), dim_of(name),
                    torch.initial_seed(), name)
                self._pruned_cols[name] = cat_cols[name]
            elif f.kind == "categorical":
                sources.append((name, dim_of(name), vocab_of(name), cat_cols[name]))
        for cross in spec.crosses:
            vocab = [vocab_of(n) for n in cross]
            module = CrossIds([cat_cols[n] for n in cross], vocab, spec.cross_buckets)
            self.crosses.append(module)
            sources.append((cross_name(cross), dim_of(cross_name(cross)), module.size,
                            -len(self.crosses)))
        # the sparse tables of one width are looked up together (``PrunedLookup``); the
        # others (anchor tables) field by field
        self.pruned_lookups = nn.ModuleList()
        self._lookup_fields: list[list[str]] = []
        sparse = [n for n, m in self.pruned.items() if isinstance(m, PrunedTable | PrunedColumn)]
        for d in sorted({self.pruned[n].dim for n in sparse}):
            fields = [n for n in sparse if self.pruned[n].dim == d]
            self.pruned_lookups.append(PrunedLookup([self.pruned[n] for n in fields]))
            self.register_buffer(f"lookup_cols_{len(self._lookup_fields)}", torch.tensor(
                [self._pruned_cols[n] for n in fields], dtype=torch.long), persistent=False)
            self._lookup_fields.append(fields)
        self.group_dims = sorted({d for _, d, _, _ in sources})
        self.tables = nn.ModuleList()
        self._group_slots: list[list[tuple[str, int]]] = []
        for d in self.group_dims:
            members = [s for s in sources if s[1] == d]
            offsets, total = [], 0
            for _, _, vocab, _ in members:
                offsets.append(total)
                total += vocab
            table = nn.Embedding(total, d)
            nn.init.normal_(table.weight, std=init_std)
            self.tables.append(table)
            self.register_buffer(f"offsets_{d}", torch.tensor(offsets, dtype=torch.long),
                                 persistent=False)
            self.register_buffer(f"cols_{d}", torch.tensor([m[3] for m in members],
                                                            dtype=torch.long), persistent=False)
            self._group_slots.append([(m[0], m[3]) for m in members])
        self.n_cross = len(spec.crosses)

        self.sequences = nn.ModuleDict()
        self.numericals = nn.ModuleDict()
        self._num_cols: dict[str, int] = {}
        for name in used:
            f = schema.field(name)
            if f.kind == "sequence":
                table = nn.Embedding(f.vocab_size, dim_of(name), padding_idx=PAD)
                nn.init.normal_(table.weight, std=init_std)
                with torch.no_grad():
                    table.weight[PAD].zero_()
                self.sequences[name] = table
            elif f.kind == "numerical":
                self.numericals[name] = NumericalEmbedding(
                    spec.numerical.get(name, "linear"), dim_of(name), f.boundaries)
                self._num_cols[name] = num_cols[name]

        order = list(used) + [cross_name(c) for c in spec.crosses]
        self.names = order
        self.dims = [dim_of(n) for n in order]
        # every field a row of one table, in ``names`` order: ``stacked`` can skip the list
        self.one_table = (len(self.tables) == 1 and not self.pruned and not self.sequences
                          and not self.numericals
                          and [n for n, _ in self._group_slots[0]] == self.names)

    def _encoded(self, batch: Batch) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """The batch's categorical ids with vocabulary limits applied, and the crosses' ids."""
        cat = batch.cat
        if self.limit_cols.numel():
            cat = cat.clone()
            ids = cat.index_select(1, self.limit_cols)
            cat[:, self.limit_cols] = torch.where(ids >= self.limit_ends, OOV, ids)
        return cat, [m(cat) for m in self.crosses]

    def _lookup(self, group: int, cat: torch.Tensor,
                cross_ids: list[torch.Tensor]) -> torch.Tensor:
        """One table's lookup for its member fields: ``[B, members, d]``."""
        d, slots = self.group_dims[group], self._group_slots[group]
        if all(src >= 0 for _, src in slots):
            ids = cat.index_select(1, getattr(self, f"cols_{d}"))
        else:
            ids = torch.stack(
                [cat[:, src] if src >= 0 else cross_ids[-src - 1] for _, src in slots], 1)
        return self.tables[group](ids + getattr(self, f"offsets_{d}"))

    def stacked(self, batch: Batch) -> torch.Tensor:
        """The fields' embeddings as one ``[B, F, d]`` tensor, equal to
        ``torch.stack(self(batch), 1)``. When ``one_table`` holds it is the table's lookup
        itself: no per-field views to stack again, and one gradient for the lookup (on
        DeepFM over MovieLens-100k a training step took about 8% less CPU than through the
        list)."""
        if self.one_table:
            return self._lookup(0, *self._encoded(batch))
        return torch.stack(self(batch), 1)

    def forward(self, batch: Batch) -> list[torch.Tensor]:
        out: dict[str, torch.Tensor] = {}
        cat, cross_ids = self._encoded(batch)
        for group, slots in enumerate(self._group_slots):
            vectors = self._lookup(group, cat, cross_ids)
            for k, (name, _) in enumerate(slots):
                out[name] = vectors[:, k]
        for k, (lookup, fields) in enumerate(zip(self.pruned_lookups, self._lookup_fields,
                                                 strict=True)):
            vectors = lookup(cat.index_select(1, getattr(self, f"lookup_cols_{k}")))
            # unbind: one backward for all the fields (a view each would zero-fill the whole
            # lookup's gradient once per field)
            for name, vector in zip(fields, vectors.unbind(1), strict=True):
                out[name] = vector
        for name, pruned in self.pruned.items():
            if name not in out:
                out[name] = pruned(cat[:, self._pruned_cols[name]])
        for name, table in self.sequences.items():
            ids = batch.seq[name]
            mask = (ids != PAD).unsqueeze(-1).to(table.weight.dtype)
            out[name] = (table(ids) * mask).sum(1) / mask.sum(1).clamp(min=1.0)
        for name, module in self.numericals.items():
            out[name] = module(batch.num[:, self._num_cols[name]])
        return [out[n] for n in self.names]

    def embedding_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())
