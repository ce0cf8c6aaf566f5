"""The streaming encoder's parts: the stable hash of hashed vocabularies, provisional ids
for every kind of value, the bounded numerical sample, shard files, the prefetcher's
memory bound, and data-parallel ranks sharing one cache build."""

from __future__ import annotations

import json
import os
import threading
import time
from datetime import timedelta
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from autodrs.data import cache as cache_mod
from autodrs.data.cache import _BottomK, npy_header
from autodrs.data.dataset import load_dataset
from autodrs.data.errors import DataError
from autodrs.data.prefetch import prefetch
from autodrs.data.schema import HASH, Schema, fnv1a64, hash_ids, infer_schema
from ranks import run_ranks


# ---------------------------------------------------------------- the stable hash
def _fnv1a64_reference(data: bytes) -> int:
    h = 0xCBF29CE484222325
    for byte in data:
        h = ((h ^ byte) * 0x100000001B3) % 2**64
    return h


def test_fnv1a64_gives_the_published_values_and_matches_a_byte_loop():
    values = ["", "a", "foobar", "06513", "zürich", "x" * 70, None]
    got = fnv1a64(pl.Series(values, dtype=pl.String))
    # published FNV-1a 64 test vectors
    assert [hex(int(h)) for h in got[:3]] == [
        "0xcbf29ce484222325", "0xaf63dc4c8601ec8c", "0x85944171f73967e8"]
    assert [int(h) for h in got] == [_fnv1a64_reference((v or "").encode()) for v in values]


def test_hashed_ids_are_fixed_numbers_any_server_can_reproduce():
    # 3 + splitmix64_finaliser(fnv1a64(utf8 text)) % buckets: fixed forever (docs/data.md)
    ids = hash_ids(pl.Series(["a", "foobar", "06513", "123"]), 1000).to_list()
    assert ids == [739, 501, 453, 956]
    # integers hash as their decimal text, as the schema spells them
    assert hash_ids(pl.Series([123]), 1000).to_list() == [956]
    big = hash_ids(pl.Series([f"v{i}" for i in range(20_000)]), 100).to_numpy()
    counts = np.bincount(big - 3, minlength=100)
    assert big.min() >= 3 and counts.min() > 140 and counts.max() < 270  # spread evenly


def test_a_schema_hashed_by_another_function_is_refused(tmp_path):
    df = pl.DataFrame({"item": [f"i{i}" for i in range(50)], "label": [0, 1] * 25})
    schema = infer_schema(df).fit(df, hash_threshold=10)
    assert schema.field("item").hash == HASH
    data = schema.to_dict()
    assert Schema.from_dict(data) == schema
    del data["fields"][0]["hash"]  # a model saved before the hash was recorded
    with pytest.raises(DataError, match="hashed by an earlier autodrs"):
        Schema.from_dict(data)


# ---------------------------------------------------------------- provisional ids
def _mixed(n: int = 4000, seed: int = 0) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    wide = rng.integers(0, 40, n) * 10**12 + 7  # too wide a range for a value table
    # narrow values first, then a chunk far away: the field switches from table to dict
    switch = np.where(np.arange(n) < n // 2, rng.integers(0, 50, n), rng.integers(0, 50, n)
                      + 5 * 10**9)
    with_nulls = pl.Series([None if r < 0.1 else int(r * 30) - 10 for r in rng.random(n)],
                           dtype=pl.Int32)
    return pl.DataFrame({
        "wide": wide, "switch": switch, "with_nulls": with_nulls,
        "flag": rng.random(n) < 0.3,
        "rate": pl.Series(rng.integers(0, 4, n) / 2.0),  # floats declared categorical
        "label": rng.integers(0, 2, n).astype(np.int8),
    })


@pytest.mark.parametrize("fmt", ["parquet", "csv"])
def test_every_kind_of_categorical_value_encodes_as_in_memory(tmp_path, monkeypatch, fmt):
    df = _mixed()
    path = tmp_path / f"m.{fmt}"
    df.write_parquet(path) if fmt == "parquet" else df.write_csv(path)
    monkeypatch.setattr("autodrs.data.readers.CHUNK_ROWS", 700)
    monkeypatch.setattr("autodrs.data.readers.TEXT_BLOCK_BYTES", 8_192)
    names = ["wide", "switch", "with_nulls", "flag", "rate"]
    ds = load_dataset(str(path), categorical=names, seed=3, min_count=2,
                      cache_dir=tmp_path / "c", in_memory=False)
    ref, schema = _reference(df, 3, names, min_count=2)
    for f in schema.fields:
        assert ds.schema.field(f.name).vocab == f.vocab, f.name
    assert "5000000007" in ds.schema.field("switch").vocab  # values after the switch
    for split in ("train", "valid", "test"):
        np.testing.assert_array_equal(ds.split(split).to_memory().cat.numpy(),
                                      ref[split]["cat"])


def test_a_table_of_numbers_only_is_cached_and_read_back(tmp_path):
    """No categorical column: the cache writes empty id blocks and reads the numbers back."""
    rng = np.random.default_rng(0)
    df = pl.DataFrame({"a": rng.normal(size=2000), "b": rng.normal(size=2000),
                       "label": rng.integers(0, 2, 2000)})
    df.write_parquet(tmp_path / "n.parquet")
    ds = load_dataset(str(tmp_path / "n.parquet"), label="label", seed=3,
                      cache_dir=tmp_path / "c", in_memory=False)
    ref, _ = _reference(df, 3, [])
    for split in ("train", "valid", "test"):
        got = ds.split(split).to_memory()
        assert got.cat.shape[1] == 0
        np.testing.assert_allclose(got.num.numpy(), ref[split]["num"], rtol=1e-6, atol=1e-6)


