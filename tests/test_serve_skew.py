"""Training/serving skew: one row scores the same on every serving path.

The model is trained from a Parquet table whose categorical columns are text: zip codes with
leading zeros, codes that differ only in spelling ("7", "07", "7.0"), numeric-looking tokens
in a sequence, nulls throughout. The rows scored hold the same kinds of values plus unseen
ones; `predict` on the CSV and on the Parquet file, the HTTP endpoint, the TorchScript and
ONNX exports and the in-process model must agree within 1e-5.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from autodrs.cli import app
from autodrs.data.dataset import load_dataset
from autodrs.data.schema import MISSING, OOV
from autodrs.experiment import fit_spec
from autodrs.models.backbones import backbone_spec
from autodrs.runfolder import save_model
from autodrs.serve.app import create_app
from autodrs.serve.export import ExportedModel, export_model
from autodrs.serve.files import predict_file
from autodrs.serve.predictor import Predictor
from autodrs.serve.tuning import ServingConfig
from autodrs.train.trainer import TrainConfig

ZIPS = ["00501", "06513", "02134", "10001", "07030", "90210"]
CODES = ["7", "07", "7.0", "12", "012", "3"]
TOKENS = ["001", "1", "01", "a", "2", "002"]


def text_table(rows: int, seed: int, unseen: bool) -> pl.DataFrame:
    """Text categoricals that look like numbers, a number, a token list, nulls; the label
    depends on zip and code so a trained model scores their values apart."""
    rng = np.random.default_rng(seed)
    zips = ZIPS + (["99999", "6513"] if unseen else [])
    codes = CODES + (["007", "7.00"] if unseen else [])
    tokens = TOKENS + (["0001", "b"] if unseen else [])

    def maybe(values: list[Any]) -> list[Any]:
        return [None if rng.random() < 0.08 else v for v in values]

    zip_i = rng.integers(0, len(zips), rows)
    code_i = rng.integers(0, len(codes), rows)
    logit = (zip_i % 3 - 1) * 1.5 + (code_i % 2) * 1.2 - 0.5
    return pl.DataFrame({
        "zip": maybe([zips[i] for i in zip_i]),
        "code": maybe([codes[i] for i in code_i]),
        "city": maybe(list(rng.choice(["paris", "rome", "oslo"], rows))),
        "price": maybe([float(v) for v in rng.lognormal(2, 1, rows)]),
        "tags": maybe([list(rng.choice(tokens, int(rng.integers(0, 4)))) for _ in range(rows)]),
        "label": (rng.random(rows) < 1 / (1 + np.exp(-logit))).astype(np.int8),
    }, schema_overrides={"tags": pl.List(pl.String)})


@pytest.fixture(scope="module")
def text_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A DeepFM trained for one epoch from a Parquet file of string-typed columns."""
    folder = tmp_path_factory.mktemp("text_model")
    train_path = folder / "train.parquet"
    text_table(3000, seed=0, unseen=False).write_parquet(train_path)
    ds = load_dataset(str(train_path), label="label", seed=0)
    assert ds.schema.field("zip").kind == "categorical"
    assert "06513" in (ds.schema.field("zip").vocab or [])
    config = TrainConfig(epochs=1, batch_size=128, lr=1e-2, progress=False, threads=1, seed=0)
    model = fit_spec(ds, backbone_spec("deepfm", 8), config).model
    save_model(folder / "model", model, ds.schema)
    return folder / "model"


@pytest.fixture(scope="module")
def predictor(text_model: Path) -> Predictor:
    return Predictor.from_folder(text_model)


@pytest.fixture(scope="module")
def rows() -> pl.DataFrame:
    return text_table(300, seed=1, unseen=True).drop("label")


def as_csv_frame(df: pl.DataFrame) -> pl.DataFrame:
    """The rows as a CSV holds them: the token list joined by the field's separator."""
    return df.with_columns(pl.col("tags").list.join("|"))


def test_zip_codes_in_a_csv_keep_their_leading_zeros(predictor: Predictor, rows: pl.DataFrame,
                                                     tmp_path: Path) -> None:
    """Case 4: a CSV column of digits is read as the text it holds, not as integers."""
    path = tmp_path / "rows.csv"
    as_csv_frame(rows).write_csv(path)
    assert pl.read_csv(path)["zip"].dtype.is_integer()  # what Polars infers by itself
    predict_file(predictor, path, tmp_path / "scores.csv")
    got = pl.read_csv(tmp_path / "scores.csv")["probability"].to_numpy()
    np.testing.assert_allclose(got, predictor.predict_frame(rows), rtol=0, atol=1e-5)


def test_every_serving_path_gives_the_same_scores(text_model: Path, predictor: Predictor,
                                                  rows: pl.DataFrame, tmp_path: Path) -> None:
    expected = predictor.predict_frame(rows)
    batch = predictor.encode(rows)
    zip_ids = batch.cat[:, predictor.schema.categorical.index("zip")]
    # unseen values, nulls and known ones all present, and the model tells them apart
    assert (zip_ids == OOV).any() and (zip_ids == MISSING).any() and (zip_ids > OOV + 1).any()
    assert expected.std() > 1e-2

    scores: dict[str, np.ndarray] = {}
    runner = CliRunner()
    as_csv_frame(rows).write_csv(tmp_path / "rows.csv")
    rows.write_parquet(tmp_path / "rows.parquet")
    for name in ("rows.csv", "rows.parquet"):
        out = tmp_path / f"scores-{name}.csv"
        result = runner.invoke(app, ["predict", "--model", str(text_model), "--data",
                                     str(tmp_path / name), "--out", str(out), "--threads", "1",
                                     "--chunk-rows", "128"])
        assert result.exit_code == 0, result.output
        scores[f"predict {name}"] = pl.read_csv(out)["probability"].to_numpy()

    with TestClient(create_app(predictor, ServingConfig(batch_size=64))) as client:
        response = client.post("/predict", json=rows.to_dicts())
        assert response.status_code == 200, response.text
        scores["http"] = np.array(response.json()["probabilities"])
        # few rows take the Python encoder, the whole table the vectorised one
        singles = [client.post("/predict", json=[r]).json()["probabilities"][0]
                   for r in rows.head(40).to_dicts()]
        scores["http, one row a request"] = np.concatenate([singles, expected[40:]])

    for fmt, suffix in (("torchscript", "pt"), ("onnx", "onnx")):
        path = tmp_path / f"model.{suffix}"
        export_model(predictor.model, predictor.schema, path, fmt)
        scores[fmt] = ExportedModel.load(path).predict_frame(rows)

    for name, got in scores.items():
        np.testing.assert_allclose(got, expected, rtol=0, atol=1e-5, err_msg=name)
