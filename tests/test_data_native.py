"""The cache build's native Parquet pass (``autodrs.data.fastparquet``) against the general
pass: the same schema, the same final ids, splits, labels and numbers, on small files that
exercise every branch (nulls, negative and wide integer ranges, hashed vocabularies, NaN and
missing numbers, a row cap, the numbers' sample cut); the layouts it does not take (text,
string ids, a time split) are built by the general pass alone."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from autodrs.data import cache as cache_mod
from autodrs.data import fastparquet
from autodrs.data.cache import DiskData, read_info
from autodrs.data.dataset import load_dataset
from autodrs.data.errors import DataError


def _table(n: int = 3000, seed: int = 0) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    a = rng.zipf(1.3, n) % 400
    wide = rng.integers(-70_000, 70_000, n)  # ids of int32 width
    x = rng.normal(size=n)
    x[rng.random(n) < 0.05] = np.nan
    return pl.DataFrame({
        "a": a,
        "neg": rng.integers(-50, 50, n).astype(np.int32),
        "nullable": pl.Series(rng.integers(0, 30, n)).scatter(
            np.flatnonzero(rng.random(n) < 0.1), None),
        "wide": wide,
        "tiny": pl.Series(rng.integers(-128, 128, n), dtype=pl.Int8),  # a narrow type's ends
        "unsigned": pl.Series(rng.integers(0, 9, n), dtype=pl.UInt32),
        "x": x,
        "k": pl.Series(rng.integers(0, 1000, n).astype(np.float64)).scatter([3, 9], None),
        "label": (rng.random(n) < 0.3).astype(np.int8),
    })


def _read(folder: Path) -> dict:
    (entry,) = [p for p in folder.iterdir() if p.is_dir()]
    info = read_info(entry)
    assert info is not None
    out: dict = {"schema": json.loads((entry / "schema.json").read_text()),
                 "rows": info["rows"], "sizes": info["sizes"]}
    for s in ("train", "valid", "test"):
        d = DiskData.open(entry, s, info)
        out[s] = d._read(d.pieces)
    return out


def _both(tmp_path: Path, monkeypatch, path: Path, **kw) -> tuple[dict, dict]:
    out = []
    for native in ("0", "1"):
        monkeypatch.setenv("AUTODRS_NATIVE_PASS", native)
        load_dataset(str(path), cache_dir=tmp_path / f"c{native}", in_memory=False, **kw)
        out.append(_read(tmp_path / f"c{native}"))
    return out[0], out[1]


def _assert_same(old: dict, new: dict) -> None:
    assert new["schema"] == old["schema"]
    assert new["rows"] == old["rows"] and new["sizes"] == old["sizes"]
    for s in ("train", "valid", "test"):
        assert old[s].keys() == new[s].keys()
        for k in old[s]:
            assert old[s][k].dtype == new[s][k].dtype, (s, k)
            np.testing.assert_array_equal(old[s][k], new[s][k], err_msg=f"{s} {k}")


@pytest.mark.parametrize("kw", [{}, {"rows": 2500, "seed": 7}, {"min_count": 3},
                                {"hash_threshold": 50}])
def test_native_pass_gives_the_general_pass_cache(tmp_path, monkeypatch, kw):
    path = tmp_path / "t.parquet"
    _table().write_parquet(path, row_group_size=700)
    plan_calls = []
    real = fastparquet.plan
    monkeypatch.setattr(fastparquet, "plan", lambda *a: plan_calls.append(real(*a))
                        or plan_calls[-1])
    old, new = _both(tmp_path, monkeypatch, path, categorical=["a", "neg", "nullable", "wide", "tiny", "unsigned"],
                     numerical=["x", "k"], **kw)
    assert plan_calls[-1] is not None  # the second build took the native pass
    _assert_same(old, new)
    wide = [f for f in new["schema"]["fields"] if f["name"] == "wide"][0]
    if kw.get("hash_threshold"):
        assert wide["hash_buckets"] == 50
    assert new["train"]["cat"].max() > 3


@pytest.mark.parametrize("group_rows", [700, 4700])
def test_native_pass_reads_row_groups_across_chunks(tmp_path, monkeypatch, group_rows):
    # reads follow the row groups (700 rows: one read each; 4700: cut into reads of 4
    # chunks), so chunks of 500 rows straddle reads: the moments must still be added chunk
    # by chunk as the general pass adds them, or the standardised numbers differ in bits
    monkeypatch.setattr("autodrs.data.readers.CHUNK_ROWS", 500)
    path = tmp_path / "t.parquet"
    # "mid": 16-bit ids past 2^15 (counted by NumPy, the others by PyTorch as int16)
    mid = np.random.default_rng(3).integers(0, 40_000, 6000)
    _table(6000, seed=2).with_columns(mid=mid).write_parquet(path, row_group_size=group_rows)
    reads = []
    real = fastparquet.slices
    monkeypatch.setattr(fastparquet, "slices", lambda *a: reads.append(real(*a)) or reads[-1])
    old, new = _both(tmp_path, monkeypatch, path, categorical=["a", "nullable", "mid"],
                     numerical=["x", "k"], min_count=2)
    assert reads and any(start % 500 for start, _ in reads[-1])  # reads start mid-chunk
    _assert_same(old, new)


def test_native_pass_worker_errors_leave_no_cache(tmp_path, monkeypatch):
    # the shards are written on a worker thread: its error (a full disk here) must reach
    # the build, which names it and leaves neither a cache nor a temporary folder
    import errno

    path = tmp_path / "t.parquet"
    _table(3000).write_parquet(path, row_group_size=700)
    monkeypatch.setattr("autodrs.data.readers.CHUNK_ROWS", 500)

    def full(*args):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(cache_mod, "_write", full)
    with pytest.raises(DataError, match="no space left"):
        load_dataset(str(path), cache_dir=tmp_path / "c", categorical=["a"], numerical=["x"])
    assert not any((tmp_path / "c").iterdir())


def test_native_pass_sample_cut_keeps_the_smallest_hashes(tmp_path, monkeypatch):
    # a sample smaller than the train rows: the cut must give the same bucket boundaries
    monkeypatch.setattr(cache_mod, "SAMPLE_ROWS", 300)
    path = tmp_path / "t.parquet"
    _table(20_000, seed=1).write_parquet(path)
    old, new = _both(tmp_path, monkeypatch, path, categorical=["a"], numerical=["x"])
    _assert_same(old, new)


def test_native_pass_labels_and_null_columns_fail_as_before(tmp_path, monkeypatch):
    bad = _table(400).with_columns(label=pl.Series(np.arange(400) % 3))
    path = tmp_path / "bad.parquet"
    bad.write_parquet(path)
    errors = []
    for native in ("0", "1"):
        monkeypatch.setenv("AUTODRS_NATIVE_PASS", native)
        with pytest.raises(DataError) as e:
            load_dataset(str(path), cache_dir=tmp_path / native, categorical=["a"],
                         numerical=["x"])
        errors.append(str(e.value))
    assert errors[0] == errors[1] and "label" in errors[0]
    # an entirely null categorical column: no statistics, so the general pass names it
    nulls = _table(400).with_columns(nullable=pl.lit(None, pl.Int64))
    nulls.write_parquet(path)
    with pytest.raises(DataError, match="entirely null"):
        load_dataset(str(path), cache_dir=tmp_path / "n", categorical=["a", "nullable"],
                     numerical=["x"])


@pytest.mark.parametrize("layout", ["csv", "tsv", "csv.gz", "strings", "time"])
def test_layouts_outside_the_native_pass_take_the_general_pass(tmp_path, monkeypatch, layout):
    df = _table(600)
    kw: dict = {}
    if layout == "strings":
        path = tmp_path / "s.parquet"
        df.with_columns(pl.col("a").cast(pl.String)).write_parquet(path)
    elif layout == "time":
        path = tmp_path / "t.parquet"
        df.with_columns(ts=pl.int_range(600)).write_parquet(path)
        kw = {"split": "time", "time": "ts"}
    else:
        path = tmp_path / f"t.{layout}"
        text = df.write_csv(separator="\t" if layout == "tsv" else ",")
        if layout.endswith(".gz"):
            import gzip

            path.write_bytes(gzip.compress(text.encode()))
        else:
            path.write_text(text)
    plans = []
    real = fastparquet.plan
    monkeypatch.setattr(fastparquet, "plan", lambda *a: plans.append(real(*a)) or plans[-1])
    load_dataset(str(path), cache_dir=tmp_path / "c", in_memory=False, **kw)
    assert plans == [None]
