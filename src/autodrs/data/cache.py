"""The encoded on-disk cache: one streaming pass from a ``Source`` to compact shards, and
``DiskData``, batches read from those shards in bounded memory.

Layout of a cache folder (one per data + settings key)::

    schema.json                   the fitted schema
    info.json                     sizes, statistics, and every file's byte size;
                                  written last, so a folder without it is incomplete
    train/00000.cat.npy           int32 [rows, categorical fields]
    train/00000.num.npy           float32 [rows, numerical fields], standardised
    train/00000.label.npy         uint8 [rows]
    train/00000.seq-genres.npy    int32 [rows, width] (padded)
    train/00000.group.npy         int64 [rows], when a group column exists
    valid/..., test/...

Shards are ``.npy`` files: self-describing, memory-mapped with ``numpy.load(mmap_mode)``,
readable from any language with a NumPy reader, and with no dependency beyond NumPy.

The build reads the source once. Rows are assigned to splits as they pass (``split_of``: a
hash of the row number and the seed, or the time column against its 80% and 90% points);
categorical values get provisional ids in order of first sight while their train counts are
kept; numerical fields keep exact running moments and a bounded uniform sample (for bucket
boundaries). Once the pass is over the schema is fitted from those counts and moments, with
the same rules as ``Schema.fit``, and every shard is rewritten in place from provisional to
final ids. The folder is built under a temporary name and renamed when complete, so an
interrupted build never leaves a cache a later run reads as complete.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import torch

from autodrs.data.errors import DataError
from autodrs.data.prefetch import prefetch
from autodrs.data.schema import (
    FIRST_ID,
    MISSING,
    OOV,
    PAD,
    Field,
    Schema,
    _as_str,
    _numeric,
    _seq_lists,
    check_label,
    fit_numerical,
    fit_vocab,
    hash_ids,
    seq_width,
)

SPLITS = ("train", "valid", "test")
SHARD_ROWS = 1 << 20
SHUFFLE_ROWS = 1 << 20
MAX_SEQ_LEN = 8
SAMPLE_ROWS = 1_000_000  # numerical values kept for bucket boundaries
# provisional ids while building: 0 pads sequences, 1 is a missing value, values from 2
_P_PAD, _P_MISSING, _P_FIRST = 0, 1, 2
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


# ---------------------------------------------------------------- splits
def row_hash(rows: np.ndarray, seed: int, salt: int = 0) -> np.ndarray:
    """A uniform number in [0, 1) for each row number: SplitMix64 of the row number mixed
    with the seed (and a salt for independent draws), top 53 bits."""
    with np.errstate(over="ignore"):
        z = rows.astype(np.uint64) + np.uint64((seed * 2 + 1 + salt * 7919) % 2**64) * _GOLDEN
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
    return (z >> np.uint64(11)).astype(np.float64) * 2.0**-53


def split_of(u: np.ndarray, cuts: tuple[float, float] = (0.8, 0.9)) -> np.ndarray:
    """0 (train), 1 (valid) or 2 (test) for values ``u`` against the two cut points."""
    return (u >= cuts[0]).astype(np.uint8) + (u >= cuts[1]).astype(np.uint8)


# ---------------------------------------------------------------- provisional ids
class _Dictionary:
    """Provisional ids for one field's values, in order of first sight, with their train
    counts. Values are looked up once per chunk per distinct value."""

    def __init__(self) -> None:
        self.index: dict[Any, int] = {}
        self.values: list[Any] = []
        self.counts = np.zeros(1024, np.int64)

    def encode(self, values: pl.Series) -> np.ndarray:
        """Provisional ids of a text series (``_P_MISSING`` for null)."""
        import pyarrow.compute as pc

        enc = pc.dictionary_encode(values.to_arrow())
        local = enc.dictionary.to_pylist()
        index = self.index
        ids = np.empty(len(local) + 1, np.int32)
        for i, v in enumerate(local):
            pid = index.get(v)
            if pid is None:
                pid = index[v] = len(self.values) + _P_FIRST
                self.values.append(v)
            ids[i] = pid
        ids[-1] = _P_MISSING
        codes = enc.indices.fill_null(-1).to_numpy(zero_copy_only=False)
        return ids[codes]

    def count(self, pids: np.ndarray) -> None:
        size = len(self.values) + _P_FIRST
        if size > len(self.counts):
            self.counts = np.concatenate([self.counts, np.zeros(2 * size, np.int64)])
        self.counts += np.bincount(pids, minlength=len(self.counts))

    def fit(self, f: Field, min_count: int, hash_threshold: int) -> np.ndarray:
        """Fit ``f``'s vocabulary from the train counts; the map provisional -> final id."""
        counts = self.counts[_P_FIRST:len(self.values) + _P_FIRST]
        seen = counts > 0
        table = pl.DataFrame({"value": pl.Series(self.values, dtype=pl.String),
                              "count": counts}).filter(pl.Series(seen))
        fit_vocab(f, table, min_count, hash_threshold)
        remap = np.full(len(self.values) + _P_FIRST, OOV, np.int32)
        remap[_P_PAD], remap[_P_MISSING] = PAD, MISSING
        if f.hash_buckets:
            if self.values:
                remap[_P_FIRST:] = hash_ids(pl.Series(self.values, dtype=pl.String),
                                            f.hash_buckets).to_numpy()
        else:
            for i, v in enumerate(f.vocab or []):
                remap[self.index[v]] = FIRST_ID + i
        return remap


