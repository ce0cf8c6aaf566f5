"""Scale features: the Criteo and Avazu layout generator (read back by autodrs's own
readers, reproducible, with planted signal), and batch prediction over a file in chunks."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from sklearn.metrics import roc_auc_score

from autodrs.data import criteo_gen
from autodrs.data.criteo_gen import CRITEO, _power_law_rank, write_layout
from autodrs.data.dataset import load_dataset
from autodrs.data.sources import CRITEO_CAT, CRITEO_NUM, _guess_format, open_source


def _read(path: Path, fmt: str) -> pl.DataFrame:
    return pl.concat(list(open_source(str(path), fmt=fmt).chunks()))


@pytest.fixture(scope="module")
def criteo_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("criteo") / "criteo_sample.txt"
    write_layout("criteo", path, rows=20_000, seed=3)
    return path


def test_criteo_layout_reads_back_with_the_expected_fields(criteo_file):
    raw = criteo_file.read_text().splitlines()
    assert len(raw) == 20_000
    assert all(line.count("\t") == 39 for line in raw[:500])  # 40 fields, no header
    assert _guess_format(criteo_file) == "criteo"
    df = _read(criteo_file, "criteo")
    assert df.columns == ["label", *CRITEO_NUM, *CRITEO_CAT]
    assert df.height == 20_000
    truth = json.loads(Path(f"{criteo_file}.truth.json").read_text())
    assert df["label"].mean() == pytest.approx(truth["click_rate"])
    assert abs(truth["click_rate"] - CRITEO.click_rate) < 0.02
    for c in CRITEO_NUM:
        assert df[c].dtype == pl.Float64
    assert df["I2"].null_count() == 0 and df["I2"].min() == -3
    assert df["I1"].min() >= 0
    for c in CRITEO_CAT:
        assert df[c].drop_nulls().str.contains("^[0-9a-f]{8}$").all(), c
    # empty fields arrive as nulls at the layout's missing rates
    expected = {c.name: c.missing for c in CRITEO.categorical} | {
        c.name: c.missing for c in CRITEO.integer}
    for name, rate in expected.items():
        assert abs(df[name].null_count() / df.height - rate) < 0.02, name
    # a power law: a few values carry much of a field, most are rare
    counts = df["C3"].value_counts()["count"]
    assert counts.max() > 50 and (counts == 1).sum() > 5000
    assert df["C9"].n_unique() <= 3


def test_criteo_layout_encodes_through_the_dataset_path(criteo_file, tmp_path):
    ds = load_dataset(str(criteo_file), fmt="criteo", seed=0, cache_dir=tmp_path)
    kinds = {f.name: f.kind for f in ds.schema.fields}
    assert kinds == {c: "numerical" for c in CRITEO_NUM} | {c: "categorical" for c in CRITEO_CAT}
    assert ds.info["rows"] == 20_000


def test_planted_fields_predict_the_click_and_noise_fields_do_not(criteo_file):
    """Target encoding fitted on one half, scored on the other: the planted main-effect and
    cross fields rank clicks, a noise field does not."""
    df = _read(criteo_file, "criteo").with_row_index()
    fit, held = df.filter(pl.col("index") % 2 == 0), df.filter(pl.col("index") % 2 == 1)

    def auc(cols: list[str]) -> float:
        rate = fit.group_by(cols).agg(pl.col("label").mean().alias("p"))
        scored = held.join(rate, on=cols, how="left", nulls_equal=True).with_columns(
            pl.col("p").fill_null(fit["label"].mean()))
        return roc_auc_score(scored["label"].to_numpy(), scored["p"].to_numpy())

    assert auc(["C6"]) > 0.56
    assert auc(["C17"]) > 0.55
    # the planted cross C17 x C20 adds to C17's main effect (C20 has none of its own)
    assert auc(["C17", "C20"]) > auc(["C17"]) + 0.015
    assert abs(auc(["C23"]) - 0.5) < 0.03  # noise
    truth = json.loads(Path(f"{criteo_file}.truth.json").read_text())
    assert "C23" in truth["noise_fields"] and truth["bayes_auc"] > 0.75


def test_same_seed_same_bytes_and_gzip_by_extension(tmp_path, monkeypatch):
    monkeypatch.setattr(criteo_gen, "CHUNK_ROWS", 700)  # several chunks
    a, b, c = tmp_path / "a.txt", tmp_path / "b.txt", tmp_path / "c.txt"
    write_layout("criteo", a, rows=2000, seed=5)
    write_layout("criteo", b, rows=2000, seed=5)
    write_layout("criteo", c, rows=2000, seed=6)
    assert a.read_bytes() == b.read_bytes()
    assert a.read_bytes() != c.read_bytes()
    g1, g2 = tmp_path / "g1.txt.gz", tmp_path / "g2.txt.gz"
    write_layout("criteo", g1, rows=2000, seed=5)
    write_layout("criteo", g2, rows=2000, seed=5)
    assert g1.read_bytes() == g2.read_bytes()
    assert gzip.decompress(g1.read_bytes()) == a.read_bytes()
    assert _read(g1, "criteo").height == 2000
    assert not list(tmp_path.glob(".*.tmp"))  # no temporary file left behind


def test_avazu_layout_reads_back(tmp_path):
    path = tmp_path / "train.csv"
    truth = write_layout("avazu", path, rows=3000, seed=0)
    assert path.read_text().splitlines()[0].startswith("id,click,hour,C1,banner_pos")
    assert _guess_format(path) == "avazu"
    df = _read(path, "avazu")
    assert df.height == 3000
    assert {"label", "hour_of_day", "weekday", "site_id", "device_ip"} <= set(df.columns)
    assert df["label"].mean() == pytest.approx(truth["click_rate"])
    assert df["_time"].is_sorted()  # the Avazu file is in time order
    assert df["hour_of_day"].n_unique() == 24


def test_power_law_ranks_are_heavy_tailed():
    rng = np.random.default_rng(0)
    ranks = _power_law_rank(rng.random(1_000_000), 10_131_227, 0.95)
    assert ranks.min() >= 0 and ranks.max() < 10_131_227
    distinct = np.unique(ranks).size
    assert distinct > 300_000  # at 10M rows this law gives over a million values
    assert (ranks == 0).mean() > 0.01  # and a head value is seen in over 1% of rows


def test_bad_layout_arguments_are_clear_errors(tmp_path):
    with pytest.raises(ValueError, match="unknown layout 'kdd'"):
        write_layout("kdd", tmp_path / "x.txt", rows=10)
    with pytest.raises(ValueError, match="at least 1"):
        write_layout("criteo", tmp_path / "x.txt", rows=0)
    with pytest.raises(ValueError, match="is a folder"):
        write_layout("criteo", tmp_path, rows=10)


def test_make_synthetic_writes_the_criteo_layout(tmp_path):
    from typer.testing import CliRunner

    from autodrs.cli import app

    path = tmp_path / "day_0.txt.gz"
    res = CliRunner().invoke(app, ["make-synthetic", "--format", "criteo", "--rows", "1500",
                                   "--seed", "2", "--out", str(path)])
    assert res.exit_code == 0, res.output
    assert "criteo layout" in res.output
    df = _read(path, "criteo")
    assert df.height == 1500 and df.columns[:2] == ["label", "I1"]
    res = CliRunner().invoke(app, ["make-synthetic", "--format", "kdd", "--rows", "10",
                                   "--out", str(tmp_path / "x.txt")])
    assert res.exit_code == 2 and "unknown layout 'kdd'" in res.output


# ---------------------------------------------------------------- predict over big files
@pytest.fixture(scope="module")
def criteo_model(criteo_file: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A DeepFM trained for one epoch on the Criteo-layout sample, saved as a model folder."""
    from autodrs.experiment import fit_spec
    from autodrs.models.backbones import backbone_spec
    from autodrs.runfolder import save_model
    from autodrs.train.trainer import TrainConfig

    ds = load_dataset(str(criteo_file), fmt="criteo", seed=0, rows=6000,
                      cache_dir=tmp_path_factory.mktemp("cache"))
    config = TrainConfig(epochs=1, batch_size=256, lr=1e-2, progress=False, threads=1, seed=0)
    outcome = fit_spec(ds, backbone_spec("deepfm", 8), config)
    folder = tmp_path_factory.mktemp("criteo_model")
    save_model(folder, outcome.model, ds.schema)
    return folder


