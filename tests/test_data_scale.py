"""The out-of-core data path: the streaming encoder against the in-memory one, the on-disk
cache (interrupted builds, corrupt shards, a full disk), batches from disk in bounded
memory, and training from disk."""

from __future__ import annotations

import errno
import gzip
import json
from collections import Counter
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch

from autodrs.data import cache as cache_mod
from autodrs.data.cache import DiskData, row_hash, split_of
from autodrs.data.dataset import EncodedData, load_dataset
from autodrs.data.errors import DataError
from autodrs.data.schema import infer_schema


def _table(n: int = 3000, seed: int = 0) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    zips = np.array(["06513", "10001", "94043", "00501", "73301"])
    price = rng.lognormal(size=n)
    price[rng.random(n) < 0.05] = np.nan
    return pl.DataFrame({
        "user": [f"u{i}" for i in rng.zipf(1.5, n) % 400],
        "zip": zips[rng.integers(0, 5, n)],
        "item": rng.integers(0, 3000, n),  # many rare values: hashed below a threshold
        "maybe": pl.Series([None if r < 0.1 else f"m{int(r * 7)}" for r in rng.random(n)]),
        "tags": ["|".join(f"t{j}" for j in rng.integers(0, 30, rng.integers(0, 12)))
                 for _ in range(n)],
        "price": price,
        "label": rng.integers(0, 2, n),
    })


def _reference(df: pl.DataFrame, seed: int, **fit: int) -> dict[str, dict[str, np.ndarray]]:
    """Encode ``df`` the in-memory way: split by the documented row hash, fit on train."""
    which = split_of(row_hash(np.arange(df.height, dtype=np.uint64), seed))
    schema = infer_schema(df, categorical=["user", "zip", "item", "maybe"],
                          sequence=["tags"], numerical=["price"])
    parts = {s: df.filter(pl.Series(which == i)) for i, s in enumerate(("train", "valid",
                                                                        "test"))}
    schema.fit(parts["train"], **fit)
    return {s: schema.transform(p) for s, p in parts.items()}, schema


@pytest.mark.parametrize("fmt", ["parquet", "csv"])
def test_streaming_encoder_matches_the_in_memory_encoder(tmp_path, monkeypatch, fmt):
    df = _table()
    path = tmp_path / f"t.{fmt}"
    df.write_parquet(path) if fmt == "parquet" else df.write_csv(path)
    # many small chunks and shards, so the streaming pass really merges pieces
    monkeypatch.setattr("autodrs.data.readers.CHUNK_ROWS", 700)
    monkeypatch.setattr("autodrs.data.readers.TEXT_BLOCK_BYTES", 16_384)
    monkeypatch.setattr(cache_mod, "SHARD_ROWS", 500)
    ds = load_dataset(str(path), categorical=["user", "zip", "item"], sequence=["tags"],
                      numerical=["price"], seed=7, min_count=2, hash_threshold=300,
                      cache_dir=tmp_path / "cache", in_memory=False)
    assert ds.info["cache"]["shards"] > 3
    ref, schema = _reference(df, 7, min_count=2, hash_threshold=300)
    for f in schema.fields:
        got = ds.schema.field(f.name)
        assert (got.vocab, got.hash_buckets, got.max_len) == (f.vocab, f.hash_buckets, f.max_len)
        assert got.mean == pytest.approx(f.mean, rel=1e-12)
        assert got.std == pytest.approx(f.std, rel=1e-12)
        np.testing.assert_allclose(got.boundaries or [], f.boundaries or [], rtol=1e-9)
    assert ds.schema.field("item").hash_buckets == 300  # the hashed path was taken
    assert ds.schema.field("user").hash_buckets == 0
    assert ds.schema.field("zip").vocab is not None and "06513" in ds.schema.field("zip").vocab
    for split in ("train", "valid", "test"):
        mem = ds.split(split).to_memory()
        np.testing.assert_array_equal(mem.cat.numpy(), ref[split]["cat"])
        np.testing.assert_allclose(mem.num.numpy(), ref[split]["num"], rtol=1e-6, atol=1e-7)
        np.testing.assert_array_equal(mem.seq["tags"].numpy(), ref[split]["seq:tags"])
        np.testing.assert_array_equal(mem.label.numpy(), ref[split]["label"])


def test_gzip_text_reads_like_plain_text(tmp_path):
    df = _table(600)
    df.write_csv(tmp_path / "t.csv")
    with gzip.open(tmp_path / "t.csv.gz", "wb") as fh:
        fh.write((tmp_path / "t.csv").read_bytes())
    a = load_dataset(str(tmp_path / "t.csv"), cache=False)
    b = load_dataset(str(tmp_path / "t.csv.gz"), cache=False)
    assert a.schema == b.schema
    np.testing.assert_array_equal(a.train.cat.numpy(), b.train.cat.numpy())