class _Moments:
    """Exact train moments of one numerical field, and a bounded uniform sample of its
    values (the rows with the smallest hashes)."""

    def __init__(self) -> None:
        self.n, self.mean, self.m2 = 0, 0.0, 0.0
        self.keys = np.zeros(0)
        self.sample = np.zeros(0)

    def add(self, values: np.ndarray, keys: np.ndarray) -> None:
        finite = ~np.isnan(values)
        x, k = values[finite], keys[finite]
        if not x.size:
            return
        n, mean = x.size, float(x.mean())
        delta = mean - self.mean
        total = self.n + n
        self.m2 += float(((x - mean) ** 2).sum()) + delta**2 * self.n * n / total
        self.mean += delta * n / total
        self.n = total
        self.keys = np.concatenate([self.keys, k])
        self.sample = np.concatenate([self.sample, x])
        if self.keys.size > 2 * SAMPLE_ROWS:
            keep = np.argpartition(self.keys, SAMPLE_ROWS)[:SAMPLE_ROWS]
            self.keys, self.sample = self.keys[keep], self.sample[keep]

    def fit(self, f: Field) -> None:
        if self.n == 0:
            raise DataError(f"numerical field {f.name!r} has no values in train")
        fit_numerical(f, self.mean, float(np.sqrt(self.m2 / self.n)), self.sample)


# ---------------------------------------------------------------- building
@dataclass
class BuildSettings:
    seed: int
    split: str = "random"
    min_count: int = 1
    hash_threshold: int = 1_000_000
    shard_rows: int | None = None  # None: ``SHARD_ROWS``
    extra: tuple[str, ...] = ()  # test-split columns kept beside the encoded ones (truth)


class _ShardWriter:
    """Buffers one split's encoded rows and writes them as shards of ``rows`` rows."""

    def __init__(self, folder: Path, rows: int) -> None:
        self.folder = folder
        self.rows = rows
        self.parts: list[dict[str, np.ndarray]] = []
        self.buffered = 0
        self.shards: list[int] = []
        folder.mkdir(parents=True, exist_ok=True)

    def add(self, arrays: dict[str, np.ndarray]) -> None:
        n = len(arrays["label"])
        if not n:
            return
        self.parts.append(arrays)
        self.buffered += n
        while self.buffered >= self.rows:
            self._write(self.rows)

    def close(self) -> None:
        if self.buffered:
            self._write(self.buffered)

    def _write(self, n: int) -> None:
        merged = {k: np.concatenate([p[k] for p in self.parts]) for k in self.parts[0]} \
            if self.parts else {}
        index = len(self.shards)
        for key, arr in merged.items():
            np.save(self.folder / f"{index:05d}.{key}.npy", arr[:n])
        rest = {k: v[n:] for k, v in merged.items()}
        self.parts = [rest] if self.buffered > n else []
        self.buffered -= n
        self.shards.append(n)


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
        info = _build(source, schema, tmp, settings, time_cuts, progress)
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


