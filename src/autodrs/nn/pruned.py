"""Per-value pruned embedding tables stored sparsely, so pruning really shrinks memory.

A pruned table keeps, for each row (value), only its kept entries: a CSR layout with a
``row_ptr`` (int16 while it can hold the kept count, else int32), the kept column of each
entry (``cols``, [nnz]) and the kept values (``values``, [nnz], the only trainable tensor).
When most rows keep nothing, the offsets run over the kept rows only, whose ids are stored
(``row_ids``); when every kept row keeps its whole width (row pruning), the ids alone
suffice. These layouts are what is stored; lookups go through ``PrunedLookup``, one index
over all the pruned tables of a width built from them, which returns ordinary ``[B, d]``
embeddings (rows with no kept entry, pruned values, embed to zeros) and, while scoring,
reads the kept rows at full width; nothing dense of size ``N x d`` is ever held.

Which entries a table keeps is written into the spec (``ArchSpec.pruning``) as a compact,
compressed bit mask, so ``build_model(schema, spec)`` rebuilds the same structure and
``model.pt`` holds the kept values and the sparse index. Initial values are drawn per field
(normal, std 0.01: PEP's search tables start from the same draws, see ``initial_table``;
dense tables start at ``autodrs.nn.init.EMBEDDING_STD``) from a generator seeded by
(seed, field): a
pruned model built under the seed of the search that produced its mask starts from that
search's step-0 weights times the mask (the lottery-ticket retrain of PEP).
"""

from __future__ import annotations

import base64
import zlib
from collections.abc import Iterator

import numpy as np
import torch
from torch import nn

MASK_PREFIX = "z1:"


class MaskError(ValueError):
    """A pruning mask that cannot describe the table it is meant for."""


def encode_mask(mask: torch.Tensor | np.ndarray) -> str:
    """A boolean ``[N, d]`` mask as text: row-major packed bits, zlib, base64."""
    bits = np.packbits(np.asarray(mask, dtype=bool).reshape(-1))
    return MASK_PREFIX + base64.b64encode(zlib.compress(bits.tobytes(), 9)).decode("ascii")


