"""From a table to encoded, split, cached tensors, and batches over them."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time as _time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import torch
from sklearn.metrics import roc_auc_score

from autodrs.data.cache import (
    SPLITS,
    BuildSettings,
    DiskData,
    Remap,
    build_cache,
    read_info,
    time_cut_points,
)
from autodrs.data.errors import DataError
from autodrs.data.readers import Source, infer_text_kinds
from autodrs.data.schema import Schema, infer_schema
from autodrs.data.sources import TRUE_PROB, open_source
from autodrs.train import distributed

CACHE_VERSION = "4"


@dataclass
class Batch:
    """One batch of encoded inputs: what every model's ``forward`` takes."""

    cat: torch.Tensor
    num: torch.Tensor
    seq: dict[str, torch.Tensor]
    label: torch.Tensor | None = None

    def to(self, device: torch.device | str, non_blocking: bool = False) -> Batch:
        def move(t: torch.Tensor) -> torch.Tensor:
            return t.to(device, non_blocking=non_blocking)

        return Batch(move(self.cat), move(self.num), {k: move(v) for k, v in self.seq.items()},
                     None if self.label is None else move(self.label))

    def pin_memory(self) -> Batch:
        """Page-locked copies, so a later ``to(cuda, non_blocking=True)`` overlaps compute."""
        return Batch(self.cat.pin_memory(), self.num.pin_memory(),
                     {k: v.pin_memory() for k, v in self.seq.items()},
                     None if self.label is None else self.label.pin_memory())

    def __len__(self) -> int:
        return int(self.cat.shape[0])


@dataclass
class EncodedData:
    """Encoded columns of one split, as pre-built tensors."""

    cat: torch.Tensor
    num: torch.Tensor
    seq: dict[str, torch.Tensor]
    label: torch.Tensor
    group: torch.Tensor | None = None
    extra: dict[str, np.ndarray] = field(default_factory=dict)

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray]) -> EncodedData:
        return cls(
            cat=torch.from_numpy(np.ascontiguousarray(arrays["cat"], np.int64)),
            num=torch.from_numpy(np.ascontiguousarray(arrays["num"], np.float32)),
            seq={k[4:]: torch.from_numpy(np.ascontiguousarray(v, np.int64))
                 for k, v in arrays.items() if k.startswith("seq:")},
            label=torch.from_numpy(np.ascontiguousarray(
                arrays.get("label", np.zeros(len(arrays["cat"]))), np.float32)),
            group=torch.from_numpy(arrays["group"]) if "group" in arrays else None,
        )

    def to_arrays(self) -> dict[str, np.ndarray]:
        out = {"cat": self.cat.numpy(), "num": self.num.numpy(), "label": self.label.numpy()}
        out |= {f"seq:{k}": v.numpy() for k, v in self.seq.items()}
        if self.group is not None:
            out["group"] = self.group.numpy()
        return out

    def __len__(self) -> int:
        return int(self.label.shape[0])

    def batch(self, idx: torch.Tensor | slice) -> Batch:
        return Batch(self.cat[idx], self.num[idx], {k: v[idx] for k, v in self.seq.items()},
                     self.label[idx])

    def shard(self, rank: int, world: int) -> EncodedData:
        """The rows one of ``world`` data-parallel ranks trains on: every ``world``-th row
        from ``rank``, so the ranks' parts are disjoint and cover the split."""
        if world == 1:
            return self
        return self.subset(torch.arange(rank, len(self), world))

    def subset(self, idx: torch.Tensor) -> EncodedData:
        b = self.batch(idx)
        return EncodedData(b.cat, b.num, b.seq, b.label,
                           None if self.group is None else self.group[idx])

    def batches(self, batch_size: int, shuffle: bool = False,
                generator: torch.Generator | None = None) -> Iterator[Batch]:
        """Batches by index shuffling over the pre-built tensors (no per-row Python).

        Shuffled (training) batches never end on a single row: it joins the batch before it,
        since batch norm cannot normalise one row."""
        n = len(self)
        if shuffle:
            order = torch.randperm(n, generator=generator)
            starts = list(range(0, n, batch_size))
            if len(starts) > 1 and n - starts[-1] == 1:
                starts.pop()
            for i, start in enumerate(starts):
                end = starts[i + 1] if i + 1 < len(starts) else n
                yield self.batch(order[start:end])
        else:
            for start in range(0, n, batch_size):
                yield self.batch(slice(start, start + batch_size))


@dataclass
class Dataset:
    """A fitted schema and the three encoded splits."""

    schema: Schema
    train: EncodedData
    valid: EncodedData
    test: EncodedData
    info: dict[str, Any]

    def split(self, name: str) -> EncodedData:
        if name not in SPLITS:
            raise ValueError(f"unknown split {name!r}")
        return getattr(self, name)