def test_text_columns_keep_their_spelling_and_numbers_are_inferred(tmp_path):
    path = tmp_path / "z.csv"
    path.write_text("zip,score,label\n" + "".join(
        f"{z},{s},{i % 2}\n" for i, (z, s) in enumerate([("06513", "0.5"), ("10001", "1.25")]
                                                         * 30)))
    ds = load_dataset(str(path), cache=False)
    assert ds.schema.field("zip").kind == "categorical"
    assert set(ds.schema.field("zip").vocab) == {"06513", "10001"}
    assert ds.schema.field("score").kind == "numerical"


@pytest.mark.parametrize("text,message", [
    ("a,a,label\n1,2,0\n", "duplicate column names in the header: a"),
    ("a,b,label\n1,2,0\n1,2\n1,2,1\n", "line 3: expected 3 fields"),
    ("a,b,label\n1,2,0\n1,2,1,5\n", "line 3: expected 3 fields"),
])
def test_malformed_text_is_named_on_the_streaming_path(tmp_path, text, message):
    path = tmp_path / "bad.csv"
    path.write_text(text)
    with pytest.raises(DataError, match=message):
        load_dataset(str(path), cache=False)


def test_rows_caps_what_is_read(tmp_path):
    _table(2000).write_parquet(tmp_path / "t.parquet")
    ds = load_dataset(str(tmp_path / "t.parquet"), rows=500, cache_dir=tmp_path / "c")
    assert ds.info["rows"] == 500 and ds.info["rows_cap"] == 500
    full = load_dataset(str(tmp_path / "t.parquet"), cache_dir=tmp_path / "c")
    assert full.info["rows"] == 2000  # a capped read is cached under its own key


# ---------------------------------------------------------------- the cache folder
def test_interrupted_build_leaves_no_cache_a_later_run_reads(tmp_path, monkeypatch):
    _table(800).write_parquet(tmp_path / "t.parquet")

    def crash(*args, **kwargs):
        raise KeyboardInterrupt

    with monkeypatch.context() as m:
        m.setattr(cache_mod, "_finalise", crash)
        with pytest.raises(KeyboardInterrupt):
            load_dataset(str(tmp_path / "t.parquet"), cache_dir=tmp_path / "c")
    assert not any((tmp_path / "c").iterdir())  # neither a cache nor a temporary folder
    ds = load_dataset(str(tmp_path / "t.parquet"), cache_dir=tmp_path / "c")
    assert "cached" not in ds.info and len(ds.train) > 0


def test_killed_build_folder_is_removed_and_a_truncated_shard_is_rebuilt(tmp_path):
    _table(800).write_parquet(tmp_path / "t.parquet")
    ds = load_dataset(str(tmp_path / "t.parquet"), cache_dir=tmp_path / "c")
    folder = Path(ds.info["cache"]["folder"])
    stale = tmp_path / "c" / ".tmp-deadbeef-999999999"  # a build whose process is gone
    stale.mkdir()
    shard = folder / "train" / "00000.cat.npy"
    shard.write_bytes(shard.read_bytes()[:-40])
    again = load_dataset(str(tmp_path / "t.parquet"), cache_dir=tmp_path / "c")
    assert "cached" not in again.info  # rebuilt, not read
    np.testing.assert_array_equal(again.train.cat.numpy(), ds.train.cat.numpy())
    assert not stale.exists()
    (folder / "info.json").unlink()  # a build that never finished writing
    assert "cached" not in load_dataset(str(tmp_path / "t.parquet"),
                                        cache_dir=tmp_path / "c").info


def test_full_disk_is_a_clear_error_and_leaves_no_half_cache(tmp_path, monkeypatch):
    _table(800).write_parquet(tmp_path / "t.parquet")

    def no_space(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(cache_mod.np, "save", no_space)
    with pytest.raises(DataError, match="no space left on the device"):
        load_dataset(str(tmp_path / "t.parquet"), cache_dir=tmp_path / "c")
    assert not any((tmp_path / "c").iterdir())


# ---------------------------------------------------------------- batches from disk
@pytest.fixture()
def on_disk(tmp_path, monkeypatch):
    monkeypatch.setattr(cache_mod, "SHARD_ROWS", 300)
    _table(3000).write_parquet(tmp_path / "t.parquet")
    return load_dataset(str(tmp_path / "t.parquet"), sequence=["tags"], in_memory=False,
                        cache_dir=tmp_path / "c")


def test_disk_batches_cover_every_row_once_and_follow_the_seed(on_disk):
    train = on_disk.train
    assert isinstance(train, DiskData) and len(train.pieces) > 5
    train.shuffle_rows = 700
    mem = train.to_memory()
    whole = Counter(map(tuple, np.c_[mem.cat.numpy(), mem.num.numpy()].tolist()))
    shard_of = {r: i // 300 for i, r in enumerate(
        map(tuple, np.c_[mem.cat.numpy(), mem.num.numpy()].tolist()))}

    def epoch(seed):
        rows = []
        for b in train.batches(128, shuffle=True, generator=torch.Generator().manual_seed(seed)):
            assert len(b) > 1
            rows += list(map(tuple, np.c_[b.cat.numpy(), b.num.numpy()].tolist()))
        return rows

    a, b, c = epoch(0), epoch(0), epoch(1)
    assert Counter(a) == whole and a == b and a != c
    # shuffled beyond one shard: the first batch draws from several shards
    assert len({shard_of[r] for r in a[:128]}) > 1
    plain = list(train.batches(1000))
    assert sum(len(x) for x in plain) == len(train)
    np.testing.assert_array_equal(torch.cat([x.cat for x in plain]).numpy(), mem.cat.numpy())