def _build(source: Any, schema: Schema, tmp: Path, st: BuildSettings,
           time_cuts: tuple[float, float] | None, progress: bool) -> dict[str, Any]:
    cats = [f for f in schema.fields if f.kind == "categorical"]
    nums = [f for f in schema.fields if f.kind == "numerical"]
    seqs = [f for f in schema.fields if f.kind == "sequence"]
    dicts = {f.name: _Dictionary() for f in [*cats, *seqs]}
    groups = _Dictionary() if schema.group else None
    moments = {f.name: _Moments() for f in nums}
    longest = dict.fromkeys((f.name for f in seqs), 0)
    writers = {s: _ShardWriter(tmp / s, st.shard_rows or SHARD_ROWS) for s in SPLITS}
    extra: dict[str, list[np.ndarray]] = {k: [] for k in st.extra}
    offset, positives, t0, last_print = 0, 0.0, time.perf_counter(), 0.0
    for chunk in source.chunks():
        n = chunk.height
        if not n:
            continue
        if offset == 0:
            _check_columns(chunk, schema)
        rows = np.arange(offset, offset + n, dtype=np.uint64)
        if time_cuts is not None:
            t = _time_values(chunk, schema.time)
            which = (t >= time_cuts[0]).astype(np.uint8) + (t >= time_cuts[1]).astype(np.uint8)
        else:
            which = split_of(row_hash(rows, st.seed))
        train = which == 0
        label = check_label(chunk, schema.label)
        positives += float(label.sum())
        arrays: dict[str, np.ndarray] = {"label": label.astype(np.uint8)}
        cat = np.empty((n, len(cats)), np.int32)
        for j, f in enumerate(cats):
            cat[:, j] = dicts[f.name].encode(_as_str(chunk[f.name]))
            dicts[f.name].count(cat[train, j])
        arrays["cat"] = cat
        num = np.empty((n, len(nums)), np.float64)
        keys = row_hash(rows, st.seed, salt=1)
        for k, f in enumerate(nums):
            num[:, k] = _numeric(chunk[f.name], f).to_numpy().astype(np.float64)
            moments[f.name].add(num[train, k], keys[train])
        arrays["num"] = num
        for f in seqs:
            arrays[f"seq-{f.name}"], most = _encode_lists(chunk[f.name], f, dicts[f.name], train)
            longest[f.name] = max(longest[f.name], most)
        if groups is not None:
            g = _as_str(chunk[schema.group]).fill_null("")
            arrays["group"] = groups.encode(g).astype(np.int64)
        for s, writer in enumerate(writers.values()):
            mask = which == s
            writer.add({k: v[mask] for k, v in arrays.items()})
        for k in st.extra:
            extra[k].append(chunk[k].to_numpy()[which == 2])
        offset += n
        if progress and time.perf_counter() - last_print > 10:
            last_print = time.perf_counter()
            print(f"encoding: {offset:,} rows read ({offset / (last_print - t0):,.0f} rows/s)",
                  flush=True)
    if offset == 0:
        raise DataError(f"{source.name} has no data rows")
    for w in writers.values():
        w.close()
    sizes = {s: sum(w.shards) for s, w in writers.items()}
    for f in [*cats, *seqs]:
        if not dicts[f.name].values:
            raise DataError(f"column {f.name!r} is entirely null")
    for s, size in sizes.items():
        if size == 0:
            raise DataError(f"the {s} split of {source.name} is empty: {offset} rows are too "
                            "few to split 80/10/10")

    remaps = {}
    for f in [*cats, *seqs]:
        remaps[f.name] = dicts[f.name].fit(f, st.min_count, st.hash_threshold)
    for f in nums:
        moments[f.name].fit(f)
    for f in seqs:
        f.max_len = seq_width(longest[f.name], MAX_SEQ_LEN)
    schema.fitted = True
    files = _finalise(tmp, writers, cats, nums, seqs, remaps, schema)
    info: dict[str, Any] = {
        "rows": offset, "sizes": sizes, "positive_rate": positives / offset,
        "shards": {s: w.shards for s, w in writers.items()},
        "seq_names": [f.name for f in seqs], "has_group": groups is not None,
        "files": files, "bytes": int(sum(files.values())),
        "seconds": round(time.perf_counter() - t0, 3),
    }
    for key, parts in extra.items():
        np.save(tmp / f"extra-{key}-test.npy", np.concatenate(parts))
    schema.save(tmp / "schema.json")
    (tmp / "info.json").write_text(json.dumps(info))
    return info


