"""The encoded on-disk cache: one streaming pass from a ``Source`` to compact shards, and
``DiskData``, batches read from those shards in bounded memory.

Layout of a cache folder (one per data + settings key)::

    schema.json                   the fitted schema
    info.json                     sizes, statistics, and every file's byte size;
                                  written last, so a folder without it is incomplete
    remap-cat.npy                 int32: provisional -> final id, every categorical field's
                                  table one after the other (offsets in info.json)
    remap-seq-genres.npy          int32: the same for one sequence field
    train/00000.cat.npy           uint16 or int32 [rows, categorical fields], provisional
                                  ids (uint16 while they all fit 16 bits)
    train/00000.num.npy           float32 [rows, numerical fields], standardised
    train/00000.label.npy         uint8 [rows] ([rows, tasks] for several labels)
    train/00000.seq-genres.npy    int32 [rows, 32] provisional ids (padded)
    train/00000.group.npy         int64 [rows], when a group column exists
    valid/..., test/...

Shards are ``.npy`` files: self-describing, memory-mapped with ``numpy.load(mmap_mode)``,
readable from any language with a NumPy reader, and with no dependency beyond NumPy.

The build reads the source once. Rows are assigned to splits as they pass (``split_of``: a
hash of the row number and the seed, or the time column against its 80% and 90% points)
and each chunk's rows are grouped by split, so every split's part is appended to its open
shard files as one block. Categorical values get provisional ids in order of first sight
while their train counts are kept: integers within a bounded range through a table indexed
by value, other values through the chunk's dictionary, so Python touches only distinct
values. Numerical fields keep exact running moments and a bounded uniform sample (the rows
with the smallest hashes, for bucket boundaries). Once the pass is over the schema is
fitted from those counts and moments, with the same rules as ``Schema.fit``; numbers are
standardised shard by shard, and categorical ids stay provisional on disk: readers map them
to final ids through the ``remap`` tables (one gather per read buffer), which saves
rewriting every shard. The folder is built under a temporary name and renamed when
complete, so an interrupted build never leaves a cache a later run reads as complete.
"""

from __future__ import annotations

import errno
import json
import os
import queue
import shutil
import struct
import threading
import time
import warnings
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
import torch

from autodrs.data import fastparquet as _fast
from autodrs.data.errors import DataError
from autodrs.data.prefetch import prefetch
from autodrs.data.schema import (
    FIRST_ID,
    MISSING,
    OOV,
    PAD,
    Field,
    Schema,
    _numeric,
    _seq_lists,
    fit_numerical,
    fit_vocab,
    hash_ids,
    seq_width,
)

SPLITS = ("train", "valid", "test")
SHARD_ROWS = 1 << 20
SHUFFLE_ROWS = 1 << 20
READ_ROWS = 1 << 16  # rows read at a time for batches in order (evaluation)
MAX_SEQ_LEN = 32  # a sequence field's widest encoding (``history=20`` fits whole)
SAMPLE_ROWS = 1_000_000  # numerical values kept for bucket boundaries
LUT_RANGE = 1 << 22  # widest value range of an integer field looked up by a table
# provisional ids while building: 0 pads sequences, 1 is a missing value, values from 2
_P_PAD, _P_MISSING, _P_FIRST = 0, 1, 2
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_HEADER_BYTES = 128  # every shard's .npy header, fixed so rows can be appended first


# ---------------------------------------------------------------- splits
def row_hash(rows: np.ndarray, seed: int, salt: int = 0,
             scratch: tuple[np.ndarray, np.ndarray] | None = None) -> np.ndarray:
    """A uniform number in [0, 1) for each row number: SplitMix64 of the row number mixed
    with the seed (and a salt for independent draws), top 53 bits. ``scratch``: two
    uint64 arrays of ``rows``' length to work in (else allocated)."""
    if scratch is None:
        scratch = (np.empty(len(rows), np.uint64), np.empty(len(rows), np.uint64))
    z, t = scratch
    np.copyto(z, rows, casting="unsafe")
    with np.errstate(over="ignore"):
        z += np.uint64((seed * 2 + 1 + salt * 7919) % 2**64) * _GOLDEN
        for shift, mult in ((30, 0xBF58476D1CE4E5B9), (27, 0x94D049BB133111EB)):
            z ^= np.right_shift(z, np.uint64(shift), out=t)
            z *= np.uint64(mult)
        z ^= np.right_shift(z, np.uint64(31), out=t)
    np.right_shift(z, np.uint64(11), out=z)
    u = z.astype(np.float64)
    u *= 2.0**-53
    return u


def split_of(u: np.ndarray, cuts: tuple[float, float] = (0.8, 0.9)) -> np.ndarray:
    """0 (train), 1 (valid) or 2 (test) for values ``u`` against the two cut points."""
    return (u >= cuts[0]).astype(np.uint8) + (u >= cuts[1]).astype(np.uint8)