def test_disk_data_shards_for_ranks_are_disjoint_and_cover(on_disk):
    train = on_disk.train
    parts = [train.shard(r, 3) for r in range(3)]
    assert sum(len(p) for p in parts) == len(train)
    assert max(len(p) for p in parts) - min(len(p) for p in parts) <= len(train.pieces)
    stacked = np.concatenate([p.to_memory().cat.numpy() for p in parts])
    assert sorted(map(tuple, stacked.tolist())) == sorted(
        map(tuple, train.to_memory().cat.numpy().tolist()))


def test_training_from_disk_holds_only_a_buffer_in_memory(on_disk, monkeypatch):
    from autodrs.experiment import fit_spec
    from autodrs.models.backbones import backbone_spec
    from autodrs.train.trainer import TrainConfig

    train = on_disk.train
    train.shuffle_rows = 400  # the memory cap of this test: a fifth of the train rows
    largest = []
    real = DiskData._read

    def spy(self, pieces):
        largest.append(sum(len(p) for p in pieces))
        return real(self, pieces)

    monkeypatch.setattr(DiskData, "_read", spy)
    config = TrainConfig(epochs=2, batch_size=64, progress=False, threads=1, seed=0)
    outcome = fit_spec(on_disk, backbone_spec("deepfm", 4), config)
    assert outcome.fit.samples == 2 * len(train)
    assert max(largest) <= 400 + 300 and len(train) > 2 * max(largest)
    assert 0.0 < outcome.metrics["test"]["auc"] < 1.0


def test_sample_draws_a_uniform_part_in_memory(on_disk):
    part = on_disk.train.sample(600, seed=0)
    assert isinstance(part, EncodedData)
    assert 450 < len(part) < 750
    assert set(part.seq) == {"tags"}


def test_cache_info_records_size_and_mode(on_disk):
    cache = on_disk.info["cache"]
    assert cache["in_memory"] is False and cache["bytes"] > 0
    info = json.loads((Path(cache["folder"]) / "info.json").read_text())
    assert info["sizes"] == on_disk.info["sizes"]


@pytest.mark.parametrize("batch_size", [7, 64, 128])
def test_disk_batches_count_as_the_trainer_expects(on_disk, batch_size):
    from autodrs.train.trainer import shuffled_batch_count

    train = on_disk.train
    train.shuffle_rows = 700
    sizes = [len(b) for b in train.batches(batch_size, shuffle=True,
                                           generator=torch.Generator().manual_seed(0))]
    assert len(sizes) == shuffled_batch_count(len(train), batch_size)
    assert sum(sizes) == len(train) and min(sizes) > 1


def test_train_rows_flag_caps_the_rows_read(tmp_path):
    from typer.testing import CliRunner

    from autodrs.cli import app

    out = tmp_path / "run"
    result = CliRunner().invoke(app, ["train", "--data", "synthetic?rows=5000", "--rows", "1200",
                                      "--model", "lr", "--epochs", "1", "--out", str(out),
                                      "--no-progress", "--threads", "1"])
    assert result.exit_code == 0, result.output
    data = json.loads((out / "result.json").read_text())
    assert data["data"]["rows"] == 1200 and data["data"]["rows_cap"] == 1200
    bad = CliRunner().invoke(app, ["train", "--rows", "3", "--out", str(tmp_path / "r2")])
    assert bad.exit_code == 2 and "rows must be at least 10" in bad.output


def test_memory_or_disk_is_judged_on_the_tensors_not_the_cache(tmp_path, monkeypatch):
    """In-memory ids are int64, twice the cache's int32: a limit the cache fits under but
    the tensors do not keeps the data on disk."""
    from autodrs.data.dataset import load_dataset as load
    from autodrs.data.dataset import memory_bytes

    first = load("synthetic?rows=3000", seed=1, cache_dir=tmp_path / "c", in_memory=False)
    cache = first.info["cache"]
    built = json.loads((Path(cache["folder"]) / "info.json").read_text())
    need = memory_bytes(built, first.schema)
    per_row = sum(t.element_size() * t[0].numel()
                  for t in (first.train.to_memory().cat, first.train.to_memory().num)) + 4
    assert need == per_row * first.info["rows"]
    assert cache["bytes"] < need
    monkeypatch.setenv("AUTODRS_IN_MEMORY_BYTES", str(cache["bytes"]))
    again = load("synthetic?rows=3000", seed=1, cache_dir=tmp_path / "c")
    assert again.info["cache"]["in_memory"] is False
    monkeypatch.setenv("AUTODRS_IN_MEMORY_BYTES", str(need))
    assert load("synthetic?rows=3000", seed=1, cache_dir=tmp_path / "c").info["cache"][
        "in_memory"] is True