def _encode_lists(col: pl.Series, f: Field, d: _Dictionary,
                  train: np.ndarray) -> tuple[np.ndarray, int]:
    """Provisional ids of a sequence field, padded to ``MAX_SEQ_LEN``; the longest train
    list. Train counts include every token, as ``Schema.fit`` counts them."""
    lists = _seq_lists(col, f.sep)
    n = len(lists)
    lengths = lists.list.len().fill_null(0).to_numpy().astype(np.int64)
    out = np.zeros((n, MAX_SEQ_LEN), np.int32)
    tokens = lists.explode().drop_nulls()
    if len(tokens):
        pids = d.encode(tokens)
        rows = np.repeat(np.arange(n), lengths)
        d.count(pids[train[rows]])
        pos = np.arange(len(rows)) - np.repeat(np.cumsum(lengths) - lengths, lengths)
        keep = pos < MAX_SEQ_LEN
        out[rows[keep], pos[keep]] = pids[keep]
    out[lengths == 0, 0] = _P_MISSING
    most = int(lengths[train].max()) if train.any() else 0
    return out, most


def _finalise(tmp: Path, writers: dict[str, _ShardWriter], cats: list[Field],
              nums: list[Field], seqs: list[Field], remaps: dict[str, np.ndarray],
              schema: Schema) -> dict[str, int]:
    """Rewrite every shard from provisional to final ids and standardised numbers."""
    mean = np.array([f.mean for f in nums])
    std = np.array([f.std for f in nums])
    files: dict[str, int] = {}
    for split, w in writers.items():
        for i in range(len(w.shards)):
            base = w.folder / f"{i:05d}"
            cat = np.load(f"{base}.cat.npy", mmap_mode="r+")
            for j, f in enumerate(cats):
                cat[:, j] = remaps[f.name][cat[:, j]]
            cat.flush()
            del cat
            raw = np.load(f"{base}.num.npy")
            z = np.nan_to_num((raw - mean) / std, nan=0.0).astype(np.float32)
            np.save(f"{base}.num.npy", z)
            for f in seqs:
                seq = np.load(f"{base}.seq-{f.name}.npy")
                np.save(f"{base}.seq-{f.name}.npy", remaps[f.name][seq[:, :f.max_len]])
            for p in w.folder.glob(f"{i:05d}.*.npy"):
                files[f"{split}/{p.name}"] = p.stat().st_size
    return files


def _check_columns(chunk: pl.DataFrame, schema: Schema) -> None:
    missing = [n for n in [*schema.field_names, schema.label] if n not in chunk.columns]
    if missing:
        raise DataError(f"columns missing from the table: {', '.join(missing)}")


def _time_values(chunk: pl.DataFrame, time_col: str | None) -> np.ndarray:
    if time_col is None:
        raise DataError("a time split needs a time column (--time COL)")
    col = chunk[time_col]
    if col.dtype.is_temporal():
        col = col.dt.epoch("us")
    values = col.cast(pl.Float64, strict=False)
    if values.null_count():
        raise DataError(f"time column {time_col!r} has missing or non-numeric values")
    return values.to_numpy()


def time_cut_points(source: Any, time_col: str) -> tuple[float, float]:
    """The 80% and 90% points of the time column: exact up to ``SAMPLE_ROWS`` rows, from
    a uniform sample of that size beyond. Rows at a cut go to the later split."""
    keys, values = np.zeros(0), np.zeros(0)
    offset = 0
    for chunk in source.chunks():
        t = _time_values(chunk, time_col)
        k = row_hash(np.arange(offset, offset + len(t), dtype=np.uint64), 0, salt=2)
        keys, values = np.concatenate([keys, k]), np.concatenate([values, t])
        if keys.size > 2 * SAMPLE_ROWS:
            keep = np.argpartition(keys, SAMPLE_ROWS)[:SAMPLE_ROWS]
            keys, values = keys[keep], values[keep]
        offset += len(t)
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


