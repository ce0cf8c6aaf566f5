"""The streaming encoder's compact shards and its equality with the in-memory encoder when
a field's provisional ids outgrow 16 bits in the middle of a shard."""

from __future__ import annotations

import numpy as np
import polars as pl

from autodrs.data import cache as cache_mod
from autodrs.data.cache import row_hash, split_of
from autodrs.data.dataset import load_dataset
from autodrs.data.schema import infer_schema


def _wide_table(n: int = 100_000) -> pl.DataFrame:
    """``big`` holds 50 values in its first 30,000 rows, then a new value in every row
    (70,050 distinct in all: provisional ids pass 65,535 in the last chunks)."""
    rng = np.random.default_rng(3)
    big = np.concatenate([rng.integers(0, 50, 30_000), 1_000 + np.arange(n - 30_000)])
    return pl.DataFrame({"big": big, "small": rng.integers(0, 9, n).astype(str),
                         "label": rng.integers(0, 2, n)})


def test_ids_past_16_bits_widen_the_open_shard_and_match_the_in_memory_encoder(
        tmp_path, monkeypatch):
    df = _wide_table()
    df.write_parquet(tmp_path / "w.parquet")
    monkeypatch.setattr("autodrs.data.readers.CHUNK_ROWS", 10_000)
    monkeypatch.setattr(cache_mod, "SHARD_ROWS", 25_000)
    ds = load_dataset(str(tmp_path / "w.parquet"), categorical=["big", "small"], seed=5,
                      cache_dir=tmp_path / "c", in_memory=False)
    folder = tmp_path / "c" / next(p.name for p in (tmp_path / "c").iterdir())
    shards = [np.load(p) for p in sorted((folder / "train").glob("*.cat.npy"))]
    dtypes = [s.dtype for s in shards]
    assert shards[-1].max() > 65_535  # provisional ids past 16 bits
    # the first shards fit 16 bits; the one open when ids passed 65,535 was widened in
    # place, and the shards after it are int32 from the start
    assert dtypes[0] == np.uint16 and dtypes[-1] == np.int32 and len(dtypes) == 4
    assert np.load(folder / "test" / "00000.cat.npy", mmap_mode="r").dtype == np.int32

    which = split_of(row_hash(np.arange(df.height, dtype=np.uint64), 5))
    schema = infer_schema(df, categorical=["big", "small"])
    parts = {s: df.filter(pl.Series(which == i))
             for i, s in enumerate(("train", "valid", "test"))}
    schema.fit(parts["train"])
    assert ds.schema.field("big").vocab == schema.field("big").vocab
    for split, part in parts.items():
        got = ds.split(split).to_memory().cat.numpy()
        np.testing.assert_array_equal(got, schema.transform(part)["cat"])