def scored_on_sample(ds: Dataset, sample: Dataset) -> Dataset:
    """``ds`` with the validation and test splits of ``sample`` (a ``search_sample`` of it):
    all its training rows, validated and tested on the sample's rows of its held-out splits.
    The fits on all rows of a sampled table (baselines, final retrain) are scored this way,
    every one on the same rows: a full pass over a 1M-row validation or test split took
    longer than a baseline's whole share of a 30-minute budget. ``ds`` itself when
    ``sample`` is ``ds``; ``info["scored_rows"]`` records the rows scored."""
    if sample is ds or (sample.valid is ds.valid and sample.test is ds.test):
        return ds
    info = dict(ds.info)
    info["scored_rows"] = {"valid": len(sample.valid), "test": len(sample.test),
                           "of_valid": len(ds.valid), "of_test": len(ds.test)}
    return Dataset(ds.schema, ds.train, sample.valid, sample.test, info)


def load_dataset(
    data: str,
    label: str | None = None,
    fmt: str | None = None,
    labels: list[str] | None = None,
    categorical: list[str] | None = None,
    numerical: list[str] | None = None,
    sequence: list[str] | None = None,
    group: str | None = None,
    time: str | None = None,
    schema_file: str | Path | None = None,
    split: str = "random",
    seed: int = 2026,
    min_count: int = 1,
    hash_threshold: int = 1_000_000,
    cache: bool = True,
    cache_dir: str | Path | None = None,
    rows: int | None = None,
    in_memory: bool | None = None,
    progress: bool = False,
) -> Dataset:
    """Read ``data`` in one streaming pass, split it 80/10/10 (``random`` by a hash of the
    row number and ``seed``, or by the ``time`` column), fit the schema on train and write
    the encoded splits to the on-disk cache (see ``autodrs.data.cache``).

    ``rows`` reads only the first rows. The splits are held in memory when their tensors
    take at most ``in_memory_limit()`` bytes (``in_memory`` True or False overrides), else
    are read from disk batch by batch. ``labels`` (two or more 0/1 columns) gives multi-task
    data: the splits' ``label`` is then [rows, tasks], in that order."""
    if split not in ("random", "time", "given"):
        raise DataError(f"unknown split {split!r}; use 'random', 'time' or 'given'")
    overrides: dict[str, Any] = {}
    if schema_file is not None:
        overrides = _read_schema_file(schema_file)
    source = open_source(data, fmt=fmt, label=label or overrides.get("label"),
                         labels=labels).capped(rows)
    categorical = [*(categorical or []), *overrides.get("categorical", [])]
    numerical = [*(numerical or []), *overrides.get("numerical", [])]
    sequence = [*(sequence or []), *overrides.get("sequence", [])]
    group = group or overrides.get("group") or source.group
    time = time or overrides.get("time") or source.time
    declared = {"categorical": categorical, "numerical": numerical, "sequence": sequence}
    # several labels key a cache of their own; one label keys it as it always has
    key_parts = [CACHE_VERSION, source.identity,
                 ",".join(source.labels) if source.labels else source.label,
                 json.dumps(declared),
                 str(group), str(time), split, str(seed), str(min_count), str(hash_threshold),
                 json.dumps(overrides.get("drop", []))]
    key = hashlib.sha256("|".join(key_parts).encode()).hexdigest()[:20]
    persistent = cache and bool(source.identity)
    root = (Path(cache_dir or default_cache_dir()) if persistent
            else Path(tempfile.mkdtemp(prefix="autodrs-")))
    folder = root / key
    # data-parallel ranks share one persistent cache: rank 0 builds it (or finds it) while
    # the others wait for its info.json (no collective, so no process-group timeout bounds
    # a long build; a launcher stops the waiting ranks if rank 0 fails)
    rank = distributed.world()
    if persistent and rank.size > 1 and not rank.main:
        while read_info(folder) is None:
            _time.sleep(0.5)
    built = read_info(folder) if persistent else None
    cached = built is not None
    if built is None:
        schema = _infer(source, declared, group, time, overrides)
        cuts = time_cut_points(source, time) if split == "time" and time else None
        if split == "given" and time:  # the column holds each row's split: 0, 1 or 2
            cuts = (1.0, 2.0)
        if split in ("time", "given") and cuts is None:
            raise DataError(f"a {split} split needs a column (--time COL)")
        extra = (TRUE_PROB,) if source.truth is not None else ()
        settings = BuildSettings(seed=seed, split=split, min_count=min_count,
                                 hash_threshold=hash_threshold, extra=extra)
        built = build_cache(source, schema, folder, settings, time_cuts=cuts,
                            progress=progress)
    schema = Schema.load(folder / "schema.json")
    if in_memory is None:
        in_memory = memory_bytes(built, schema) <= in_memory_limit()
    remap = Remap.open(folder, built)
    on_disk = {s: DiskData.open(folder, s, built, remap) for s in SPLITS}
    splits: dict[str, EncodedData | DiskData] = (
        {s: d.to_memory() for s, d in on_disk.items()} if in_memory else dict(on_disk))
    info: dict[str, Any] = {
        "name": source.name, "rows": built["rows"], "split": split, "seed": seed,
        "sizes": built["sizes"],
        "fields": {f.name: {"kind": f.kind, "vocab_size": f.vocab_size} for f in schema.fields},
        "label": source.label, "positive_rate": built["positive_rate"],
        **({"labels": list(source.labels), "positive_rates": built["positive_rates"]}
           if source.labels else {}),
        "cache": {"folder": str(folder), "bytes": built["bytes"],
                  "shards": sum(len(v) for v in built["shards"].values()),
                  "in_memory": bool(in_memory), "encode_seconds": built["seconds"]},
    }
    if rows is not None:
        info["rows_cap"] = rows
    if cached:
        info["cached"] = True
    if source.truth is not None:
        truth = dict(source.truth)
        probs = np.load(folder / f"extra-{TRUE_PROB}-test.npy")
        truth["bayes_auc"] = float(roc_auc_score(splits["test"].label.numpy(), probs))
        info["truth"] = truth
    if not persistent and in_memory:
        shutil.rmtree(root, ignore_errors=True)
        info["cache"]["folder"] = None
    return Dataset(schema, splits["train"], splits["valid"], splits["test"], info)


