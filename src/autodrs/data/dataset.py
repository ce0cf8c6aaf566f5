"""From a table to encoded, split, cached tensors, and batches over them."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import torch
from sklearn.metrics import roc_auc_score

from autodrs.data.errors import DataError
from autodrs.data.schema import Schema, infer_schema
from autodrs.data.sources import TRUE_PROB, load_table

CACHE_VERSION = "1"
SPLITS = ("train", "valid", "test")


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


def load_dataset(
    data: str,
    label: str | None = None,
    fmt: str | None = None,
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
) -> Dataset:
    """Read ``data``, split it 80/10/10 (``random`` by ``seed`` or ``time`` ordered), fit the
    schema on train, encode all splits and cache the result on disk."""
    if split not in ("random", "time"):
        raise DataError(f"unknown split {split!r}; use 'random' or 'time'")
    overrides: dict[str, Any] = {}
    if schema_file is not None:
        overrides = _read_schema_file(schema_file)
    table = load_table(data, fmt=fmt, label=label or overrides.get("label"))
    categorical = [*(categorical or []), *overrides.get("categorical", [])]
    numerical = [*(numerical or []), *overrides.get("numerical", [])]
    sequence = [*(sequence or []), *overrides.get("sequence", [])]
    group = group or overrides.get("group") or table.group
    time = time or overrides.get("time") or table.time
    declared = {"categorical": categorical, "numerical": numerical, "sequence": sequence}
    key_parts = [CACHE_VERSION, table.identity, table.label, json.dumps(declared),
                 str(group), str(time), split, str(seed), str(min_count), str(hash_threshold),
                 json.dumps(overrides.get("drop", []))]
    key = hashlib.sha256("|".join(key_parts).encode()).hexdigest()[:20]
    folder = Path(cache_dir or default_cache_dir()) / key
    if cache and table.identity and folder.exists():
        try:
            return _load_cached(folder)
        except (OSError, ValueError, KeyError):
            shutil.rmtree(folder, ignore_errors=True)

    df = table.df
    if table.label not in df.columns:
        raise DataError(f"label column {table.label!r} not found; columns are {df.columns}")
    kinds = dict(table.kinds)
    for kind, names in declared.items():
        for name in names:
            kinds[name] = kind
    by_kind = {k: [n for n, v in kinds.items() if v == k and n in df.columns] for k in declared}
    for kind, names in declared.items():
        for name in names:
            if name not in df.columns:
                raise DataError(f"declared {kind} field {name!r} is not a column of the table")
    drop = [c for c in (TRUE_PROB, *overrides.get("drop", [])) if c in df.columns]
    schema = infer_schema(df, label=table.label, group=group, time=time, drop=drop,
                          log_numerical=table.log_numerical, **by_kind)
    parts = _split(df, split, seed, time)
    schema.fit(parts["train"], min_count=min_count, hash_threshold=hash_threshold)
    encoded = {name: EncodedData.from_arrays(schema.transform(part))
               for name, part in parts.items()}
    info: dict[str, Any] = {
        "name": table.name, "rows": df.height, "split": split, "seed": seed,
        "sizes": {k: len(v) for k, v in encoded.items()},
        "fields": {f.name: {"kind": f.kind, "vocab_size": f.vocab_size} for f in schema.fields},
        "label": table.label, "positive_rate": float(df[table.label].cast(pl.Float64).mean()),
    }
    if table.truth is not None:
        truth = dict(table.truth)
        test = parts["test"]
        truth["bayes_auc"] = float(roc_auc_score(test[table.label].to_numpy(),
                                                 test[TRUE_PROB].to_numpy()))
        info["truth"] = truth
    ds = Dataset(schema, encoded["train"], encoded["valid"], encoded["test"], info)
    if cache and table.identity:
        _save_cached(folder, ds)
    return ds


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


def _split(df: pl.DataFrame, how: str, seed: int, time: str | None) -> dict[str, pl.DataFrame]:
    n = df.height
    if n < 10:
        raise DataError(f"the table has {n} rows; at least 10 are needed to split 80/10/10")
    if how == "time":
        if time is None:
            raise DataError("a time split needs a time column (--time COL)")
        order = np.argsort(df[time].to_numpy(), kind="stable")
    else:
        order = np.random.default_rng(seed).permutation(n)
    a, b = int(n * 0.8), int(n * 0.9)
    idx = {"train": order[:a], "valid": order[a:b], "test": order[b:]}
    return {k: df[np.sort(v) if how == "random" else v] for k, v in idx.items()}


def _save_cached(folder: Path, ds: Dataset) -> None:
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=".tmp-"))
    try:
        ds.schema.save(tmp / "schema.json")
        (tmp / "info.json").write_text(json.dumps(ds.info))
        for name in SPLITS:
            np.savez(tmp / f"{name}.npz", **ds.split(name).to_arrays())
        os.replace(tmp, folder)
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)


def _load_cached(folder: Path) -> Dataset:
    schema = Schema.load(folder / "schema.json")
    info = json.loads((folder / "info.json").read_text())
    splits = {}
    for name in SPLITS:
        with np.load(folder / f"{name}.npz", allow_pickle=False) as z:
            splits[name] = EncodedData.from_arrays({k: z[k] for k in z.files})
    info["cached"] = True
    return Dataset(schema, splits["train"], splits["valid"], splits["test"], info)


def stream_parquet(path: str | Path, schema: Schema, batch_rows: int = 65_536,
                   require_label: bool = True) -> Iterator[EncodedData]:
    """Encode a Parquet file row group by row group, in bounded memory."""
    import pyarrow.parquet as pq

    pf = pq.ParquetFile(path)
    for record_batch in pf.iter_batches(batch_size=batch_rows):
        df = pl.from_arrow(record_batch)
        assert isinstance(df, pl.DataFrame)
        yield EncodedData.from_arrays(schema.transform(df, require_label=require_label))
