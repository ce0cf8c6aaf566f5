"""Batch prediction over files: raw rows in, probabilities out, chunk by chunk."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pytest
from typer.testing import CliRunner

from autodrs.cli import app
from autodrs.data.dataset import Batch
from autodrs.data.errors import DataError
from autodrs.data.schema import OOV
from autodrs.data.sources import load_table
from autodrs.serve.files import predict_file, read_chunks
from autodrs.serve.predictor import Predictor


@pytest.fixture(scope="module")
def raw() -> pl.DataFrame:
    """The raw synthetic rows ``tiny_synthetic`` was built from (label and truth included)."""
    return load_table("synthetic?rows=4000&seed=1").df.with_row_index("row_id")


@pytest.fixture(scope="module")
def predictor(saved_model: Path) -> Predictor:
    return Predictor.from_folder(saved_model)


def test_chunked_file_scores_equal_whole_table_scores(predictor: Predictor, raw: pl.DataFrame,
                                                      tmp_path: Path) -> None:
    path = tmp_path / "rows.csv"
    raw.drop("label").write_csv(path)  # no label: it is optional at prediction time
    out = tmp_path / "scores.csv"
    assert predict_file(predictor, path, out, keep=["row_id"], chunk_rows=700) == raw.height
    scores = pl.read_csv(out)
    assert scores.columns == ["row_id", "probability"]
    assert scores["row_id"].to_list() == list(range(raw.height))  # input order kept
    # the whole table read as training reads a CSV (row_id standing in for the label the
    # file lacks), encoded at once
    expected = predictor.predict_frame(load_table(str(path), label="row_id").df)
    np.testing.assert_allclose(scores["probability"].to_numpy(), expected, rtol=0, atol=1e-6)
    assert expected.std() > 1e-3


def test_chunks_are_bounded(predictor: Predictor, raw: pl.DataFrame, tmp_path: Path) -> None:
    path = tmp_path / "rows.parquet"
    raw.write_parquet(path, row_group_size=1500)
    sizes = [c.height for c in read_chunks(path, predictor.feature_names, chunk_rows=640)]
    assert sum(sizes) == raw.height
    assert max(sizes) <= 640


def test_parquet_in_and_out_with_and_without_label(predictor: Predictor, raw: pl.DataFrame,
                                                   tmp_path: Path) -> None:
    with_label, without = tmp_path / "a.parquet", tmp_path / "b.parquet"
    raw.write_parquet(with_label)
    raw.drop("label").write_parquet(without)
    predict_file(predictor, with_label, tmp_path / "a_out.parquet", chunk_rows=1000)
    predict_file(predictor, without, tmp_path / "b_out.parquet", chunk_rows=3000)
    a = pl.read_parquet(tmp_path / "a_out.parquet")["probability"].to_numpy()
    b = pl.read_parquet(tmp_path / "b_out.parquet")["probability"].to_numpy()
    np.testing.assert_allclose(a, b, rtol=0, atol=1e-6)  # chunking changes float rounding only
    np.testing.assert_allclose(a, predictor.predict_frame(raw), rtol=0, atol=1e-6)


def test_unseen_category_scores_as_oov(predictor: Predictor, raw: pl.DataFrame,
                                       tmp_path: Path) -> None:
    rows = raw.head(5).with_columns(pl.lit(987_654_321, dtype=pl.Int64).alias("r1"))
    path = tmp_path / "unseen.csv"
    rows.write_csv(path)
    predict_file(predictor, path, tmp_path / "out.csv")
    got = pl.read_csv(tmp_path / "out.csv")["probability"].to_numpy()
    batch = predictor.encode(rows)
    col = predictor.schema.categorical.index("r1")
    assert (batch.cat[:, col] == OOV).all()
    # the same rows with r1 set to the OOV id directly
    cat = batch.cat.clone()
    cat[:, col] = OOV
    expected = predictor.predict_batch(Batch(cat, batch.num, batch.seq))
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-6)
    assert not np.allclose(got, predictor.predict_frame(raw.head(5)))


def test_missing_columns_are_named(predictor: Predictor, raw: pl.DataFrame,
                                   tmp_path: Path) -> None:
    path = tmp_path / "partial.csv"
    raw.drop("r1", "num0").write_csv(path)
    with pytest.raises(DataError, match="columns missing from .*: r1, num0"):
        predict_file(predictor, path, tmp_path / "out.csv")
    assert not (tmp_path / "out.csv").exists()
    with pytest.raises(DataError, match="missing from the table: r1, num0"):
        predictor.predict_frame(raw.drop("r1", "num0"))


def test_predict_command(saved_model: Path, raw: pl.DataFrame, tmp_path: Path) -> None:
    path = tmp_path / "rows.tsv"
    raw.write_csv(path, separator="\t")
    out = tmp_path / "scores.csv"
    runner = CliRunner()
    result = runner.invoke(app, ["predict", "--model", str(saved_model), "--data", str(path),
                                 "--out", str(out), "--keep", "row_id,label", "--chunk-rows",
                                 "1000", "--threads", "1"])
    assert result.exit_code == 0, result.output
    scores = pl.read_csv(out)
    assert scores.columns == ["row_id", "label", "probability"]
    assert scores.height == raw.height
    assert scores["probability"].is_between(0, 1).all()

    raw.drop("n2").write_csv(tmp_path / "partial.csv")
    result = runner.invoke(app, ["predict", "--model", str(saved_model), "--data",
                                 str(tmp_path / "partial.csv"), "--out", str(out)])
    assert result.exit_code == 2
    assert "columns missing" in result.output and "n2" in result.output


def test_bad_files_give_clear_errors(predictor: Predictor, tmp_path: Path) -> None:
    with pytest.raises(DataError, match="not found"):
        predict_file(predictor, tmp_path / "nope.csv", tmp_path / "out.csv")
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(DataError, match="is empty"):
        predict_file(predictor, tmp_path / "empty.csv", tmp_path / "out.csv")
    header_only = tmp_path / "header.csv"
    header_only.write_text(",".join(predictor.feature_names) + "\n")
    with pytest.raises(DataError, match="no data rows"):
        predict_file(predictor, header_only, tmp_path / "out.csv")
    assert not (tmp_path / "out.csv").exists()



def test_predict_frame_takes_pandas_polars_and_arrow(predictor: Predictor,
                                                     raw: pl.DataFrame) -> None:
    rows = raw.head(300).drop("label")
    expected = predictor.predict_frame(rows)
    assert expected.shape == (300,) and expected.std() > 1e-3
    pdf = rows.to_pandas()
    pdf.index = pdf.index + 1000  # a pandas index is not a column and is not read
    for frame in (pdf, rows.to_arrow(), rows.to_arrow().to_batches()[0]):
        np.testing.assert_array_equal(predictor.predict_frame(frame), expected)
    pdf.loc[pdf.index[0], "num0"] = float("nan")  # NaN in pandas is a missing number
    with_missing = rows.with_columns(pl.when(pl.int_range(pl.len()) == 0).then(None)
                                     .otherwise(pl.col("num0")).alias("num0"))
    np.testing.assert_array_equal(predictor.predict_frame(pdf),
                                  predictor.predict_frame(with_missing))
    with pytest.raises(DataError, match="columns missing from the table: r0"):
        predictor.predict_frame(pdf.drop(columns=["r0"]))
    with pytest.raises(DataError, match="expected a Polars or pandas DataFrame.*got builtins.dict"):
        predictor.predict_frame(rows.to_dict(as_series=False))


def test_integers_stored_as_floats_are_refused_not_scored_as_unseen(
        predictor: Predictor, raw: pl.DataFrame, tmp_path: Path) -> None:
    from autodrs.serve.export import ExportedModel, export_model

    rows = raw.head(50).drop("label")
    pdf = rows.to_pandas()
    pdf.loc[pdf.index[0], "r1"] = None  # pandas turns the integer column into floats
    assert str(pdf["r1"].dtype) == "float64"
    export_model(predictor.model, predictor.schema, tmp_path / "m.pt", "torchscript")
    for scorer in (predictor, ExportedModel.load(tmp_path / "m.pt")):
        with pytest.raises(DataError, match=r"column 'r1' holds \d+\.0 as a float, which "
                                            r"training holds as '\d+'.*astype\('Int64'\)"):
            scorer.predict_frame(pdf)
    pdf["r1"] = pdf["r1"].astype("Int64")
    expected = predictor.predict_frame(rows.with_columns(
        pl.when(pl.int_range(pl.len()) == 0).then(None).otherwise(pl.col("r1")).alias("r1")))
    np.testing.assert_array_equal(predictor.predict_frame(pdf), expected)
    # floats training never saw as integers either are scored as written (unseen)
    odd = rows.with_columns(pl.col("r1").cast(pl.Float64) + 0.5)
    assert predictor.predict_frame(odd).shape == (50,)