def decode_mask(text: str, rows: int, dim: int, name: str = "table") -> torch.Tensor:
    """The boolean ``[rows, dim]`` mask ``encode_mask`` wrote; a clear error when it does not
    fit the table."""
    if not isinstance(text, str) or not text.startswith(MASK_PREFIX):
        raise MaskError(f"pruning mask of {name!r} is not an autodrs mask ('{MASK_PREFIX}...')")
    try:
        raw = zlib.decompress(base64.b64decode(text[len(MASK_PREFIX):], validate=True))
    except (ValueError, zlib.error) as e:
        raise MaskError(f"pruning mask of {name!r} is corrupt ({e})") from e
    expected = -(-rows * dim // 8)
    if len(raw) != expected:
        raise MaskError(f"pruning mask of {name!r} holds {len(raw) * 8} bits; a table of "
                        f"{rows} rows x {dim} dims needs {rows * dim}")
    bits = np.unpackbits(np.frombuffer(raw, dtype=np.uint8))[: rows * dim]
    return torch.from_numpy(bits.astype(bool).reshape(rows, dim))


def mask_bytes(text: str) -> int:
    """Bytes a mask takes in the spec."""
    return len(text.encode("ascii"))


def field_generator(seed: int, name: str) -> torch.Generator:
    """A generator for one field's initial table, independent of module construction order."""
    return torch.Generator().manual_seed((int(seed) * 1_000_003 + zlib.crc32(name.encode()))
                                         % (2**63 - 1))


INIT_CHUNK_ROWS = 4096
INIT_STD = 0.01


def _initial_chunks(seed: int, name: str, rows: int,
                    dim: int) -> Iterator[tuple[int, torch.Tensor]]:
    # drawn chunk by chunk so a large pruned table never needs its dense size in memory
    generator = field_generator(seed, name)
    for start in range(0, rows, INIT_CHUNK_ROWS):
        n = min(INIT_CHUNK_ROWS, rows - start)
        yield start, torch.randn(n, dim, generator=generator) * INIT_STD


def initial_table(seed: int, name: str, rows: int, dim: int) -> torch.Tensor:
    """The step-0 dense table of field ``name`` under ``seed`` (normal, std ``INIT_STD``)."""
    parts = [chunk for _, chunk in _initial_chunks(seed, name, rows, dim)]
    return torch.cat(parts) if parts else torch.zeros(0, dim)


def initial_values(seed: int, name: str, mask: torch.Tensor) -> torch.Tensor:
    """The kept entries (row-major) of ``initial_table(seed, name, ...)`` under ``mask``."""
    rows, dim = mask.shape
    parts = [chunk[mask[start:start + len(chunk)]]
             for start, chunk in _initial_chunks(seed, name, int(rows), int(dim))]
    return torch.cat(parts) if parts else torch.zeros(0)


def _offset_dtype(kept: int) -> torch.dtype:
    # the narrowest integer type that holds ``kept`` (int16 up to 32,767 kept entries)
    return torch.int32 if kept > torch.iinfo(torch.int16).max else torch.int16


class PrunedTable(nn.Module):
    """An embedding table of ``rows x dim`` that stores only the entries ``mask`` keeps;
    ``values`` are the kept entries in row-major order (zeros when not given).

    Of three layouts it takes the one with the fewest stored bytes (``layout``):
    ``csr``, offsets over every row (``row_ptr`` [rows + 1]) and a column per kept entry;
    ``rows``, the ids of the rows that keep an entry (``row_ids``, int32, ascending) with
    offsets and columns over those rows only; ``full_rows``, when every such row keeps all
    ``dim`` entries (row pruning), their ids alone. With most rows pruned (the rare values
    of a huge field) the offsets of ``csr`` cost 4 bytes a row, as much as a kept entry:
    the kept-row layouts cost nothing for a pruned row."""

    def __init__(self, mask: torch.Tensor, values: torch.Tensor | None = None) -> None:
        super().__init__()
        if mask.dim() != 2:
            raise MaskError(f"a pruning mask is 2-d [rows, dim], got shape {tuple(mask.shape)}")
        mask = mask.to(torch.bool).cpu()
        self.rows, self.dim = int(mask.shape[0]), int(mask.shape[1])
        kept = int(mask.sum())
        if values is not None and tuple(values.shape) != (kept,):
            raise MaskError(f"{tuple(values.shape)} initial values for a mask that keeps {kept}")
        counts = mask.sum(1)
        row_ids = (counts > 0).nonzero()[:, 0]
        full = bool((counts[row_ids] == self.dim).all())
        offset = _offset_dtype(kept).itemsize
        col_dtype = torch.uint8 if self.dim <= 256 else torch.int16
        cols = kept * col_dtype.itemsize
        sizes = {"csr": (self.rows + 1) * offset + cols,
                 "rows": 4 * len(row_ids) + (len(row_ids) + 1) * offset + cols}
        if full:
            sizes["full_rows"] = 4 * len(row_ids)
        # ties go to csr, the layout of earlier releases
        self.layout = min(sizes, key=lambda k: (sizes[k], k != "csr"))
        if self.layout != "csr":
            self.register_buffer("row_ids", row_ids.to(torch.int32))
            counts = counts[row_ids]
        if self.layout != "full_rows":
            row_ptr = torch.zeros(len(counts) + 1, dtype=torch.long)
            row_ptr[1:] = torch.cumsum(counts, 0)
            self.register_buffer("row_ptr", row_ptr.to(_offset_dtype(kept)))
            self.register_buffer("cols", mask.nonzero()[:, 1].to(col_dtype))
        start = torch.zeros(kept) if values is None else values.detach().cpu()
        self.values = nn.Parameter(start.float().contiguous())

    @property
    def nnz(self) -> int:
        return int(self.values.numel())

    def row_dims(self) -> torch.Tensor:
        """Kept entries per row."""
        if self.layout == "csr":
            return (self.row_ptr[1:] - self.row_ptr[:-1]).long()
        dims = torch.zeros(self.rows, dtype=torch.long, device=self.values.device)
        per = (self.row_ptr[1:] - self.row_ptr[:-1]).long() if self.layout == "rows" else \
            torch.full((len(self.row_ids),), self.dim, dtype=torch.long, device=dims.device)
        dims[self.row_ids.long()] = per
        return dims

    def entries(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Kept entries per row ([rows]) and the column of each kept entry, row-major."""
        if self.layout == "full_rows":
            cols = torch.arange(self.dim, device=self.values.device).repeat(len(self.row_ids))
            return self.row_dims(), cols
        return self.row_dims(), self.cols.long()

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return standalone_lookup(self)(ids.reshape(-1, 1)).reshape(*ids.shape, self.dim)

    def mask(self) -> torch.Tensor:
        m = torch.zeros(self.rows, self.dim, dtype=torch.bool, device=self.values.device)
        if self.layout == "full_rows":
            m[self.row_ids.long()] = True
            return m
        rows = torch.repeat_interleave(torch.arange(self.rows, device=m.device), self.row_dims())
        m[rows, self.cols.long()] = True
        return m

    def to_dense(self) -> torch.Tensor:
        dense = self.values.new_zeros(self.rows, self.dim)
        dense[self.mask()] = self.values.detach()
        return dense

    def stored_bytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in (*self.buffers(), self.values))

    def extra_repr(self) -> str:
        return f"rows={self.rows}, dim={self.dim}, kept={self.nnz}, layout={self.layout}"


class PrunedColumn(nn.Module):
    """A ``rows x 1`` table (a first-order weight per value) that stores only its kept rows:
    their ids (``kept``, int32, ascending) and values. A CSR layout would spend 4 bytes of
    row offsets on every row, as much as the dense column; this spends 8 bytes a kept row."""

    def __init__(self, mask: torch.Tensor, values: torch.Tensor | None = None) -> None:
        super().__init__()
        if mask.dim() != 2 or mask.shape[1] != 1:
            raise MaskError(f"a pruned column's mask is [rows, 1], got shape {tuple(mask.shape)}")
        mask = mask.to(torch.bool).cpu()
        self.rows, self.dim = int(mask.shape[0]), 1
        kept = mask[:, 0].nonzero()[:, 0]
        if values is not None and tuple(values.shape) != (len(kept),):
            raise MaskError(f"{tuple(values.shape)} initial values for a mask that keeps "
                            f"{len(kept)}")
        self.register_buffer("kept", kept.to(torch.int32))
        start = torch.zeros(len(kept)) if values is None else values.detach().cpu()
        self.values = nn.Parameter(start.float().contiguous())

    @property
    def nnz(self) -> int:
        return int(self.values.numel())

    def row_dims(self) -> torch.Tensor:
        return self.mask()[:, 0].long()

    def entries(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Kept entries per row ([rows], 0 or 1) and the column of each (0)."""
        return self.row_dims(), torch.zeros(self.nnz, dtype=torch.long, device=self.kept.device)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return standalone_lookup(self)(ids.reshape(-1, 1)).reshape(*ids.shape, 1)

    def mask(self) -> torch.Tensor:
        m = torch.zeros(self.rows, 1, dtype=torch.bool, device=self.values.device)
        m[self.kept.long(), 0] = True
        return m

    def to_dense(self) -> torch.Tensor:
        dense = self.values.new_zeros(self.rows, 1)
        dense[self.kept.long(), 0] = self.values.detach()
        return dense

    def stored_bytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in (self.kept, self.values))

    def extra_repr(self) -> str:
        return f"rows={self.rows}, dim=1, kept={self.nnz}"


class PrunedLookup(nn.Module):
    """One lookup for several pruned tables of one width (a ``FieldEmbedding``'s pruned
    fields): ``forward(ids)`` with ``ids`` ``[B, G]`` (column g an id of table g) returns
    ``[B, G, dim]``, each kept entry at its column and zeros elsewhere, exactly what
    ``to_dense()[ids]`` holds.

    Built from the tables' stored index (``model.pt`` stores nothing new), over the rows of
    all the tables laid end to end: each row's slot among the rows that keep an entry
    (``slot``, the next free slot for a pruned row), where each kept row's entries start
    among the tables' values laid end to end (``ptr``) and, unless every kept row keeps its
    whole width, each entry's column (``cols``). A lookup is a fixed few tensor operations
    for every row and field of a batch, whatever each table's stored layout (one lookup per
    table and layout, with a searchsorted and a scatter each, took 28-33x the dense model's
    time at batch 1; docs/benchmarks.md):

    - without gradients (scoring), it reads the kept rows at their full width, pruned
      entries zero (``[kept rows + 1, dim]``, the last row zeros), built from the values on
      first use and again whenever a table's values change (an in-place step, a load, a
      move, another tensor): two gathers, as a dense table's one (dropped again by the
      next lookup with gradients);
    - with gradients (training), it copies each looked-up row's kept entries to their
      columns of a zero output, so autograd reaches each table's ``values`` (concatenated
      for the call).

    Memory beyond the stored tables: 4 bytes a row and a kept row (8 past 2^31 entries),
    a byte a kept entry for the columns, and while scoring the kept rows at full width (at
    most the dense table's kept rows; PEP's at 96% on 1M Criteo-layout rows keep 2.8 of 16
    entries a kept row, so 5.7x the kept values)."""

    def __init__(self, tables: list[nn.Module]) -> None:
        super().__init__()
        if not tables:
            raise ValueError("a pruned lookup needs at least one table")
        dims = {int(t.dim) for t in tables}
        if len(dims) != 1:
            raise ValueError(f"one pruned lookup serves tables of one width, got {sorted(dims)}")
        self.dim = dims.pop()
        # not registered: the tables belong to their owner (their parameters once only)
        self._tables = list(tables)
        counts, cols = zip(*(t.entries() for t in tables), strict=True)
        counts = torch.cat([c.cpu().long() for c in counts])
        kept_rows = (counts > 0).nonzero()[:, 0]
        slot = torch.full((len(counts),), len(kept_rows), dtype=torch.long)
        slot[kept_rows] = torch.arange(len(kept_rows))
        self.register_buffer("slot", slot.to(torch.int32), persistent=False)
        # one more offset than kept rows, for the pruned rows' free slot (no entries)
        ptr = torch.zeros(len(kept_rows) + 2, dtype=torch.long)
        ptr[1:-1] = torch.cumsum(counts[kept_rows], 0)
        ptr[-1] = ptr[-2]
        wide = int(ptr[-1]) > torch.iinfo(torch.int32).max
        self.register_buffer("ptr", ptr if wide else ptr.to(torch.int32), persistent=False)
        bases = torch.tensor([0] + [int(t.rows) for t in tables[:-1]], dtype=torch.long)
        self.register_buffer("base", torch.cumsum(bases, 0), persistent=False)
        self.register_buffer("positions", torch.arange(self.dim), persistent=False)
        # every kept row whole (row pruning, first-order columns): entry k of a row is its
        # column k, no columns needed
        self.whole = bool(((counts == 0) | (counts == self.dim)).all())
        col_dtype = torch.uint8 if self.dim <= 256 else torch.int16
        self.register_buffer("cols", None if self.whole else
                             torch.cat([c.cpu() for c in cols]).to(col_dtype),
                             persistent=False)
        self._rows: tuple[tuple[int, ...], torch.Tensor] | None = None

    def _values(self) -> list[torch.Tensor]:
        return [t.values for t in self._tables]

    def _kept_rows(self, values: list[torch.Tensor]) -> torch.Tensor:
        """The kept rows at full width (and a zero row), rebuilt when the values change."""
        key = tuple(x for v in values for x in (id(v), v._version, v.data_ptr()))
        if self._rows is not None and self._rows[0] == key:
            return self._rows[1]
        source = torch.cat([v.detach() for v in values])
        n, d = len(self.ptr) - 1, self.dim
        counts = (self.ptr[1:] - self.ptr[:-1]).long()
        row_of = torch.repeat_interleave(torch.arange(n, device=counts.device), counts)
        if self.cols is None:
            place = row_of * d + (torch.arange(len(row_of), device=counts.device)
                                  - self.ptr[:-1].long().index_select(0, row_of))
        else:
            place = row_of * d + self.cols.long()
        rows = source.new_zeros(n * d).index_copy_(0, place, source).view(n, d)
        self._rows = (key, rows)
        return rows

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        values = self._values()
        n, d = ids.numel(), self.dim
        slot = self.slot.index_select(0, (ids + self.base).reshape(-1))
        if not (torch.is_grad_enabled() and any(v.requires_grad for v in values)):
            return self._kept_rows(values).index_select(0, slot).view(*ids.shape, d)
        # training: the values are about to change, the full-width rows would go stale
        self._rows = None
        source = values[0] if len(values) == 1 else torch.cat(values)
        if source.numel() == 0:
            return source.new_zeros(*ids.shape, d)
        start = self.ptr.index_select(0, slot).long()
        length = self.ptr.index_select(0, slot + 1).long() - start
        if self.cols is None:
            # whole rows: the window of ``dim`` entries from a row's start, or none
            pruned = (length == 0).unsqueeze(1)
            entry = (start.unsqueeze(1) + self.positions).masked_fill_(pruned, 0)
            out = source.index_select(0, entry.reshape(-1)).view(n, d).masked_fill(pruned, 0.0)
            return out.view(*ids.shape, d)
        # every kept entry of the looked-up rows, copied to its row and column
        row_of = torch.repeat_interleave(torch.arange(n, device=slot.device), length)
        first = length.cumsum(0) - length
        entry = torch.arange(row_of.numel(), device=slot.device).add_(
            (start - first).index_select(0, row_of))
        target = row_of.mul_(d).add_(self.cols.index_select(0, entry))
        out = source.new_zeros(n * d).index_copy_(0, target, source.index_select(0, entry))
        return out.view(*ids.shape, d)

    def extra_repr(self) -> str:
        return f"tables={len(self._tables)}, dim={self.dim}, whole_rows={self.whole}"


def standalone_lookup(table: nn.Module) -> PrunedLookup:
    """The lookup of one table on its own (a table used outside a ``FieldEmbedding``, e.g.
    an anchor transform), built on first use and again once the table moves device."""
    lookup = table.__dict__.get("_lookup")
    if lookup is None or lookup.ptr.device != table.values.device:
        lookup = PrunedLookup([table]).to(table.values.device)
        table.__dict__["_lookup"] = lookup
    return lookup


def pruned_table(mask: torch.Tensor, values: torch.Tensor | None = None) -> nn.Module:
    """The sparse storage of a pruned ``[rows, dim]`` table: kept rows only for a single
    column, CSR otherwise."""
    if mask.dim() == 2 and mask.shape[1] == 1:
        return PrunedColumn(mask, values)
    return PrunedTable(mask, values)