class DiskData:
    """One split read from its shards: the interface of ``EncodedData`` (``len``,
    ``batches``, ``label``, ``group``, ``shard``) in bounded memory.

    Shuffled batches follow shard order plus a shuffle buffer: each epoch draws a random
    order of the shards, fills a buffer of at least ``shuffle_rows`` rows from them, shuffles
    the buffer and cuts it into batches, while a background thread reads the next buffer.
    Data that fits in one buffer is fully shuffled."""

    def __init__(self, pieces: list[_Piece], seq_names: list[str], has_group: bool,
                 shuffle_rows: int = SHUFFLE_ROWS) -> None:
        self.pieces = pieces
        self.seq_names = seq_names
        self.has_group = has_group
        self.shuffle_rows = shuffle_rows
        self._label: torch.Tensor | None = None
        self._group: torch.Tensor | None = None

    @classmethod
    def open(cls, folder: Path, split: str, info: dict[str, Any]) -> DiskData:
        pieces, bases = [], folder / split
        for i, n in enumerate(info["shards"][split]):
            if n:
                pieces.append(_Piece(str(bases / f"{i:05d}"), 0, n))
        return cls(pieces, list(info["seq_names"]), bool(info["has_group"]))

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

    @staticmethod
    def _column(p: _Piece, key: str) -> np.ndarray:
        return np.asarray(np.load(f"{p.base}.{key}.npy", mmap_mode="r")[p.start:p.stop])

    def _read(self, pieces: list[_Piece]) -> dict[str, np.ndarray]:
        keys = ["cat", "num", "label", *(f"seq-{s}" for s in self.seq_names)]
        return {k: np.concatenate([self._column(p, k) for p in pieces]) for k in keys}

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
        if not shuffle:
            for p in self.pieces:
                arrays = self._read([p])
                for start in range(0, len(p), batch_size):
                    yield self._batch(arrays, slice(start, start + batch_size))
            return
        order = torch.randperm(len(self.pieces), generator=generator).tolist()
        groups: list[list[_Piece]] = [[]]
        for i in order:
            if sum(len(p) for p in groups[-1]) >= self.shuffle_rows:
                groups.append([])
            groups[-1].append(self.pieces[i])
        # full batches, then the rest; a rest of one row joins the batch before it (batch
        # norm cannot normalise one row), as ``EncodedData.batches`` does
        carry: dict[str, np.ndarray] | None = None
        pending: tuple[dict[str, np.ndarray], np.ndarray] | None = None
        for arrays in prefetch(map(self._read, groups)):
            if carry is not None:
                arrays = {k: np.concatenate([carry[k], v]) for k, v in arrays.items()}
            n = len(arrays["label"])
            perm = torch.randperm(n, generator=generator).numpy()
            full = n - n % batch_size
            for start in range(0, full, batch_size):
                if pending is not None:
                    yield self._batch(*pending)
                pending = (arrays, perm[start:start + batch_size])
            carry = {k: v[perm[full:]] for k, v in arrays.items()}
        rest = 0 if carry is None else len(carry["label"])
        if pending is not None and rest == 1:
            last, idx = pending
            pending = ({k: np.concatenate([last[k][idx], carry[k]]) for k in last},  # type: ignore[index]
                       np.arange(len(idx) + 1))
        if pending is not None:
            yield self._batch(*pending)
        if rest and not (rest == 1 and pending is not None):
            yield self._batch(carry, slice(None))  # type: ignore[arg-type]

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
        return DiskData(pieces, self.seq_names, self.has_group, self.shuffle_rows)

    def sample(self, rows: int, seed: int) -> Any:
        """About ``rows`` rows drawn uniformly (by row hash), in memory."""
        from autodrs.data.dataset import EncodedData

        frac = min(1.0, rows / max(1, len(self)))
        keys = ["cat", "num", "label", *(f"seq-{s}" for s in self.seq_names)]
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
