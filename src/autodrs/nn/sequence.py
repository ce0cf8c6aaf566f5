"""Behaviour-sequence encoders: DIN's target attention, SASRec/BST self-attention and the
residual blocks AMEIR searches over, all one ``SequenceEncoder`` configured by a spec.

A sequence field arrives as ``[B, L]`` ids, left-aligned, padded with ``PAD`` (an empty
history holds ``MISSING`` at position 0, so every row has one position to attend to). The
items are looked up in the sequence field's own table; the target item (a categorical
field such as ``item_id``) is looked up in the same table, through a map from its ids to
the sequence field's ids built from the two vocabularies, so both live in one space.

Each layer is a pre-norm residual block ``x + g * f(LayerNorm(x))`` with a scalar gate
``g`` that starts at 0 (ReZero, Bachlechner et al. 2020), its output zeroed on padded
positions. The gate makes a block start as the identity: the tables start at N(0, 1e-4), so
an ungated block's output, of order 1, would drown the items' own embeddings (and the
target attention compares those with the target's raw embedding); on a planted
"target in history" task a DIN read-out behind one ungated GRU block reached 0.73 AUC where
DIN alone reached 0.88. The layers: ``conv`` (a width-3 1-d convolution), ``gru`` (a forward GRU, causal by
construction), ``pool`` (average over a window of 3 valid positions), ``attention``
(multi-head self-attention, then a position-wise feed-forward block, as SASRec / BST).
With ``causal`` a position sees only itself and earlier ones (convolution, pooling and
attention alike). The read-out gives one vector at the field's dim: ``mean`` (masked mean),
``attention`` (DIN: ``sum_i a(h_i, t) h_i`` with an MLP over ``[h, t, h - t, h * t]`` and
no softmax, as the paper keeps the intensity of interest), ``last`` (the most recent
position) or ``target`` (BST: the target is written at the position after the last item
before the layers and its output is read).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

from autodrs.data.schema import OOV, PAD, Schema
from autodrs.nn.init import EMBEDDING_STD, linear
from autodrs.spec import SEQUENCE_LAYERS, SEQUENCE_READOUTS, SpecError

if TYPE_CHECKING:
    from autodrs.data.dataset import Batch
    from autodrs.spec import ArchSpec

# a sequence field "holds" a categorical field's values when at least this share of its
# vocabulary is in the categorical field's vocabulary
SHARED_VALUES = 0.5
ATTENTION_HIDDEN = (64, 32)  # DIN's attention MLP (the paper: 80, 40)


def shared_fraction(schema: Schema, history: str, target: str) -> float:
    """The share of ``history``'s vocabulary that is in ``target``'s (1.0 for two fields
    hashed alike, whose ids then agree)."""
    h, t = schema.field(history), schema.field(target)
    if h.hash_buckets or t.hash_buckets:
        same = h.hash_buckets == t.hash_buckets and h.hash == t.hash
        return 1.0 if same else 0.0
    values = set(t.vocab or [])
    vocab = h.vocab or []
    return sum(v in values for v in vocab) / len(vocab) if vocab else 0.0


def resolve_sequence(schema: Schema, spec: ArchSpec) -> tuple[str, str | None]:
    """The spec's sequence field and its target field (None when the read-out needs none
    and none holds the same values), checked against ``schema``; ``SpecError`` names what
    does not fit."""
    s = spec.sequence
    assert s is not None
    for layer in s.layers:
        if layer not in SEQUENCE_LAYERS:
            raise SpecError(f"unknown sequence layer {layer!r}; choose from {SEQUENCE_LAYERS}")
    if s.readout not in SEQUENCE_READOUTS:
        raise SpecError(f"unknown sequence readout {s.readout!r}; choose from "
                        f"{SEQUENCE_READOUTS}")
    used = spec.used_fields(schema)
    sequences = [n for n in used if schema.field(n).kind == "sequence"]
    if s.history is not None:
        if s.history not in sequences:
            raise SpecError(f"sequence.history {s.history!r} is not a sequence field the "
                            f"spec uses (those are: {', '.join(sequences) or 'none'})")
        sequences = [s.history]
    if not sequences:
        raise SpecError("the spec encodes a behaviour sequence, but uses no sequence field")
    categorical = [n for n in used if schema.field(n).kind == "categorical"]
    if s.target is not None:
        if s.target not in categorical:
            raise SpecError(f"sequence.target {s.target!r} is not a categorical field the "
                            "spec uses")
        pairs = [(shared_fraction(schema, h, s.target), h, s.target) for h in sequences]
    else:
        pairs = [(shared_fraction(schema, h, t), h, t) for h in sequences for t in categorical]
    best = max(pairs, default=None)
    if best is not None and best[0] >= SHARED_VALUES:
        history, target = best[1], best[2]
    elif s.target is not None:
        raise SpecError(f"sequence.target {s.target!r} does not share values with "
                        f"{' or '.join(sequences)} (under {SHARED_VALUES:.0%} of the "
                        "sequence's values are the target's)")
    elif s.readout in ("attention", "target"):
        raise SpecError(f"the {s.readout!r} read-out needs a target field whose values the "
                        f"sequence holds; none of the used categorical fields shares values "
                        f"with {' or '.join(sequences)}")
    elif len(sequences) > 1:
        raise SpecError(f"the spec uses several sequence fields ({', '.join(sequences)}); "
                        "name one in sequence.history")
    else:
        history, target = sequences[0], None
    dim = spec.dim_of(history)
    if int(s.heads) < 1 or ("attention" in s.layers and dim % int(s.heads)):
        raise SpecError(f"sequence.heads must be >= 1 and divide the dim of {history!r} "
                        f"({dim}), got {s.heads}")
    return history, target


def target_map(schema: Schema, history: str, target: str) -> torch.Tensor:
    """``map[id of target's value] = id of the same value in history's vocabulary`` (OOV
    when the histories never hold it); reserved ids map to themselves."""
    h, t = schema.field(history), schema.field(target)
    if h.hash_buckets:
        return torch.arange(t.vocab_size)
    first = t.vocab_size - len(t.vocab or [])
    out = torch.full((t.vocab_size,), OOV, dtype=torch.long)
    out[:first] = torch.arange(first)
    ids = {v: k + first for k, v in enumerate(h.vocab or [])}
    for k, v in enumerate(t.vocab or []):
        out[first + k] = ids.get(v, OOV)
    return out


def _masked(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return x * mask.unsqueeze(-1).to(x.dtype)


class SequenceLayer(nn.Module):
    """One pre-norm residual block over ``[B, L, d]`` (see the module docstring)."""

    def __init__(self, kind: str, dim: int, heads: int, causal: bool) -> None:
        super().__init__()
        self.kind, self.causal = kind, causal
        self.norm = nn.LayerNorm(dim)
        self.gate = nn.Parameter(torch.zeros(()))
        if kind == "conv":
            self.conv = nn.Conv1d(dim, dim, 3)
        elif kind == "gru":
            self.gru = nn.GRU(dim, dim, batch_first=True)
        elif kind == "attention":
            self.attention = nn.MultiheadAttention(dim, heads, batch_first=True)
            self.ff_norm = nn.LayerNorm(dim)
            self.ff = nn.Sequential(linear(dim, 2 * dim), nn.ReLU(), linear(2 * dim, dim))

    def _window(self, x: torch.Tensor) -> torch.Tensor:
        """``x [B, d, L]`` padded for a width-3 window: centred, or the two earlier
        positions when causal."""
        return F.pad(x, (2, 0) if self.causal else (1, 1))

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        h = self.norm(x)
        if self.kind == "conv":
            h = torch.relu(self.conv(self._window(_masked(h, mask).transpose(1, 2))))
            h = h.transpose(1, 2)
        elif self.kind == "gru":
            h = self.gru(h)[0]
        elif self.kind == "pool":
            valid = mask.to(h.dtype).unsqueeze(1)
            total = F.avg_pool1d(self._window(_masked(h, mask).transpose(1, 2)), 3, 1)
            count = F.avg_pool1d(self._window(valid), 3, 1).clamp(min=1e-6)
            h = (total / count).transpose(1, 2)
        else:
            length = x.shape[1]
            causal = (torch.ones(length, length, dtype=torch.bool, device=x.device)
                      .triu(1) if self.causal else None)
            h = self.attention(h, h, h, key_padding_mask=~mask, attn_mask=causal,
                               need_weights=False)[0]
            x = _masked(x + self.gate * h, mask)
            h = self.ff(self.ff_norm(x))
        return _masked(x + self.gate * h, mask)


class TargetAttention(nn.Module):
    """DIN's activation unit: ``sum_i a(h_i, t) h_i`` over the valid positions."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        widths = [4 * dim, *ATTENTION_HIDDEN]
        layers: list[nn.Module] = []
        for a, b in zip(widths[:-1], widths[1:], strict=True):
            layers += [linear(a, b), nn.PReLU()]
        self.mlp = nn.Sequential(*layers, linear(widths[-1], 1))

    def forward(self, h: torch.Tensor, mask: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        t = t.unsqueeze(1).expand_as(h)
        score = self.mlp(torch.cat([h, t, h - t, h * t], dim=-1)).squeeze(-1)
        return (score.masked_fill(~mask, 0.0).unsqueeze(-1) * h).sum(1)


class SequenceEncoder(nn.Module):
    """The spec's sequence field as one ``[B, d]`` vector (see the module docstring)."""

    def __init__(self, schema: Schema, spec: ArchSpec, table: nn.Embedding) -> None:
        super().__init__()
        s = spec.sequence
        assert s is not None
        self.history, self.target = resolve_sequence(schema, spec)
        self.table = table  # the sequence field's table, shared with the field embedding
        self.readout = s.readout
        dim = table.embedding_dim
        length = schema.field(self.history).max_len + (s.readout == "target")
        self.position = nn.Embedding(length, dim) if s.positional else None
        if self.position is not None:
            nn.init.normal_(self.position.weight, std=EMBEDDING_STD)
        self.layers = nn.ModuleList(SequenceLayer(k, dim, int(s.heads), s.causal)
                                    for k in s.layers)
        self.attend = TargetAttention(dim) if s.readout == "attention" else None
        if self.target is not None:
            self.column = schema.categorical.index(self.target)
            self.register_buffer("to_history", target_map(schema, self.history, self.target),
                                 persistent=False)

    def target_embedding(self, batch: Batch) -> torch.Tensor:
        return self.table(self.to_history[batch.cat[:, self.column]])

    def forward(self, batch: Batch) -> torch.Tensor:
        ids = batch.seq[self.history]
        mask = ids != PAD
        x = self.table(ids)
        lengths = mask.sum(1)
        rows = torch.arange(ids.shape[0], device=ids.device)  # traced: not len()
        if self.readout == "target":
            x = torch.cat([x, x.new_zeros(x.shape[0], 1, x.shape[2])], dim=1)
            x = x.index_put((rows, lengths), self.target_embedding(batch))
            mask = torch.cat([mask, mask.new_zeros(ids.shape[0], 1)], dim=1)
            mask = mask.index_put((rows, lengths), torch.ones_like(lengths, dtype=torch.bool))
        if self.position is not None:
            x = _masked(x + self.position.weight[:x.shape[1]], mask)
        for layer in self.layers:
            x = layer(x, mask)
        if self.readout == "mean":
            return x.sum(1) / lengths.clamp(min=1).unsqueeze(-1).to(x.dtype)
        if self.readout == "attention":
            assert self.attend is not None
            return self.attend(x, mask, self.target_embedding(batch))
        if self.readout == "last":
            return x[rows, (lengths - 1).clamp(min=0)]
        return x[rows, lengths]