def _reference(df: pl.DataFrame, seed: int, categorical: list[str], **fit: int):
    from autodrs.data.cache import row_hash, split_of

    which = split_of(row_hash(np.arange(df.height, dtype=np.uint64), seed))
    schema = infer_schema(df, categorical=categorical)
    parts = {s: df.filter(pl.Series(which == i)) for i, s in enumerate(("train", "valid",
                                                                        "test"))}
    schema.fit(parts["train"], **fit)
    return {s: schema.transform(p) for s, p in parts.items()}, schema


# ---------------------------------------------------------------- numbers, shards
def test_bottom_k_keeps_exactly_the_smallest_keys_in_bounded_buffers():
    rng = np.random.default_rng(0)
    sample = _BottomK(1000)
    keys, values = [], []
    for _ in range(40):
        k = rng.random(700)
        v = rng.normal(size=700)
        sample.add(v, k)
        keys.append(k)
        values.append(v)
        assert len(sample.keys) <= 1500
    k, v = np.concatenate(keys), np.concatenate(values)
    np.testing.assert_array_equal(np.sort(sample.sample()), np.sort(v[np.argsort(k)[:1000]]))


def test_shard_files_are_plain_npy_files(tmp_path):
    arr = np.arange(30, dtype=np.int32).reshape(10, 3)
    path = tmp_path / "a.npy"
    path.write_bytes(npy_header(arr.dtype, arr.shape) + arr.tobytes())
    np.testing.assert_array_equal(np.load(path), arr)
    np.testing.assert_array_equal(np.load(path, mmap_mode="r")[2:4], arr[2:4])
    df = pl.DataFrame({"a": np.arange(400) % 7, "x": np.linspace(0, 1, 400),
                       "label": np.arange(400) % 2})
    df.write_parquet(tmp_path / "t.parquet")
    ds = load_dataset(str(tmp_path / "t.parquet"), cache_dir=tmp_path / "c", in_memory=False)
    folder = Path(ds.info["cache"]["folder"])
    num = np.load(folder / "train" / "00000.num.npy")
    assert num.dtype == np.float32 and num.shape == (len(ds.train), 1)
    np.testing.assert_array_equal(num, ds.train.to_memory().num.numpy())
    assert not list(folder.rglob("*num-raw*"))  # raw numbers are gone once standardised


def test_a_full_disk_mid_shard_is_a_clear_error_and_leaves_no_half_cache(tmp_path, monkeypatch):
    pl.DataFrame({"a": np.arange(900) % 5, "label": np.arange(900) % 2}).write_parquet(
        tmp_path / "t.parquet")
    calls = []

    def no_space(fh, arr):
        calls.append(1)
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(cache_mod, "_write_bytes", no_space)
    with pytest.raises(DataError, match="no space left on the device"):
        load_dataset(str(tmp_path / "t.parquet"), cache_dir=tmp_path / "c")
    assert calls and not any((tmp_path / "c").iterdir())


# ---------------------------------------------------------------- prefetching
def test_prefetch_holds_at_most_depth_items_beside_the_consumers():
    started = []
    live = threading.Semaphore(0)

    def items():
        for i in range(8):
            started.append(i)
            live.release()
            yield i

    seen = []
    for item in prefetch(items(), depth=1):
        time.sleep(0.05)  # the producer has time to run ahead if it may
        # the item in hand, and at most one more started
        assert len(started) <= item + 2
        seen.append(item)
    assert seen == list(range(8))


def test_prefetch_raises_the_producers_error_and_stops_when_closed():
    def bad():
        yield 1
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        list(prefetch(bad()))
    made = []

    def endless():
        i = 0
        while True:
            made.append(i)
            yield i
            i += 1

    it = prefetch(endless())
    assert next(it) == 0
    it.close()  # joins the thread
    count = len(made)
    time.sleep(0.05)
    assert len(made) == count <= 2


# ---------------------------------------------------------------- data-parallel ranks
def _rank(rank: int, world: int, port: int, folder: str) -> None:
    import torch.distributed as dist

    from autodrs.data import dataset

    os.environ |= {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)}
    dist.init_process_group("gloo", rank=rank, world_size=world,
                            timeout=timedelta(seconds=60))
    real = dataset.build_cache

    def build(*args, **kwargs):
        if rank != 0:
            raise AssertionError(f"rank {rank} built the cache")
        time.sleep(1.0)  # the other rank would run ahead if it did not wait
        return real(*args, **kwargs)

    dataset.build_cache = build
    ds = load_dataset(str(Path(folder) / "t.parquet"), cache_dir=Path(folder) / "cache",
                      in_memory=False)
    Path(folder, f"rank{rank}.json").write_text(json.dumps({
        "cached": bool(ds.info.get("cached")), "rows": len(ds.train),
        "folder": ds.info["cache"]["folder"]}))
    dist.destroy_process_group()


def test_data_parallel_ranks_wait_for_rank_zeros_cache_build(tmp_path):
    rng = np.random.default_rng(0)
    pl.DataFrame({"a": rng.integers(0, 9, 2000), "x": rng.random(2000),
                  "label": rng.integers(0, 2, 2000)}).write_parquet(tmp_path / "t.parquet")
    r0, r1 = run_ranks(_rank, tmp_path)
    assert (r0["cached"], r1["cached"]) == (False, True)  # built once, by rank 0
    assert r0["rows"] == r1["rows"] and r0["folder"] == r1["folder"]
