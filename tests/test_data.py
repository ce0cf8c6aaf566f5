"""The data layer: sources, schema inference, encoding, splits, caching and bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from autodrs.data.dataset import load_dataset, stream_parquet
from autodrs.data.errors import DataError
from autodrs.data.schema import FIRST_ID, MISSING, OOV, PAD, infer_schema
from autodrs.data.sources import AVAZU_COLUMNS, load_table
from autodrs.data.synthetic import SyntheticGenerator, write_synthetic


def _write_csv(path: Path, rows: list[dict]) -> Path:
    pl.DataFrame(rows).write_csv(path)
    return path


def _toy_rows(n: int = 200) -> list[dict]:
    rng = np.random.default_rng(0)
    return [
        {"user": f"u{rng.integers(20)}", "item": int(rng.integers(50)),
         "price": float(rng.normal()), "tags": "a|b" if i % 3 else "c",
         "label": int(rng.integers(2))}
        for i in range(n)
    ]


# ---------------------------------------------------------------- MovieLens
def test_movielens_builtin_has_the_task_fields(movielens):
    schema = movielens.schema
    assert schema.field_names == ["user_id", "item_id", "age", "gender", "occupation",
                                  "zip_code", "release_year", "genres", "hour", "weekday"]
    assert schema.field("genres").kind == "sequence"
    assert sum(movielens.info["sizes"].values()) == 100_000
    # each row's split is drawn from a hash of its number and the seed: 80/10/10 on average
    sizes = movielens.info["sizes"]
    assert abs(sizes["train"] - 80_000) < 800 and abs(sizes["valid"] - 10_000) < 400
    # label = rating >= 4: 55,375 of the 100,000 MovieLens-100k ratings are 4 or 5
    assert movielens.info["positive_rate"] == pytest.approx(0.55375)


def test_grouplens_layout_reads_like_the_builtin(tmp_path):
    folder = tmp_path / "ml-100k"
    folder.mkdir()
    (folder / "u.data").write_text("1\t10\t5\t881250949\n2\t20\t3\t891717742\n")
    (folder / "u.user").write_text("1|24|M|technician|85711\n2|53|F|other|94043\n")
    flags = ["0"] * 19
    flags[1], flags[15] = "1", "1"  # Action, Sci-Fi
    (folder / "u.item").write_text(
        "10|A (1995)|01-Jan-1995||http://x|" + "|".join(flags) + "\n"
        "20|B (1997)|01-Jan-1997||http://y|" + "|".join(["1"] + ["0"] * 18) + "\n")
    table = load_table(str(folder))
    df = table.df.sort("user_id")
    assert df["label"].to_list() == [1, 0]
    assert df["genres"].to_list() == [["Action", "Sci-Fi"], ["unknown"]]
    assert df["release_year"].to_list() == ["1995", "1997"]
    assert table.kinds["genres"] == "sequence"


# ---------------------------------------------------------------- encoding
def test_vocab_is_fit_on_train_only_and_ordered_by_frequency():
    df = pl.DataFrame({"c": ["x", "x", "x", "y", "y", "z", None], "label": [0, 1] * 3 + [1]})
    schema = infer_schema(df).fit(df.head(5))
    f = schema.field("c")
    assert f.vocab == ["x", "y"]
    enc = schema.transform(df)["cat"][:, 0]
    assert list(enc) == [FIRST_ID] * 3 + [FIRST_ID + 1] * 2 + [OOV, MISSING]


def test_min_count_sends_rare_values_to_oov():
    df = pl.DataFrame({"c": ["a"] * 5 + ["b"], "label": [0, 1] * 3})
    schema = infer_schema(df).fit(df, min_count=2)
    assert schema.field("c").vocab == ["a"]
    assert schema.transform(df)["cat"][-1, 0] == OOV


def test_hashing_bounds_huge_vocabularies():
    df = pl.DataFrame({"c": [f"v{i}" for i in range(100)], "label": [0, 1] * 50})
    schema = infer_schema(df).fit(df, hash_threshold=10)
    f = schema.field("c")
    ids = schema.transform(df)["cat"][:, 0]
    assert f.hash_buckets == 10 and f.vocab_size == FIRST_ID + 10
    assert ids.min() >= FIRST_ID and ids.max() < f.vocab_size


def test_numerical_standardised_with_train_statistics_and_missing_is_mean():
    df = pl.DataFrame({"x": [1.0, 2.0, 3.0, None], "label": [0, 1, 0, 1]})
    schema = infer_schema(df).fit(df.head(3))
    z = schema.transform(df)["num"][:, 0]
    np.testing.assert_allclose(z[:3], (np.array([1, 2, 3]) - 2) / np.std([1, 2, 3]), rtol=1e-6)
    assert z[3] == 0.0


def test_sequences_padded_and_encoded():
    df = pl.DataFrame({"g": ["a|b", "b", "", "c|a|b"], "label": [0, 1, 0, 1]})
    schema = infer_schema(df, sequence=["g"]).fit(df.head(2))
    seq = schema.transform(df)["seq:g"]
    a, b = (FIRST_ID + schema.field("g").vocab.index(t) for t in "ab")
    assert seq.shape == (4, 2)
    assert list(seq[0]) == [a, b] and list(seq[1]) == [b, PAD]
    assert seq[2, 0] == MISSING
    assert list(seq[3]) == [a, b]  # cut to the train max length, the most recent items kept


def test_schema_inference_and_overrides():
    df = pl.DataFrame({"s": ["a", "b"], "i": [1, 2], "f": [0.5, 1.5], "label": [0, 1]})
    schema = infer_schema(df)
    assert [(f.name, f.kind) for f in schema.fields] == [
        ("s", "categorical"), ("i", "categorical"), ("f", "numerical")]
    schema = infer_schema(df, numerical=["i"], categorical=["f"])
    assert schema.field("i").kind == "numerical" and schema.field("f").kind == "categorical"


def test_schema_round_trips_through_json(tmp_path, tiny_synthetic):
    tiny_synthetic.schema.save(tmp_path / "s.json")
    from autodrs.data.schema import Schema

    loaded = Schema.load(tmp_path / "s.json")
    assert loaded == tiny_synthetic.schema


# ---------------------------------------------------------------- files and splits
def test_csv_file_with_declared_kinds_and_yaml_schema(tmp_path):
    path = _write_csv(tmp_path / "toy.csv", _toy_rows())
    ds = load_dataset(str(path), sequence=["tags"], cache=False)
    assert ds.schema.field("tags").kind == "sequence"
    assert ds.schema.field("item").kind == "categorical"
    (tmp_path / "schema.yaml").write_text("numerical: [item]\nsequence: [tags]\n")
    ds = load_dataset(str(path), schema_file=tmp_path / "schema.yaml", cache=False)
    assert ds.schema.field("item").kind == "numerical"


def test_tsv_and_parquet_sources(tmp_path):
    df = pl.DataFrame(_toy_rows())
    df.write_csv(tmp_path / "toy.tsv", separator="\t")
    df.write_parquet(tmp_path / "toy.parquet")
    a = load_dataset(str(tmp_path / "toy.tsv"), cache=False)
    b = load_dataset(str(tmp_path / "toy.parquet"), cache=False)
    assert a.schema.field_names == b.schema.field_names
    assert np.array_equal(a.train.label.numpy(), b.train.label.numpy())


def test_random_split_depends_on_seed_and_time_split_is_ordered(tmp_path):
    rows = _toy_rows(100)
    for i, r in enumerate(rows):
        r["ts"] = 100 - i
    path = _write_csv(tmp_path / "t.csv", rows)
    a = load_dataset(str(path), seed=1, cache=False)
    b = load_dataset(str(path), seed=2, cache=False)
    assert not np.array_equal(a.test.label.numpy(), b.test.label.numpy()) or not np.array_equal(
        a.test.cat.numpy(), b.test.cat.numpy())
    t = load_dataset(str(path), split="time", time="ts", cache=False)
    assert "ts" not in t.schema.field_names
    # the latest 10 rows (smallest i) are the test split, the 10 before them valid
    assert len(t.test) == 10 and len(t.valid) == 10
    vocab = t.schema.field("item").vocab
    decoded = [int(vocab[i - FIRST_ID]) if i >= FIRST_ID else None
               for i in t.test.cat[:, t.schema.categorical.index("item")].tolist()]
    expected = [rows[i]["item"] for i in range(10)]
    assert sorted(d for d in decoded if d is not None) == sorted(
        e for e, d in zip(expected, decoded, strict=True) if d is not None)


def test_second_load_comes_from_the_cache(tmp_path):
    path = _write_csv(tmp_path / "c.csv", _toy_rows())
    first = load_dataset(str(path), cache_dir=tmp_path / "cache")
    second = load_dataset(str(path), cache_dir=tmp_path / "cache")
    assert "cached" not in first.info and second.info["cached"] is True
    assert np.array_equal(first.train.cat.numpy(), second.train.cat.numpy())
    assert second.schema == first.schema


def test_criteo_layout(tmp_path):
    rng = np.random.default_rng(0)
    lines = []
    for i in range(60):
        ints = [str(int(rng.integers(0, 100))) if rng.random() > 0.1 else "" for _ in range(13)]
        cats = [f"{rng.integers(0, 5):08x}" if rng.random() > 0.1 else "" for _ in range(26)]
        lines.append("\t".join([str(i % 2), *ints, *cats]))
    path = tmp_path / "criteo_sample.txt"
    path.write_text("\n".join(lines) + "\n")
    ds = load_dataset(str(path), cache=False)
    assert ds.schema.numerical == [f"I{i}" for i in range(1, 14)]
    assert ds.schema.categorical == [f"C{i}" for i in range(1, 27)]
    assert ds.schema.field("I1").transform == "log"
    assert len(ds.train) + len(ds.valid) + len(ds.test) == 60


def test_malformed_criteo_row_names_the_line(tmp_path):
    good = "\t".join(["1"] + ["1"] * 13 + ["a"] * 26)
    path = tmp_path / "criteo_bad.txt"
    path.write_text("\n".join([good, good, "1\t2\t3", good]) + "\n")
    with pytest.raises(DataError, match="line 3"):
        load_table(str(path))
    path.write_text("\n".join([good, "\t".join(["1", "x"] + ["1"] * 12 + ["a"] * 26)]) + "\n")
    with pytest.raises(DataError, match="line 2.*I1"):
        load_table(str(path))


def test_avazu_layout_and_malformed_row(tmp_path):
    header = ",".join(AVAZU_COLUMNS)
    row = ["1000", "1", "14102100", "1005", "0", "s1", "d1", "c1", "a1", "ad", "ac", "dev",
           "ip", "m", "1", "0", "15706", "320", "50", "1722", "0", "35", "-1", "79"]
    path = tmp_path / "avazu.csv"
    path.write_text(header + "\n" + "\n".join([",".join(row)] * 20) + "\n")
    table = load_table(str(path))
    assert "label" in table.df.columns and "hour_of_day" in table.df.columns
    assert "id" not in table.df.columns and table.time == "_time"
    path.write_text(header + "\n" + ",".join(row) + "\n" + ",".join(row[:5]) + "\n")
    with pytest.raises(DataError, match="line 3"):
        load_table(str(path))


# ---------------------------------------------------------------- bad input
@pytest.mark.parametrize("content,kwargs,message", [
    (None, {}, "neither a built-in"),
    ("", {}, "empty"),
    ("a,b\n1,0\n2,1\n", {}, "label column 'label' not found"),
    ("a,label\n" + "1,0\n2,3\n" * 6, {}, "not binary"),
    ("a,label\n" + "1,0\n2,1\n" * 6, {"categorical": ["zzz"]}, "'zzz' is not a column"),
    ("a,b,label\n" + "1,,0\n2,,1\n" * 6, {}, "'b' is entirely null"),
    ("a,label\n" + "1,0\n2,\n" * 6, {}, "missing values"),
])
def test_bad_input_errors_name_the_problem(tmp_path, content, kwargs, message):
    path = tmp_path / "bad.csv"
    if content is not None:
        path.write_text(content)
    with pytest.raises(DataError, match=message):
        load_dataset(str(path), cache=False, **kwargs)


def test_nan_label_is_rejected():
    df = pl.DataFrame({"a": [1, 2], "label": [0.0, float("nan")]})
    with pytest.raises(DataError, match="NaN"):
        infer_schema(df).fit(df).transform(df)


def test_unseen_categories_at_prediction_time_map_to_oov(tiny_synthetic):
    schema = tiny_synthetic.schema
    row = {f.name: ("never-seen" if f.kind == "categorical" else 0.0) for f in schema.fields}
    enc = schema.transform(pl.DataFrame([row]), require_label=False)
    assert (enc["cat"] == OOV).all()
    with pytest.raises(DataError, match="columns missing"):
        schema.transform(pl.DataFrame([{"r0": 1}]), require_label=False)


# ---------------------------------------------------------------- synthetic
def test_synthetic_truth_and_determinism():
    a = SyntheticGenerator(seed=3).frame(1000)
    b = SyntheticGenerator(seed=3).frame(1000)
    assert a.equals(b)
    truth = SyntheticGenerator(seed=3).truth(1000)
    assert set(truth["relevant"]) >= {"r0", "r1", "num0"}
    assert len(truth["pairs"]) == 5
    # the redundant copy is a bijective relabelling of its source
    pairs = a.select("r0", "r0_copy").unique()
    assert pairs["r0"].n_unique() == pairs.height == pairs["r0_copy"].n_unique()


def test_synthetic_bayes_auc_is_reported(tiny_synthetic):
    truth = tiny_synthetic.info["truth"]
    assert 0.75 < truth["bayes_auc"] < 1.0
    assert "_p_true" not in tiny_synthetic.schema.field_names


def test_write_synthetic_streams_to_parquet(tmp_path):
    truth = write_synthetic(tmp_path / "s.parquet", rows=1200, seed=5)
    assert json.loads((tmp_path / "s.parquet.truth.json").read_text()) == truth
    df = pl.read_parquet(tmp_path / "s.parquet")
    assert df.height == 1200
    assert df.equals(SyntheticGenerator(seed=5).frame(1200))


def test_stream_parquet_matches_in_memory_encoding(tmp_path, tiny_synthetic):
    write_synthetic(tmp_path / "s.parquet", rows=1000, seed=1)
    chunks = list(stream_parquet(tmp_path / "s.parquet", tiny_synthetic.schema, batch_rows=300))
    assert [len(c) for c in chunks] == [300, 300, 300, 100]
    full = tiny_synthetic.schema.transform(pl.read_parquet(tmp_path / "s.parquet"))
    np.testing.assert_array_equal(np.concatenate([c.cat.numpy() for c in chunks]), full["cat"])