def memory_bytes(built: dict[str, Any], schema: Schema) -> int:
    """Bytes the splits take as in-memory tensors (int64 ids, float32 numbers and label),
    about twice the cache's int32 ids: what holding the data in memory really costs."""
    numerical = sum(f.kind == "numerical" for f in schema.fields)
    per_row = (8 * len(built["cat_offsets"]) + 4 * numerical
               + 4 * len(built.get("positive_rates") or [0])
               + 8 * sum(built["seq_widths"].values()) + (8 if built["has_group"] else 0))
    return int(built["rows"]) * per_row


def in_memory_limit() -> int:
    """Largest dataset (bytes as in-memory tensors, ``memory_bytes``) held in memory:
    ``AUTODRS_IN_MEMORY_BYTES``, or 2 GiB."""
    env = os.environ.get("AUTODRS_IN_MEMORY_BYTES")
    try:
        return int(env) if env else 2 << 30
    except ValueError as e:
        raise DataError(f"AUTODRS_IN_MEMORY_BYTES={env!r} is not a number of bytes") from e


def _infer(source: Source, declared: dict[str, list[str]], group: str | None,
           time: str | None, overrides: dict[str, Any]) -> Schema:
    """The schema's fields and kinds, inferred from the first chunk."""
    first = next(iter(source.chunks()), None)
    if first is None or first.height == 0:
        raise DataError(f"{source.name} has no data rows")
    for name in source.labels or [source.label]:
        if name not in first.columns:
            raise DataError(f"label column {name!r} not found; columns are {first.columns}")
    for kind, names in declared.items():
        for name in names:
            if name not in first.columns:
                raise DataError(f"declared {kind} field {name!r} is not a column of the table")
    labels = source.labels or [source.label]
    drop = [c for c in (TRUE_PROB, *overrides.get("drop", []), *labels[1:])
            if c in first.columns]
    kinds = dict(source.kinds)
    if source.text_columns:
        skip = {*labels, *drop, *(c for c in (group, time) if c)} | set(kinds)
        kinds |= infer_text_kinds(first, skip)
    for kind, names in declared.items():
        for name in names:
            kinds[name] = kind
    by_kind = {k: [n for n, v in kinds.items() if v == k and n in first.columns]
               for k in declared}
    for name in labels:
        for kind, names in declared.items():
            if name in names:
                raise DataError(f"label column {name!r} is also declared a {kind} field")
    schema = infer_schema(first, label=source.label, group=group, time=time, drop=drop,
                          log_numerical=source.log_numerical, **by_kind)
    schema.labels = list(source.labels) if source.labels else None
    return schema

def default_cache_dir() -> Path:
    env = os.environ.get("AUTODRS_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "autodrs"


def _read_schema_file(path: str | Path) -> dict[str, Any]:
    import yaml

    p = Path(path)
    if not p.exists():
        raise DataError(f"schema file {p} not found")
    data = yaml.safe_load(p.read_text()) or {}
    if not isinstance(data, dict):
        raise DataError(f"schema file {p} must be a mapping with keys like 'categorical'")
    allowed = {"label", "categorical", "numerical", "sequence", "group", "time", "drop"}
    unknown = set(data) - allowed
    if unknown:
        raise DataError(f"schema file {p} has unknown keys {sorted(unknown)}; use {sorted(allowed)}")
    return data


def stream_parquet(path: str | Path, schema: Schema, batch_rows: int = 65_536,
                   require_label: bool = True) -> Iterator[EncodedData]:
    """Encode a Parquet file row group by row group, in bounded memory."""
    import pyarrow.parquet as pq

    pf = pq.ParquetFile(path, pre_buffer=False)
    for record_batch in pf.iter_batches(batch_size=batch_rows):
        df = pl.from_arrow(record_batch)
        assert isinstance(df, pl.DataFrame)
        yield EncodedData.from_arrays(schema.transform(df, require_label=require_label))
