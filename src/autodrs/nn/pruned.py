"""Per-value pruned embedding tables stored sparsely, so pruning really shrinks memory.

A pruned table keeps, for each row (value), only its kept entries: a CSR layout with a
``row_ptr`` (int16 while it can hold the kept count, else int32), the kept column of each
entry (``cols``, [nnz]) and the kept values (``values``, [nnz], the only trainable tensor).
When most rows keep nothing, the offsets run over the kept rows only, whose ids are stored
(``row_ids``); when every kept row keeps its whole width (row pruning), the ids alone
suffice. A lookup scatters a row's kept entries into a zero vector of the table's width, so
the rest of the model sees ordinary ``[B, d]`` embeddings; nothing dense of size ``N x d``
is ever held. Rows with no kept entry (pruned values) embed to zeros.

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

    def _slots(self, flat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """For each id, its position among the stored rows and whether it has one."""
        k = self.row_ids.numel()
        if k == 0:
            return torch.zeros_like(flat), torch.zeros_like(flat, dtype=torch.bool)
        pos = torch.searchsorted(self.row_ids, flat.to(torch.int32)).clamp(max=k - 1)
        return pos, self.row_ids[pos] == flat

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        flat = ids.reshape(-1)
        n = flat.numel()
        if self.layout == "full_rows":
            pos, hit = self._slots(flat)
            if not self.nnz:
                return self.values.new_zeros(*ids.shape, self.dim)
            out = self.values.view(-1, self.dim)[pos] * hit.unsqueeze(1).to(self.values.dtype)
            return out.reshape(*ids.shape, self.dim)
        if self.layout == "csr":
            start = self.row_ptr[flat].long()
            length = self.row_ptr[flat + 1].long() - start
        else:
            pos, hit = self._slots(flat)
            start = self.row_ptr[pos].long()
            length = torch.where(hit, self.row_ptr[pos + 1].long() - start, 0)
        out = self.values.new_zeros(n, self.dim)
        if self.nnz:
            rows = torch.repeat_interleave(torch.arange(n, device=flat.device), length)
            first = torch.cumsum(length, 0) - length
            # entry k of the batch belongs to row rows[k]; its index in ``values`` is the row's
            # start plus its position inside the row
            entry = torch.arange(rows.numel(), device=flat.device) + (start - first)[rows]
            out = out.index_put((rows, self.cols[entry].long()), self.values[entry])
        return out.reshape(*ids.shape, self.dim)

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

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        flat = ids.reshape(-1)
        if not self.nnz:
            return self.values.new_zeros(*ids.shape, 1)
        pos = torch.searchsorted(self.kept, flat.to(torch.int32)).clamp(max=self.nnz - 1)
        hit = self.kept[pos] == flat
        out = torch.where(hit, self.values[pos], self.values.new_zeros(()))
        return out.reshape(*ids.shape, 1)

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


def pruned_table(mask: torch.Tensor, values: torch.Tensor | None = None) -> nn.Module:
    """The sparse storage of a pruned ``[rows, dim]`` table: kept rows only for a single
    column, CSR otherwise."""
    if mask.dim() == 2 and mask.shape[1] == 1:
        return PrunedColumn(mask, values)
    return PrunedTable(mask, values)