# ---------------------------------------------------------------- provisional ids
class _Vocab:
    """Provisional ids of one field's values in order of first sight, with their train
    counts. Integer values within ``LUT_RANGE`` are looked up in a table indexed by value
    (``mode`` "lut"); other values through each chunk's dictionary and a dict over its
    distinct values, keyed by Python ints ("int") or text ("text"). Only a field's distinct
    values are ever touched in Python."""

    def __init__(self) -> None:
        self.mode = "new"
        self.base = 0  # "lut": the value at table index 0
        self.lut = np.zeros(0, np.int32)  # "lut": provisional id of each value, -1 unseen
        self.ints = np.zeros(0, np.int64)  # "lut": the values, in provisional-id order
        self.index: dict[Any, int] = {}  # "int" / "text"
        self.values: list[Any] = []  # "int" / "text": the values, in provisional-id order
        self.counts = np.zeros(1024, np.int64)  # train count by provisional id
        self.seen = False  # any non-null value

    def __len__(self) -> int:
        return len(self.ints) if self.mode == "lut" else len(self.values)

    # ------------------------------------------------------------ encoding
    def encode(self, arr: pa.Array, order: np.ndarray | None, n_train: int,
               out: np.ndarray | None = None) -> np.ndarray:
        """Provisional ids (int32, ``_P_MISSING`` for null) of ``arr``'s values taken in
        ``order`` (None: as they are), written to ``out`` when given (e.g. a column of the
        chunk's id matrix); the first ``n_train`` of them are train rows."""
        if arr.null_count < len(arr):
            self.seen = True
        t = arr.type
        ids = None
        if pa.types.is_dictionary(t):
            ids = self._by_dictionary(arr.dictionary, arr.indices, order, n_train)
        elif pa.types.is_integer(t) and self.mode in ("new", "lut"):
            ids = self._by_table(arr, order, n_train, out)
            if ids is out is not None:
                return out
        if ids is None and pa.types.is_null(t):
            ids = np.full(len(arr), _P_MISSING, np.int32)
        if ids is None:
            enc = pc.dictionary_encode(arr)
            ids = self._by_dictionary(enc.dictionary, enc.indices, order, n_train)
        if out is None:
            return ids
        out[...] = ids
        return out

    def _by_table(self, arr: pa.Array, order: np.ndarray | None, n_train: int,
                  out: np.ndarray | None) -> np.ndarray | None:
        """Ids through the value-indexed table; None when the values span too wide a range
        (the field then switches to a dict). Values first seen in this chunk get the next
        ids in increasing order of value."""
        if arr.null_count == len(arr):
            return np.full(len(arr), _P_MISSING, np.int32)
        bounds = pc.min_max(arr)
        lo, hi = bounds["min"].as_py(), bounds["max"].as_py()
        top = hi if self.mode == "new" else max(hi, self.base + len(self.lut) - 1)
        base = lo if self.mode == "new" else min(lo, self.base)
        if (top - base >= LUT_RANGE or hi - lo >= max(1 << 16, 4 * len(arr))
                or hi >= 1 << 62 or lo <= -(1 << 62)):
            self._to_dict(text=False)
            return None
        if self.mode == "new" or base < self.base or top >= self.base + len(self.lut):
            grown = np.full(top - base + 1, -1, np.int32)
            if self.mode == "lut":
                at = self.base - base
                grown[at:at + len(self.lut)] = self.lut
            self.lut, self.base, self.mode = grown, base, "lut"
        nulls = arr.null_count
        # nulls read as ``lo`` (a value the chunk holds) and are set to missing at the end
        x = (pc.fill_null(arr, lo) if nulls else arr).to_numpy(zero_copy_only=False)
        x = x.astype(np.int64, copy=False)
        x = np.take(x, order) if order is not None else x.copy()
        x -= lo
        span = hi - lo + 1
        table = self.lut[lo - self.base:hi - self.base + 1]
        valid = None
        if nulls:
            valid = arr.is_valid().to_numpy(zero_copy_only=False)
            valid = valid[order] if order is not None else valid
        new = np.flatnonzero((np.bincount(x, minlength=span) > 0) & (table < 0))
        if len(new):  # values not seen before get the next ids
            start = len(self.ints) + _P_FIRST
            table[new] = np.arange(start, start + len(new), dtype=np.int32)
            self.ints = np.concatenate([self.ints, new + lo])
        head = x[:n_train] if valid is None else x[:n_train][valid[:n_train]]
        train = np.bincount(head, minlength=span)
        used = np.flatnonzero(train)
        self._count(table[used], train[used])
        ids = np.take(table, x, out=out, mode="clip")  # "clip": no buffered copy of out
        if valid is not None:
            ids[~valid] = _P_MISSING
        return ids

    def _by_dictionary(self, dictionary: pa.Array, indices: pa.Array,
                       order: np.ndarray | None, n_train: int) -> np.ndarray:
        t = dictionary.type
        text = not pa.types.is_integer(t)
        if self.mode in ("new", "lut", "int") and text or self.mode in ("new", "lut"):
            self._to_dict(text=text)
        if self.mode == "text":
            local = _texts(dictionary)
        else:
            local = dictionary.to_pylist()
        index, values = self.index, self.values
        ids = np.empty(len(local) + 1, np.int32)
        for i, v in enumerate(local):
            pid = index.get(v)
            if pid is None:
                pid = index[v] = len(values) + _P_FIRST
                values.append(v)
            ids[i] = pid
        ids[-1] = _P_MISSING
        codes = indices.fill_null(len(local)) if indices.null_count else indices
        c = codes.to_numpy(zero_copy_only=False)
        if order is not None:
            c = c[order]
        train = np.bincount(c[:n_train], minlength=len(local) + 1)[:-1]
        used = np.flatnonzero(train)
        self._count(ids[used], train[used])
        return ids[c]

    def _to_dict(self, text: bool) -> None:
        """Move to dict lookups keyed by ints, or by text (the ints' decimal spelling, as
        ``Schema.fit`` casts integer columns to text)."""
        if self.mode == "lut":
            self.values = self.ints.tolist()
            self.ints = np.zeros(0, np.int64)
            self.lut = np.zeros(0, np.int32)
        if text and self.mode != "text":
            self.values = [str(v) for v in self.values]
        self.index = {v: i + _P_FIRST for i, v in enumerate(self.values)}
        self.mode = "text" if text or self.mode == "text" else "int"

    def _count(self, pids: np.ndarray, counts: np.ndarray) -> None:
        size = len(self) + _P_FIRST
        if size > len(self.counts):
            self.counts = np.concatenate([self.counts, np.zeros(size, np.int64)])
        self.counts[pids] += counts

    # ------------------------------------------------------------ fitting
    def texts(self) -> pl.Series:
        """Every value as text, in provisional-id order."""
        if self.mode == "lut":
            return pl.Series(self.ints).cast(pl.String)
        return pl.Series(self.values).cast(pl.String)

    def fit(self, f: Field, min_count: int, hash_threshold: int) -> np.ndarray:
        """Fit ``f``'s vocabulary from the train counts; the map provisional -> final id."""
        texts = self.texts()
        n = len(texts)
        counts = self.counts[_P_FIRST:n + _P_FIRST]
        table = pl.DataFrame({"value": texts, "count": counts}).filter(pl.Series(counts > 0))
        fit_vocab(f, table, min_count, hash_threshold)
        remap = np.full(n + _P_FIRST, OOV, np.int32)
        remap[_P_PAD], remap[_P_MISSING] = PAD, MISSING
        if f.hash_buckets:
            if n:
                remap[_P_FIRST:] = hash_ids(texts, f.hash_buckets).to_numpy()
        elif f.vocab:
            final = pl.DataFrame({"value": pl.Series(f.vocab, dtype=pl.String),
                                  "id": np.arange(FIRST_ID, FIRST_ID + len(f.vocab))})
            pids = pl.DataFrame({"value": texts, "pid": np.arange(_P_FIRST, n + _P_FIRST)})
            both = final.join(pids, on="value", how="inner")
            remap[both["pid"].to_numpy()] = both["id"].to_numpy()
        return remap


def _texts(arr: pa.Array) -> list[str]:
    """Values as text, spelled as ``Schema.fit`` spells them (Polars' cast to String)."""
    t = arr.type
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        return arr.to_pylist()
    if pa.types.is_integer(t):
        return [str(v) for v in arr.to_pylist()]
    series = pl.from_arrow(arr)
    assert isinstance(series, pl.Series)
    return series.cast(pl.String).to_list()


