"""The Python API as a notebook uses it: frames in, a leaderboard, predictions, a saved
model that scores alike when loaded back, and input errors as ordinary exceptions."""

from __future__ import annotations

import gc
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import polars as pl
import pytest

import autodrs
from autodrs.data.synthetic import synthetic_source


def synthetic_frame(rows: int) -> pd.DataFrame:
    source = synthetic_source(rows=rows, seed=1)
    return pl.concat(list(source.chunks())).to_pandas()


def test_a_notebook_searches_a_pandas_frame_saves_loads_and_predicts_alike(
        tmp_path: Path) -> None:
    frame = synthetic_frame(20_000)
    result = autodrs.search(frame, label="label", methods=["hparams"], trials=1, fast=True,
                            epochs=1, baselines=["fm"], threads=1, seed=0)
    assert isinstance(result, autodrs.SearchResult)
    board = result.leaderboard()
    assert board["model"].to_list()[0] in ("searched", "fm") and board.height == 2
    assert set(board["model"]) == {"searched", "fm"}
    assert board.filter(pl.col("model") == "searched")["test_auc"][0] == pytest.approx(
        result.metrics["test"]["auc"])
    assert 0.55 < result.metrics["test"]["auc"] <= 1.0
    assert result.spec.provenance[-1]["method"] == "hparams"
    new_rows = frame.drop(columns=["label"]).head(500)
    scores = result.predict(new_rows)
    assert scores.shape == (500,) and np.all((scores > 0) & (scores < 1))
    saved = result.save(tmp_path / "model")
    model = autodrs.load(saved)
    assert np.array_equal(model.predict(new_rows), scores)
    # the run folder holds what the command line writes, settings and versions included
    written = json.loads((saved / "result.json").read_text())
    assert written["versions"]["autodrs"] == autodrs.__version__
    assert (saved / "config.yaml").is_file() and (saved / "run.log").is_file()


def test_polars_and_arrow_frames_and_train(tmp_path: Path) -> None:
    frame = pl.from_pandas(synthetic_frame(3000))
    trained = autodrs.train(frame, label="label", model="fm", epochs=1, threads=1, seed=0,
                            out=tmp_path / "run")
    assert (tmp_path / "run" / "model.pt").is_file() and (tmp_path / "run" / "report.html")
    again = autodrs.train(frame.to_arrow(), label="label", model="fm", epochs=1, threads=1,
                          seed=0)
    # the same rows as Polars or Arrow are the same data: the same model, the same scores
    assert again.metrics == trained.metrics
    rows = frame.head(50)
    assert np.array_equal(again.predict(rows), trained.predict(rows.to_pandas()))
    assert trained.leaderboard()["model"].to_list() == ["fm"]
    page = again.report(tmp_path / "again.html")
    assert page.read_text().lstrip().lower().startswith("<!doctype html")
    # a run without out= lives in a temporary folder, removed with its result
    folder = again.folder
    assert (folder / "model.pt").is_file()
    del again
    gc.collect()
    assert not folder.exists()


def test_input_errors_are_ordinary_exceptions_naming_the_problem() -> None:
    frame = synthetic_frame(1000)
    with pytest.raises(autodrs.DataError, match="label column 'clicked' not found"):
        autodrs.train(frame, label="clicked", epochs=1)
    with pytest.raises(autodrs.ConfigError, match="unknown key 'epoch'.*did you mean 'epochs'"):
        autodrs.search(frame, label="label", epoch=3)
    with pytest.raises(autodrs.ConfigError, match="epochs in the arguments: expected an "
                                                  "integer, got 'three'"):
        autodrs.train(frame, label="label", epochs="three")
    with pytest.raises(autodrs.SearchError, match="unknown method 'nosuch'"):
        autodrs.search(frame, label="label", methods=["nosuch"])
    with pytest.raises(autodrs.DataError, match="not supported"):
        autodrs.search(object())
    with pytest.raises(autodrs.ModelFileError, match="not found"):
        autodrs.load("no/such/folder")


def test_import_and_cli_help_do_not_load_torch() -> None:
    code = ("import sys, autodrs\n"
            "from typer.testing import CliRunner\n"
            "from autodrs.cli import app\n"
            "r = CliRunner().invoke(app, ['--help'])\n"
            "assert r.exit_code == 0 and 'search' in r.output, r.output\n"
            "v = CliRunner().invoke(app, ['--version'])\n"
            "assert v.output.strip() == 'autodrs ' + autodrs.__version__, v.output\n"
            "print(sorted(m for m in ('torch', 'sklearn', 'optuna') if m in sys.modules))\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_explicit_validation_and_test_frames_are_the_split(tmp_path: Path) -> None:
    frame = synthetic_frame(3000)
    train_rows, valid, test = frame.iloc[:2000], frame.iloc[2000:2400], frame.iloc[2400:]
    done = autodrs.train(train_rows, label="label", valid=valid, test=test, model="fm",
                         epochs=1, threads=1, seed=0, out=tmp_path / "run")
    assert done.result["data"]["sizes"] == {"train": 2000, "valid": 400, "test": 600}
    # the test AUC is that of these test rows, scored by the saved model
    from sklearn.metrics import roc_auc_score

    scores = autodrs.load(tmp_path / "run").predict(test.drop(columns=["label"]))
    assert roc_auc_score(test["label"], scores) == pytest.approx(
        done.metrics["test"]["auc"], abs=1e-4)
    with pytest.raises(autodrs.DataError, match="give both valid and test"):
        autodrs.train(train_rows, label="label", valid=valid)
    with pytest.raises(autodrs.DataError, match="the test frame's columns differ from "
                                                "data's: missing \\['r0'\\]"):
        autodrs.train(train_rows, label="label", valid=valid, test=test.drop(columns=["r0"]))