@pytest.mark.parametrize("name", ["day_1.txt.gz", "day_1.txt"])
def test_predict_scores_a_criteo_file_chunk_by_chunk(criteo_model, tmp_path, name):
    from autodrs.data.sources import load_table
    from autodrs.serve.files import predict_file, read_chunks
    from autodrs.serve.predictor import Predictor

    predictor = Predictor.from_folder(criteo_model)
    path = tmp_path / name
    write_layout("criteo", path, rows=2500, seed=9)
    sizes = [c.height for c in read_chunks(path, predictor.feature_names, "criteo", 300)]
    assert sum(sizes) == 2500 and max(sizes) <= 300 and len(sizes) >= 9
    out = tmp_path / "scores.csv"
    assert predict_file(predictor, path, out, fmt="criteo", keep=["label"],
                        chunk_rows=300) == 2500
    scores = pl.read_csv(out)
    whole = load_table(str(path), fmt="criteo").df
    assert scores["label"].to_list() == whole["label"].to_list()  # input order kept
    expected = predictor.predict_frame(whole)  # the whole file encoded at once
    np.testing.assert_allclose(scores["probability"].to_numpy(), expected, rtol=0, atol=1e-6)
    assert expected.std() > 1e-3


def test_predict_cli_on_a_gzipped_csv_and_a_missing_column(criteo_model, tmp_path):
    from typer.testing import CliRunner

    from autodrs.cli import app
    from autodrs.data.sources import load_table

    src = tmp_path / "rows.txt"
    write_layout("criteo", src, rows=1200, seed=4)
    df = load_table(str(src), fmt="criteo").df
    path = tmp_path / "rows.csv.gz"
    path.write_bytes(gzip.compress(df.write_csv().encode()))
    out = tmp_path / "scores.parquet"
    res = CliRunner().invoke(app, ["predict", "--model", str(criteo_model), "--data", str(path),
                                   "--out", str(out), "--chunk-rows", "500"])
    assert res.exit_code == 0, res.output
    scored = pl.read_parquet(out)
    assert scored.height == 1200
    bad = tmp_path / "bad.csv.gz"
    bad.write_bytes(gzip.compress(df.drop("C7").write_csv().encode()))
    res = CliRunner().invoke(app, ["predict", "--model", str(criteo_model), "--data", str(bad),
                                   "--out", str(tmp_path / "x.csv")])
    assert res.exit_code == 2 and "columns missing" in res.output and "C7" in res.output
    assert not (tmp_path / "x.csv").exists()