class _BottomK:
    """The ``k`` values with the smallest keys seen so far (a uniform sample when the keys
    are uniform hashes), held in buffers of 1.5 ``k``: whenever they fill, the smallest
    ``k`` are kept and keys above the largest kept one are refused from then on."""

    def __init__(self, k: int) -> None:
        self.k = k
        self.keys = np.zeros(0)
        self.values = np.zeros(0)
        self.n = 0
        self.cut = np.inf  # keys at or above it can no longer enter

    def add(self, values: np.ndarray, keys: np.ndarray) -> None:
        if not len(self.keys):  # untouched pages cost no memory until written
            self.keys = np.zeros(self.k + self.k // 2)
            self.values = np.zeros(self.k + self.k // 2)
        while len(keys):
            if self.cut < np.inf:
                below = keys < self.cut
                if not below.all():  # (the native pass offers only keys below its cut)
                    values, keys = values[below], keys[below]
            take = min(len(keys), len(self.keys) - self.n)
            self.keys[self.n:self.n + take] = keys[:take]
            self.values[self.n:self.n + take] = values[:take]
            self.n += take
            keys, values = keys[take:], values[take:]
            if self.n == len(self.keys):
                self._prune()

    def _prune(self) -> None:
        keep = np.argpartition(self.keys[:self.n], self.k - 1)[:self.k]
        kept_keys, kept_values = self.keys[keep], self.values[keep]
        self.keys[:self.k], self.values[:self.k] = kept_keys, kept_values
        self.n = self.k
        self.cut = float(kept_keys.max())

    def sample(self) -> np.ndarray:
        if self.n > self.k:
            keys = self.keys[:self.n]
            kth = np.partition(keys, self.k - 1)[self.k - 1]
            below = keys <= kth
            if int(below.sum()) == self.k:  # the k smallest (keys are distinct hashes)
                return self.values[:self.n][below]
            self._prune()
        return self.values[:self.n].copy()


class _Moments:
    """Exact train moments of one numerical field, and a bounded uniform sample of its
    values (the rows with the smallest hashes)."""

    def __init__(self) -> None:
        self.n, self.mean, self.m2 = 0, 0.0, 0.0
        self.sample = _BottomK(SAMPLE_ROWS)

    def add(self, values: np.ndarray, keys: np.ndarray | None,
            pick: np.ndarray | None = None) -> None:
        """Moments of ``values``' finite entries; the sample is offered those at ``pick``
        (all when None: a caller that knows the sample's cut passes the rows below it),
        nothing when ``keys`` is None (a caller that offers the sample rows itself)."""
        x, k = values, keys
        finite = None
        if np.isnan(x.sum()):  # a NaN anywhere makes the sum NaN
            finite = ~np.isnan(x)
            x = x[finite]
            if pick is None and k is not None:
                k = k[finite]
        if k is None:
            pass
        elif pick is not None:
            sx, sk = values[pick], k[pick]
            if finite is not None:
                ok = finite[pick]
                sx, sk = sx[ok], sk[ok]
        else:
            sx, sk = x, k
        if k is not None:
            self.sample.add(sx, sk)
        if not x.size:
            return
        n, mean = x.size, float(x.mean())
        delta = mean - self.mean
        total = self.n + n
        d = x - mean
        # einsum, not ``d @ d``: BLAS's threaded dot spins against torch's threads (11 ms
        # against 0.05 ms for 200k values once torch is imported)
        self.m2 += float(np.einsum("i,i->", d, d)) + delta**2 * self.n * n / total
        self.mean += delta * n / total
        self.n = total

    def check(self, f: Field) -> None:
        if self.n == 0:
            raise DataError(f"numerical field {f.name!r} has no values in train")

    def scale(self) -> tuple[float, float]:
        """The mean and standard deviation ``fit`` sets (``fit_numerical``'s rule)."""
        return self.mean, float(np.sqrt(self.m2 / self.n)) or 1.0

    def fit(self, f: Field) -> None:
        self.check(f)
        fit_numerical(f, self.mean, float(np.sqrt(self.m2 / self.n)), self.sample.sample())


# ---------------------------------------------------------------- writing
def npy_header(dtype: np.dtype, shape: tuple[int, ...]) -> bytes:
    """A version 1.0 ``.npy`` header of exactly ``_HEADER_BYTES`` bytes (the dictionary
    padded with spaces), so a file's rows can be written before their count is known."""
    descr = np.lib.format.dtype_to_descr(np.dtype(dtype))
    dims = tuple(int(s) for s in shape)
    text = f"{{'descr': {descr!r}, 'fortran_order': False, 'shape': {dims!r}, }}"
    body = text.encode("latin1")
    pad = _HEADER_BYTES - 10 - len(body) - 1
    if pad < 0:
        raise ValueError(f"shape {shape} does not fit a {_HEADER_BYTES}-byte .npy header")
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", _HEADER_BYTES - 10) + body + \
        b" " * pad + b"\n"


def _write_bytes(fh: Any, arr: np.ndarray) -> None:
    if arr.size:  # an empty block (e.g. no categorical column) has no bytes to cast
        fh.write(memoryview(np.ascontiguousarray(arr)).cast("B"))


class _NpyFile:
    """An ``.npy`` file written a block of rows at a time; ``close`` writes its header."""

    def __init__(self, path: Path, first: np.ndarray, dtype: Any = None) -> None:
        self.path = path
        self.dtype = np.dtype(dtype or first.dtype)
        self.cast: np.ndarray | None = None
        self.tail = first.shape[1:]
        self.rows = 0
        self.fh = open(path, "wb")  # noqa: SIM115 (closed in close or abort)
        self.fh.write(b"\0" * _HEADER_BYTES)

    def append(self, arr: np.ndarray) -> None:
        if arr.dtype != self.dtype:  # cast through a buffer kept for the next block
            if self.cast is None or len(self.cast) < len(arr):
                self.cast = np.empty(arr.shape, self.dtype)
            np.copyto(self.cast[:len(arr)], arr, casting="unsafe")
            arr = self.cast[:len(arr)]
        _write_bytes(self.fh, arr)
        self.rows += len(arr)

    def widen(self, dtype: Any) -> None:
        """Rewrite the rows written so far in the wider ``dtype`` and go on in it."""
        self.fh.close()
        old = np.fromfile(self.path, self.dtype, offset=_HEADER_BYTES)
        self.dtype = np.dtype(dtype)
        self.fh = open(self.path, "wb")  # noqa: SIM115 (closed in close or abort)
        self.fh.write(b"\0" * _HEADER_BYTES)
        _write_bytes(self.fh, old.astype(self.dtype))

    def close(self) -> None:
        self.fh.seek(0)
        self.fh.write(npy_header(self.dtype, (self.rows, *self.tail)))
        self.fh.close()

    def abort(self) -> None:
        self.fh.close()


class _ShardWriter:
    """Appends one split's encoded rows to its open shard files, ``rows`` rows a shard."""

    def __init__(self, folder: Path, rows: int) -> None:
        self.folder = folder
        self.rows = rows
        self.files: dict[str, _NpyFile] = {}
        self.current = 0  # rows in the open shard
        self.shards: list[int] = []
        folder.mkdir(parents=True, exist_ok=True)

    def add(self, arrays: dict[str, np.ndarray], cat_top: int = 1 << 31) -> None:
        """Append rows; the categorical ids are all below ``cat_top``, so a shard whose
        ids all fit 16 bits is written as uint16 (half the bytes), and widened to int32
        in place if a later block's ids do not fit."""
        n = len(arrays["label"])
        narrow = cat_top <= 1 << 16
        start = 0
        while start < n:
            if not self.files:
                index = len(self.shards)
                self.files = {
                    k: _NpyFile(self.folder / f"{index:05d}.{k}.npy", a,
                                np.uint16 if k == "cat" and narrow else None)
                    for k, a in arrays.items()}
            elif not narrow and "cat" in self.files and self.files["cat"].dtype == np.uint16:
                self.files["cat"].widen(np.int32)
            take = min(n - start, self.rows - self.current)
            for k, a in arrays.items():
                self.files[k].append(a[start:start + take])
            self.current += take
            start += take
            if self.current == self.rows:
                self._close_shard()

    def close(self) -> None:
        if self.files:
            self._close_shard()

    def abort(self) -> None:
        for f in self.files.values():
            f.abort()
        self.files = {}

    def _close_shard(self) -> None:
        for f in self.files.values():
            f.close()
        self.shards.append(self.current)
        self.files, self.current = {}, 0


# ---------------------------------------------------------------- building
@dataclass
class BuildSettings:
    seed: int
    split: str = "random"
    min_count: int = 1
    hash_threshold: int = 1_000_000
    shard_rows: int | None = None  # None: ``SHARD_ROWS``
    extra: tuple[str, ...] = ()  # test-split columns kept beside the encoded ones (truth)


def build_cache(source: Any, schema: Schema, folder: Path, settings: BuildSettings,
                time_cuts: tuple[float, float] | None = None,
                progress: bool = False) -> dict[str, Any]:
    """Encode ``source`` into ``folder`` (see the module docstring) and fit ``schema``;
    returns the info written to ``info.json``. ``time_cuts`` are the time column's 80% and
    90% points for a time split."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_builds(folder.parent)
    tmp = folder.parent / f".tmp-{folder.name}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        try:
            info = _build(source, schema, tmp, settings, time_cuts, progress)
        except _Redo:
            shutil.rmtree(tmp, ignore_errors=True)
            info = _build(source, schema, tmp, settings, time_cuts, progress, native_ok=False)
        if folder.exists():
            shutil.rmtree(folder)
        os.replace(tmp, folder)
        return info
    except OSError as e:
        shutil.rmtree(tmp, ignore_errors=True)
        if e.errno == errno.ENOSPC:
            raise DataError(
                f"no space left on the device while writing the encoded cache under "
                f"{folder.parent}; free space or point AUTODRS_CACHE elsewhere") from e
        raise
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def source_batches(source: Any, columns: list[str],
                   dictionary: list[str]) -> Iterator[pa.RecordBatch | pa.Table]:
    """The source's rows as Arrow batches of ``columns``: read directly where the source
    can (``Source.arrow``; text columns in ``dictionary`` may arrive dictionary-encoded),
    else converted from its Polars chunks."""
    if getattr(source, "arrow", None) is not None:
        yield from source.arrow(columns, dictionary)
        return
    for chunk in source.chunks():
        if chunk.height:
            _check_names(chunk.columns, columns)
            yield chunk.select(columns).to_arrow()


def _column(batch: pa.RecordBatch | pa.Table, name: str) -> pa.Array:
    col = batch.column(name)
    if isinstance(col, pa.ChunkedArray):
        col = col.chunk(0) if col.num_chunks == 1 else col.combine_chunks()
    return col


def _series(arr: pa.Array) -> pl.Series:
    s = pl.from_arrow(arr)
    assert isinstance(s, pl.Series)
    return s


@dataclass
class _State:
    """What the pass accumulates besides the shards."""

    cats: list[Field]
    nums: list[Field]
    seqs: list[Field]
    vocabs: dict[str, _Vocab]
    groups: _Vocab | None
    moments: dict[str, _Moments]
    longest: dict[str, int]
    writers: dict[str, _ShardWriter]
    extra: dict[str, _NpyFile | None] = field(default_factory=dict)
    rows: int = 0
    positives: float = 0.0
    task_positives: np.ndarray | None = None  # per label, when there are several
    buffers: dict[str, np.ndarray] = field(default_factory=dict)
    # the native pass: the train numbers and hashes of a chunk a read left unfinished
    open_chunk: list[np.ndarray] | None = None

    def buffer(self, key: str, shape: tuple[int, ...], dtype: Any) -> np.ndarray:
        """An uninitialised array reused from chunk to chunk (its rows are written to the
        shards before the next chunk): a fresh one each chunk would be memory the
        allocator hands back to the system and takes again, a page fault per 4 KiB."""
        buf = self.buffers.get(key)
        if buf is None or len(buf) < shape[0] or buf.shape[1:] != shape[1:]:
            buf = self.buffers[key] = np.empty(shape, dtype)
        return buf[:shape[0]]


def _build(source: Any, schema: Schema, tmp: Path, st: BuildSettings,
           time_cuts: tuple[float, float] | None, progress: bool,
           native_ok: bool = True) -> dict[str, Any]:
    cats = [f for f in schema.fields if f.kind == "categorical"]
    nums = [f for f in schema.fields if f.kind == "numerical"]
    seqs = [f for f in schema.fields if f.kind == "sequence"]
    state = _State(
        cats, nums, seqs, vocabs={f.name: _Vocab() for f in [*cats, *seqs]},
        groups=_Vocab() if schema.group else None,
        moments={f.name: _Moments() for f in nums},
        longest=dict.fromkeys((f.name for f in seqs), 0),
        writers={s: _ShardWriter(tmp / s, st.shard_rows or SHARD_ROWS) for s in SPLITS},
        extra=dict.fromkeys(st.extra))
    wanted = [*schema.field_names, *schema.tasks, schema.group,
              schema.time if time_cuts is not None else None, *st.extra]
    columns = list(dict.fromkeys(c for c in wanted if c is not None))
    t0, last_print = time.perf_counter(), 0.0
    native = _fast.plan(source, schema, st.split, time_cuts, LUT_RANGE, st.extra) \
        if native_ok and os.environ.get("AUTODRS_NATIVE_PASS", "1") != "0" else None
    try:
        if native is not None:
            _native_pass(native, schema, st, state, progress, t0)
        else:
            batches = source_batches(source, columns, [f.name for f in cats])
            for batch in prefetch(batches):
                if batch.num_rows:
                    _encode_chunk(batch, schema, st, time_cuts, state)
                if progress:
                    last_print = _progress(state.rows, t0, last_print)
        for w in state.writers.values():
            w.close()
        for f in state.extra.values():
            if f is not None:
                f.close()
    except BaseException:
        for w in state.writers.values():
            w.abort()
        for f in state.extra.values():
            if f is not None:
                f.abort()
        raise
    if state.rows == 0:
        raise DataError(f"{source.name} has no data rows")
    sizes = {s: sum(w.shards) for s, w in state.writers.items()}
    for f in [*cats, *seqs]:
        if not state.vocabs[f.name].seen:
            raise DataError(f"column {f.name!r} is entirely null")
    for s, size in sizes.items():
        if size == 0:
            raise DataError(f"the {s} split of {source.name} is empty: {state.rows} rows are "
                            "too few to split 80/10/10")

    moments = [state.moments[f.name] for f in nums]
    for f, m in zip(nums, moments, strict=True):
        m.check(f)
    # the numbers' bucket boundaries (quantiles of their samples; NumPy's partition
    # releases the GIL) are fitted on threads, one a field, while the shards' numbers are
    # standardised and the vocabularies fitted here
    with ThreadPoolExecutor(min(4, max(1, len(nums)))) as pool:
        fitted = [pool.submit(m.fit, f) for f, m in zip(nums, moments, strict=True)]
        _finalise(tmp, state.writers, [m.scale() for m in moments])
        remaps = {f.name: state.vocabs[f.name].fit(f, st.min_count, st.hash_threshold)
                  for f in [*cats, *seqs]}
        for done in fitted:
            done.result()
    for f in seqs:
        f.max_len = seq_width(state.longest[f.name], MAX_SEQ_LEN)
    schema.fitted = True
    offsets = np.cumsum([0, *(len(remaps[f.name]) for f in cats)])
    np.save(tmp / "remap-cat.npy", np.concatenate(
        [remaps[f.name] for f in cats] or [np.zeros(0, np.int32)]).astype(np.int32))
    for f in seqs:
        np.save(tmp / f"remap-seq-{f.name}.npy", remaps[f.name])
    files = {str(p.relative_to(tmp)): p.stat().st_size
             for p in sorted(tmp.rglob("*.npy"))}
    info: dict[str, Any] = {
        "rows": state.rows, "sizes": sizes, "positive_rate": state.positives / state.rows,
        **({"positive_rates": (state.task_positives / state.rows).tolist()}
           if state.task_positives is not None else {}),
        "shards": {s: w.shards for s, w in state.writers.items()},
        "seq_names": [f.name for f in seqs], "has_group": state.groups is not None,
        "cat_offsets": [int(o) for o in offsets[:-1]],
        "seq_widths": {f.name: f.max_len for f in seqs},
        "files": files, "bytes": int(sum(files.values())),
        "seconds": round(time.perf_counter() - t0, 3),
    }
    schema.save(tmp / "schema.json")
    (tmp / "info.json").write_text(json.dumps(info))
    return info


def _encode_chunk(batch: pa.RecordBatch | pa.Table, schema: Schema, st: BuildSettings,
                  time_cuts: tuple[float, float] | None, state: _State) -> None:
    """Encode one chunk, rows grouped by split, and append each split's block."""
    n = batch.num_rows
    if state.rows == 0:
        _check_names(batch.schema.names, [*schema.field_names, *schema.tasks])
    rows = state.buffer("rows", (n,), np.uint64)
    rows[:] = np.arange(state.rows, state.rows + n, dtype=np.uint64)
    # the random split's hash also orders rows for the numerical sample: among train rows
    # it is uniform and independent of their values, so the smallest are a uniform sample
    u = row_hash(rows, st.seed, scratch=(state.buffer("z", (n,), np.uint64),
                                         state.buffer("t", (n,), np.uint64)))
    if time_cuts is not None:
        t = _time_values(_series(_column(batch, schema.time or "")), schema.time)
        which = (t >= time_cuts[0]).astype(np.uint8) + (t >= time_cuts[1]).astype(np.uint8)
    else:
        which = split_of(u)
    order = np.argsort(which, kind="stable")  # train rows, then valid, then test
    ends = np.cumsum(np.bincount(which, minlength=3))
    n_train = int(ends[0])
    if schema.labels:  # several tasks: uint8 [rows, tasks]
        label = np.stack([_labels(_column(batch, t), t) for t in schema.labels], 1)[order]
        counts = label.sum(0, dtype=np.int64)
        state.task_positives = counts if state.task_positives is None \
            else state.task_positives + counts
        state.positives += float(counts[0])
    else:
        label = _labels(_column(batch, schema.label), schema.label)[order]
        state.positives += float(label.sum(dtype=np.int64))
    arrays: dict[str, np.ndarray] = {"label": label}
    # each field's ids go to a contiguous row of ``cols``, then ``cat`` takes them all in
    # one transposing copy: written straight into a (strided) column of ``cat``, the ids
    # cost 8 times as long as contiguous ones
    width = len(state.cats)
    cols = state.buffer("cat-cols", (width * n,), np.int32).reshape(width, n)
    for j, f in enumerate(state.cats):
        state.vocabs[f.name].encode(_column(batch, f.name), order, n_train, out=cols[j])
    cat = state.buffer("cat", (n, width), np.int32)
    cat[...] = cols.T
    arrays["cat"] = cat
    cat_top = _P_FIRST + max((len(state.vocabs[f.name]) for f in state.cats), default=0)
    if state.nums:
        num = state.buffer("num", (n, len(state.nums)), np.float64)
        keys = u[order[:n_train]]
        for k, f in enumerate(state.nums):
            np.take(_numbers(_column(batch, f.name), f), order, out=num[:, k], mode="clip")
            state.moments[f.name].add(num[:n_train, k], keys)
        arrays["num-raw"] = num
    for f in state.seqs:
        arrays[f"seq-{f.name}"], most = _encode_lists(
            _series(_column(batch, f.name))[order], f, state.vocabs[f.name], n_train)
        state.longest[f.name] = max(state.longest[f.name], most)
    if state.groups is not None:
        g = _column(batch, schema.group or "")
        if not (pa.types.is_string(g.type) or pa.types.is_large_string(g.type)):
            g = _series(g).cast(pl.String).to_arrow()
        arrays["group"] = state.groups.encode(pc.fill_null(g, ""), order, n_train) \
            .astype(np.int64)
    starts = [0, *ends[:-1]]
    for s, w in enumerate(state.writers.values()):
        if ends[s] > starts[s]:
            w.add({k: v[starts[s]:ends[s]] for k, v in arrays.items()}, cat_top)
    for key, fh in state.extra.items():
        values = _column(batch, key).to_numpy(zero_copy_only=False)[order][ends[1]:]
        if fh is None:
            fh = state.extra[key] = _NpyFile(
                state.writers["test"].folder.parent / f"extra-{key}-test.npy", values)
        fh.append(values)
    state.rows += n


def _progress(rows: int, t0: float, last: float) -> float:
    """Print the rows read so far at most every 10 s; the time of the last print."""
    now = time.perf_counter()
    if now - last <= 10:
        return last
    print(f"encoding: {rows:,} rows read ({rows / (now - t0):,.0f} rows/s)", flush=True)
    return now


def _native_pass(p: _fast.Plan, schema: Schema, st: BuildSettings, state: _State,
                 progress: bool, t0: float) -> None:
    """The pass of ``fastparquet``: Polars reads each row group and computes the
    provisional ids on its threads while the previous read's rows are ordered by split
    here (``_group``, mostly the hash); of the read before, a worker thread counts the
    train ids, keeps the numbers' moments and offers the samples their rows
    (``_absorb``), and another gathers every split's block and appends it to its shards
    (``_write``; the writes release the GIL). Each worker queues at most one read. (With
    the gathers, counts and moments on this thread, it bounded the pass, and at a load of
    10 on 2 cores the pass was no faster than ``partition_by`` with one second thread.)
    The fields' ``_Vocab`` are then set to their value ranges with those counts
    (``_Vocab.fit`` as for the general pass)."""
    names = [f.name for f in state.cats]
    counts = {n: np.zeros(p.ranges[n][1] - p.ranges[n][0] + 1 + _P_FIRST, np.int64)
              for n in names}
    unseen = [j for j, n in enumerate(names) if p.nulls[n]]  # may yet be entirely null
    cat_top = max((len(c) for c in counts.values()), default=_P_FIRST)
    # the numbers' sample takes the train rows of smallest hash: with the file's row count
    # known, rows above a cut that leaves a wide margin (8 standard deviations) never enter
    cut = (SAMPLE_ROWS + 8 * SAMPLE_ROWS**0.5 + 64) / max(p.total, 1)
    if cut < 0.8:
        for m in state.moments.values():
            m.sample.cut = cut
    last_print = 0.0
    with _Worker(1) as worker, _Worker(1) as writer:
        for df in _fast.batches(p, schema, st.extra):
            if not df.height:
                continue
            block = _group(df, schema, st, state)
            state.rows += df.height
            worker.submit(_absorb, block, names, counts, unseen, cut, state)
            writer.submit(_write, block, names, cat_top, state)
            if progress:
                last_print = _progress(state.rows, t0, last_print)
    if state.open_chunk is not None:  # the file's last chunk
        _add_chunk(state.open_chunk, state)
    for m in state.moments.values():
        if m.sample.n < m.sample.k and m.n > m.sample.n:  # the cut left too few (NaNs)
            raise _Redo
    for j, name in enumerate(names):
        v = state.vocabs[name]
        lo, hi = p.ranges[name]
        v.mode, v.base = "lut", lo
        v.ints = np.arange(lo, hi + 1, dtype=np.int64)
        v.counts = counts[name]
        v.seen = j not in unseen


@dataclass
class _Block:
    """One read of the native pass and the order that groups its rows by split (train,
    valid, test) and, within a split, by chunk of ``CHUNK_ROWS`` rows (so in file order)."""

    df: pl.DataFrame  # the read, as Polars gave it
    u: np.ndarray  # each row's hash
    label: np.ndarray  # uint8, in file order
    order: np.ndarray  # the rows grouped
    ends: list[int]  # where each split's rows end in ``order``
    chunks: list[int]  # train rows of each of the read's chunks (``readers.CHUNK_ROWS``)
    closed: bool  # the read ends where a chunk ends (else the next read goes on with it)


def _group(df: pl.DataFrame, schema: Schema, st: BuildSettings, state: _State) -> _Block:
    """A read's order by (split, chunk): the rows' hashes and one stable radix argsort of
    a uint8 key. The gathers this order asks for are made on the two worker threads
    (``_absorb``: the train numbers and the valid and test ids; ``_write``: every shard
    array), so this thread, which the other two wait on, does little beside the hash.
    (Polars' ``partition_by`` took more CPU and gave parts that each needed converting.)"""
    from autodrs.data import readers

    n, start, chunk = df.height, state.rows, readers.CHUNK_ROWS
    if len(state.buffers.get("arange", ())) < n:
        state.buffers["arange"] = np.arange(n, dtype=np.uint64)
    rows = np.add(state.buffers["arange"][:n], np.uint64(start),
                  out=state.buffer("rows", (n,), np.uint64))
    u = row_hash(rows, st.seed, scratch=(state.buffer("z", (n,), np.uint64),
                                         state.buffer("t", (n,), np.uint64)))
    key = split_of(u)
    cuts = list(range(chunk - start % chunk, n, chunk))  # where the read's next chunks start
    k = len(cuts) + 1
    if k > 1:  # key = split * k + chunk within the read: split-major, chunks in file order
        key = key.astype(np.uint8 if 3 * k <= 256 else np.uint16)
        key *= k
        for c in cuts:
            key[c:] += 1
    order = np.argsort(key, kind="stable")
    sizes = np.bincount(key, minlength=3 * k).reshape(3, k)
    ends = [int(e) for e in np.cumsum(sizes.sum(1))]
    label = _fast.labels(df[schema.label], schema.label)
    state.positives += float(label.sum(dtype=np.int64))
    return _Block(df, u, label, order, ends, [int(x) for x in sizes[0]],
                  (start + n) % chunk == 0)


def _absorb(b: _Block, names: list[str], counts: dict[str, np.ndarray], unseen: list[int],
            cut: float, state: _State) -> None:
    """On a worker thread: count a read's train ids (every row's, counted on Polars' own
    columns, less the valid and test rows', fewer), add its train numbers to the moments
    chunk by chunk (as the general pass adds them) and offer the samples the rows of hash
    below ``cut`` in file order (a sample is a set, the train rows of smallest hash,
    whatever the order; every row below the cut is a train row)."""
    n, n_train = b.df.height, b.ends[0]
    for j, name in enumerate(names):
        col, c = b.df[name].to_numpy(), counts[name]  # no copy: the frame's own
        c += _bincount(col, len(c))
        if n_train < n:
            c -= _bincount(np.take(col, b.order[n_train:], mode="clip"), len(c))
        if j in unseen and (col != _P_MISSING).any():
            unseen.remove(j)
    if not state.nums:
        return
    train = []
    for j, f in enumerate(state.nums):
        out = state.buffer(f"absorb-{j}", (n,), np.float64)[:n_train]
        train.append(np.take(b.df[f.name].to_numpy(), b.order[:n_train], out=out,
                             mode="clip"))
    at, last = 0, len(b.chunks) - 1
    for j, m in enumerate(b.chunks):  # each chunk's train numbers, whole
        values = [v[at:at + m] for v in train]
        at += m
        if j == 0 and state.open_chunk is not None:  # the rest of the last read's
            values = [np.concatenate(p) for p in zip(state.open_chunk, values, strict=True)]
            state.open_chunk = None
        if j == last and not b.closed:  # held until the next read ends the chunk
            state.open_chunk = [v.copy() for v in values]
        else:
            _add_chunk(values, state)
    below = np.flatnonzero(b.u < min(cut, 0.8))
    keys = b.u[below]
    for f in state.nums:
        v = b.df[f.name].to_numpy()[below]
        if np.isnan(v.sum()):
            finite = ~np.isnan(v)
            state.moments[f.name].sample.add(v[finite], keys[finite])
        else:
            state.moments[f.name].sample.add(v, keys)


def _bincount(ids: np.ndarray, size: int) -> np.ndarray:
    """``np.bincount(ids, minlength=size)`` for ids below ``size``: through PyTorch's, which
    counts 16- and 32-bit ids as they are (NumPy's first copies them to int64; 4.7 times
    slower on 16-bit ids)."""
    if ids.dtype == np.uint16 and size <= 1 << 15:
        ids = ids.view(np.int16)
    if ids.dtype in (np.int16, np.int32):
        with warnings.catch_warnings():  # Polars' arrays are read-only; nothing writes here
            warnings.filterwarnings("ignore", "The given NumPy array is not writable")
            tensor = torch.from_numpy(ids)
        return torch.bincount(tensor, minlength=size).numpy()
    return np.bincount(ids, minlength=size)


def _add_chunk(values: list[np.ndarray], state: _State) -> None:
    """One chunk's train numbers (each field's) into the moments."""
    for f, v in zip(state.nums, values, strict=True):
        if len(v):
            state.moments[f.name].add(v, None)


def _write(b: _Block, names: list[str], cat_top: int, state: _State) -> None:
    """On a worker thread of its own (the writes release the GIL): gather a read's label,
    ids (row-major) and numbers in split order into buffers kept from read to read (fresh
    arrays each read cost a page fault per 4 KiB) and append each split's rows to its
    shards."""
    n, order = b.df.height, b.order
    # mode "clip": ``out`` is written directly (the default mode buffers it); the indices
    # are a permutation, so nothing is clipped
    grouped = {"label": np.take(b.label, order, out=state.buffer("write-label", (n,), np.uint8),
                                mode="clip")}
    if names:
        ids = b.df.select(names).to_numpy(order="c")
        grouped["cat"] = np.take(ids, order, axis=0, mode="clip",
                                 out=state.buffer("write-cat", ids.shape, ids.dtype))
    else:
        grouped["cat"] = np.zeros((n, 0), np.int32)
    if state.nums:
        raw = state.buffer("write-num", (n, len(state.nums)), np.float64)
        col = state.buffer("write-col", (n,), np.float64)
        for j, f in enumerate(state.nums):
            raw[:, j] = np.take(b.df[f.name].to_numpy(), order, out=col, mode="clip")
        grouped["num-raw"] = raw
    begin = 0
    for s, w in enumerate(state.writers.values()):
        if b.ends[s] > begin:
            w.add({k: a[begin:b.ends[s]] for k, a in grouped.items()}, cat_top)
        begin = b.ends[s]
    for key in state.extra:
        values = b.df[f"__extra_{key}"].to_numpy()[order[b.ends[1]:]]
        fh = state.extra.get(key)
        if fh is None:
            fh = state.extra[key] = _NpyFile(
                state.writers["test"].folder.parent / f"extra-{key}-test.npy", values)
        fh.append(values)


class _Worker:
    """One background thread running submitted calls in order, at most ``depth`` waiting
    (so memory stays at a few batches); its first error is raised in the submitting thread
    at the next ``submit`` or on leaving the ``with`` block."""

    def __init__(self, depth: int = 2) -> None:
        self.q: queue.Queue[Any] = queue.Queue(maxsize=depth)
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while True:
            item = self.q.get()
            if item is None:
                return
            if self.error is None:
                try:
                    item[0](*item[1])
                except BaseException as e:  # handed to the submitting thread
                    self.error = e

    def submit(self, fn: Any, *args: Any) -> None:
        if self.error is not None:
            raise self.error
        self.q.put((fn, args))

    def __enter__(self) -> _Worker:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.q.put(None)
        self.thread.join()
        if self.error is not None and exc[0] is None:
            raise self.error


class _Redo(Exception):
    """The native pass cannot give the general pass's result; build with the latter."""


def _labels(arr: pa.Array, name: str) -> np.ndarray:
    """The label as uint8 0/1; anything else is ``check_label``'s clear error."""
    return _fast.labels(_series(arr), name)


def _numbers(arr: pa.Array, f: Field) -> np.ndarray:
    """A numerical field's values as float64, NaN where missing (``Schema``'s rules)."""
    if pa.types.is_floating(arr.type) and f.transform == "none":
        x = arr.to_numpy(zero_copy_only=False).astype(np.float64, copy=False)
        return x
    return _numeric(_series(arr), f).to_numpy().astype(np.float64)


def _encode_lists(col: pl.Series, f: Field, vocab: _Vocab,
                  n_train: int) -> tuple[np.ndarray, int]:
    """Provisional ids of a sequence field, padded to ``MAX_SEQ_LEN`` (its last items kept);
    the longest train
    list. Rows come grouped by split, train first; train counts include every token, as
    ``Schema.fit`` counts them."""
    lists = _seq_lists(col, f.sep)
    n = len(lists)
    lengths = lists.list.len().fill_null(0).to_numpy().astype(np.int64)
    out = np.zeros((n, MAX_SEQ_LEN), np.int32)
    tokens = lists.explode().drop_nulls()
    if len(tokens):
        pids = vocab.encode(tokens.to_arrow(), None, int(lengths[:n_train].sum()))
        rows = np.repeat(np.arange(n), lengths)
        # a longer list keeps its last items (a history's most recent)
        skip = np.maximum(lengths - MAX_SEQ_LEN, 0)
        pos = np.arange(len(rows)) - np.repeat(np.cumsum(lengths) - lengths + skip, lengths)
        keep = pos >= 0
        out[rows[keep], pos[keep]] = pids[keep]
    out[lengths == 0, 0] = _P_MISSING
    most = int(lengths[:n_train].max()) if n_train else 0
    return out, most


def _finalise(tmp: Path, writers: dict[str, _ShardWriter], scale: list[tuple[float, float]],
              block: int = 1 << 17) -> None:
    """Standardise every shard's raw numbers into its float32 ``num`` file with each
    field's (mean, std) in ``scale``, a block of rows at a time, through buffers kept from
    block to block (a missing number, NaN, is 0: the train mean)."""
    mean = np.array([m for m, _ in scale])
    std = np.array([s for _, s in scale])
    width = len(scale)
    buf = np.empty((block, width), np.float64)
    out = np.empty((block, width), np.float32)
    for w in writers.values():
        for i, n in enumerate(w.shards):
            base = w.folder / f"{i:05d}"
            raw_path = Path(f"{base}.num-raw.npy")
            if not raw_path.exists():
                np.save(f"{base}.num.npy", np.zeros((n, 0), np.float32))
                continue
            dst = _NpyFile(Path(f"{base}.num.npy"), np.zeros((0, width), np.float32))
            try:
                with open(raw_path, "rb") as fh:
                    fh.seek(_HEADER_BYTES)
                    for start in range(0, n, block):
                        m = min(block, n - start)
                        z = buf[:m]
                        if fh.readinto(memoryview(z).cast("B")) != z.nbytes:
                            raise DataError(f"cache shard {raw_path} is truncated")
                        np.subtract(z, mean, out=z)
                        np.divide(z, std, out=z)
                        o = out[:m]
                        np.copyto(o, z, casting="same_kind")
                        np.copyto(o, 0.0, where=np.isnan(o))
                        dst.append(o)
                dst.close()
            except BaseException:
                dst.abort()
                raise
            raw_path.unlink()


def _check_names(present: list[str], needed: list[str]) -> None:
    missing = [n for n in needed if n not in present]
    if missing:
        raise DataError(f"columns missing from the table: {', '.join(missing)}")


def _time_values(col: pl.Series, time_col: str | None) -> np.ndarray:
    if time_col is None:
        raise DataError("a time split needs a time column (--time COL)")
    if col.dtype.is_temporal():
        col = col.dt.epoch("us")
    values = col.cast(pl.Float64, strict=False)
    if values.null_count():
        raise DataError(f"time column {time_col!r} has missing or non-numeric values")
    return values.to_numpy()


def time_cut_points(source: Any, time_col: str) -> tuple[float, float]:
    """The 80% and 90% points of the time column: exact up to ``SAMPLE_ROWS`` rows, from
    a uniform sample of that size beyond. Rows at a cut go to the later split."""
    sample = _BottomK(SAMPLE_ROWS)
    offset = 0
    for chunk in source.chunks():
        if time_col not in chunk.columns:
            raise DataError(f"time column {time_col!r} not found; columns are {chunk.columns}")
        t = _time_values(chunk[time_col], time_col)
        sample.add(t, row_hash(np.arange(offset, offset + len(t), dtype=np.uint64), 0, salt=2))
        offset += len(t)
    values = sample.sample()
    if not values.size:
        raise DataError(f"{source.name} has no data rows")
    ordered = np.sort(values)
    n = len(ordered)
    return float(ordered[int(n * 0.8)]), float(ordered[min(int(n * 0.9), n - 1)])


def _remove_stale_builds(parent: Path) -> None:
    """Remove temporary folders of builds whose process is gone (killed mid-build)."""
    for p in parent.glob(".tmp-*"):
        pid = p.name.rsplit("-", 1)[-1]
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(p, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# ---------------------------------------------------------------- reading
def read_info(folder: Path) -> dict[str, Any] | None:
    """The info of a complete, intact cache folder; None when it is incomplete or a file is
    missing or of the wrong size (the caller rebuilds it)."""
    try:
        info = json.loads((folder / "info.json").read_text())
        for rel, size in info["files"].items():
            if (folder / rel).stat().st_size != size:
                return None
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return info


@dataclass
class _Piece:
    """Rows [start, stop) of one shard."""

    base: str
    start: int
    stop: int

    def __len__(self) -> int:
        return self.stop - self.start


@dataclass
class Remap:
    """Provisional -> final ids of a cache: one table for every categorical field (field
    ``j``'s from ``offsets[j]``) and one per sequence field, with its padded width."""

    cat: np.ndarray
    offsets: np.ndarray
    seq: dict[str, np.ndarray]
    widths: dict[str, int]

    @classmethod
    def open(cls, folder: Path, info: dict[str, Any]) -> Remap:
        seq = {s: np.load(folder / f"remap-seq-{s}.npy") for s in info["seq_names"]}
        return cls(np.load(folder / "remap-cat.npy"),
                   np.asarray(info["cat_offsets"], np.int32), seq,
                   {s: int(w) for s, w in info["seq_widths"].items()})

    def final(self, key: str, arr: np.ndarray, block: int = 1 << 16) -> np.ndarray:
        """``arr`` (a shard column ``key``, owned by the caller) with final ids, mapped in
        place a block of rows at a time; other columns as they are."""
        if key == "cat":
            for start in range(0, len(arr), block):
                part = arr[start:start + block]
                part += self.offsets
                part[...] = self.cat[part]
            return arr
        if key.startswith("seq-"):
            name = key[4:]
            return self.seq[name][arr[:, :self.widths[name]]]
        return arr


def _npy_layout(path: str) -> tuple[np.dtype, tuple[int, ...], int]:
    """The dtype, shape and data offset of a C-order ``.npy`` file."""
    with open(path, "rb") as fh:
        version = np.lib.format.read_magic(fh)
        read = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                else np.lib.format.read_array_header_2_0)
        shape, fortran, dtype = read(fh)
        if fortran:
            raise DataError(f"cache shard {path} is not in C order; delete the cache folder")
        return dtype, shape, fh.tell()


class DiskData:
    """One split read from its shards: the interface of ``EncodedData`` (``len``,
    ``batches``, ``label``, ``group``, ``shard``) in bounded memory.

    Shuffled batches follow shard order plus a shuffle buffer: each epoch draws a random
    order of the shards, fills a buffer of at least ``shuffle_rows`` rows from them, shuffles
    the buffer and cuts it into batches, while a background thread reads the next buffer.
    Data that fits in one buffer is fully shuffled."""

    def __init__(self, pieces: list[_Piece], seq_names: list[str], has_group: bool,
                 remap: Remap, shuffle_rows: int = SHUFFLE_ROWS) -> None:
        self.pieces = pieces
        self.seq_names = seq_names
        self.has_group = has_group
        self.remap = remap
        self.shuffle_rows = shuffle_rows
        self._label: torch.Tensor | None = None
        self._group: torch.Tensor | None = None

    @classmethod
    def open(cls, folder: Path, split: str, info: dict[str, Any],
             remap: Remap | None = None) -> DiskData:
        pieces, bases = [], folder / split
        for i, n in enumerate(info["shards"][split]):
            if n:
                pieces.append(_Piece(str(bases / f"{i:05d}"), 0, n))
        return cls(pieces, list(info["seq_names"]), bool(info["has_group"]),
                   remap or Remap.open(folder, info))

    def __len__(self) -> int:
        return sum(len(p) for p in self.pieces)

    # -------------------------------------------------------- whole-column views
    @property
    def label(self) -> torch.Tensor:
        if self._label is None:
            self._label = torch.from_numpy(np.concatenate(
                [self._column(p, "label") for p in self.pieces] or [np.zeros(0, np.uint8)]
            ).astype(np.float32))
        return self._label

    @property
    def group(self) -> torch.Tensor | None:
        if not self.has_group:
            return None
        if self._group is None:
            self._group = torch.from_numpy(np.concatenate(
                [self._column(p, "group") for p in self.pieces]))
        return self._group

    def _column(self, p: _Piece, key: str) -> np.ndarray:
        return self._read_key([p], key)

    def _keys(self) -> list[str]:
        return ["cat", "num", "label", *(f"seq-{s}" for s in self.seq_names)]

    def _read(self, pieces: list[_Piece]) -> dict[str, np.ndarray]:
        return {k: self._read_key(pieces, k) for k in self._keys()}

    def _read_key(self, pieces: list[_Piece], key: str) -> np.ndarray:
        """Column ``key`` of ``pieces``, one after the other, with final ids: read straight
        into one array (no memory map, whose pages would count as the process's memory)."""
        layouts = [_npy_layout(f"{p.base}.{key}.npy") for p in pieces]
        dtype, tail = (layouts[0][0], layouts[0][1][1:]) if layouts else (np.uint8, ())
        if key == "cat":  # shards hold uint16 or int32 ids; mapped in place as int32
            dtype = np.dtype(np.int32)
        out = np.empty((sum(len(p) for p in pieces), *tail), dtype)
        width = int(np.prod(tail, dtype=np.int64))
        at = 0
        for p, (stored, _, offset) in zip(pieces, layouts, strict=True):
            # narrower ids are widened a block at a time, so the read holds one small block
            step = len(p) if stored == dtype else READ_ROWS
            with open(f"{p.base}.{key}.npy", "rb") as fh:
                fh.seek(offset + p.start * width * stored.itemsize)
                for begin in range(at, at + len(p), max(step, 1)):
                    part = out[begin:min(begin + step, at + len(p))]
                    into = part if stored == dtype else np.empty(part.shape, stored)
                    if into.nbytes and fh.readinto(memoryview(into).cast("B")) != into.nbytes:
                        raise DataError(f"cache shard {p.base}.{key}.npy is truncated; delete "
                                        "the cache folder to rebuild it")
                    if into is not part:
                        part[...] = into
            at += len(p)
        return self.remap.final(key, out)

    def _batch(self, arrays: dict[str, np.ndarray], idx: Any) -> Any:
        from autodrs.data.dataset import Batch

        return Batch(
            torch.from_numpy(arrays["cat"][idx]).long(),
            torch.from_numpy(arrays["num"][idx]),
            {s: torch.from_numpy(arrays[f"seq-{s}"][idx]).long() for s in self.seq_names},
            torch.from_numpy(arrays["label"][idx].astype(np.float32)),
        )

    # -------------------------------------------------------- batches
    def batches(self, batch_size: int, shuffle: bool = False,
                generator: torch.Generator | None = None) -> Iterator[Any]:
        if not shuffle:  # in order, read a few batches at a time
            step = batch_size * max(1, READ_ROWS // batch_size)
            for p in self.pieces:
                for begin in range(p.start, p.stop, step):
                    arrays = self._read([_Piece(p.base, begin, min(begin + step, p.stop))])
                    for start in range(0, len(arrays["label"]), batch_size):
                        yield self._batch(arrays, slice(start, start + batch_size))
            return
        order = torch.randperm(len(self.pieces), generator=generator).tolist()
        groups: list[list[_Piece]] = [[]]
        for i in order:
            if sum(len(p) for p in groups[-1]) >= self.shuffle_rows:
                groups.append([])
            groups[-1].append(self.pieces[i])
        # full batches, then the rest; a rest of one row joins the batch before it (batch
        # norm cannot normalise one row), as ``EncodedData.batches`` does. Rows left over
        # from one buffer open the next buffer's first batch; only the buffer in use and the
        # one being read are ever held.
        carry: dict[str, np.ndarray] | None = None  # fewer than batch_size rows
        pending: dict[str, np.ndarray] | None = None  # the last full batch, held back
        for arrays in prefetch(map(self._read, groups)):
            n = len(arrays["label"])
            perm = torch.randperm(n, generator=generator).numpy()
            start = 0
            if carry is not None:
                take = perm[:batch_size - len(carry["label"])]
                carry = {k: np.concatenate([carry[k], v[take]]) for k, v in arrays.items()}
                start = len(take)
                if len(carry["label"]) == batch_size:
                    if pending is not None:
                        yield self._batch(pending, slice(None))
                    pending, carry = carry, None
            full = n - (n - start) % batch_size
            for begin in range(start, full, batch_size):
                if pending is not None:
                    yield self._batch(pending, slice(None))
                pending = {k: v[perm[begin:begin + batch_size]] for k, v in arrays.items()}
            if full < n:
                carry = {k: v[perm[full:]] for k, v in arrays.items()}
            del arrays
        if pending is not None and carry is not None and len(carry["label"]) == 1:
            pending = {k: np.concatenate([pending[k], carry[k]]) for k in pending}
            carry = None
        if pending is not None:
            yield self._batch(pending, slice(None))
        if carry is not None:
            yield self._batch(carry, slice(None))

    # -------------------------------------------------------- parts
    def shard(self, rank: int, world: int) -> DiskData:
        """The rows one of ``world`` data-parallel ranks trains on: the ``rank``-th of
        ``world`` equal row ranges of every shard (disjoint, covering, balanced)."""
        if world == 1:
            return self
        pieces = []
        for p in self.pieces:
            bounds = np.linspace(p.start, p.stop, world + 1).astype(int)
            if bounds[rank + 1] > bounds[rank]:
                pieces.append(_Piece(p.base, int(bounds[rank]), int(bounds[rank + 1])))
        return DiskData(pieces, self.seq_names, self.has_group, self.remap,
                        self.shuffle_rows)

    def sample(self, rows: int, seed: int) -> Any:
        """About ``rows`` rows drawn uniformly (by row hash), in memory."""
        from autodrs.data.dataset import EncodedData

        frac = min(1.0, rows / max(1, len(self)))
        keys = self._keys()
        if self.has_group:
            keys.append("group")
        parts: dict[str, list[np.ndarray]] = {k: [] for k in keys}
        offset = 0
        for p in self.pieces:
            keep = row_hash(np.arange(offset, offset + len(p), dtype=np.uint64), seed,
                            salt=3) < frac
            offset += len(p)
            for k in keys:
                parts[k].append(self._column(p, k)[keep])
        return EncodedData.from_arrays(_arrays_for_memory(
            {k: np.concatenate(v) for k, v in parts.items()}, self.seq_names))

    def to_memory(self) -> Any:
        """The whole split as in-memory ``EncodedData``."""
        from autodrs.data.dataset import EncodedData

        arrays = self._read(self.pieces)
        if self.has_group:
            arrays["group"] = np.concatenate([self._column(p, "group") for p in self.pieces])
        return EncodedData.from_arrays(_arrays_for_memory(arrays, self.seq_names))


def _arrays_for_memory(arrays: dict[str, np.ndarray], seq_names: list[str]) -> dict:
    """Cache arrays renamed to ``EncodedData.from_arrays``'s keys."""
    out = {"cat": arrays["cat"], "num": arrays["num"], "label": arrays["label"]}
    out |= {f"seq:{s}": arrays[f"seq-{s}"] for s in seq_names}
    if "group" in arrays:
        out["group"] = arrays["group"]
    return out
