"""tune-serving: the choice logic, and the saved choice is what serve runs with."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from autodrs.cli import app
from autodrs.serve.app import create_app
from autodrs.serve.predictor import Predictor
from autodrs.serve.tuning import (
    SERVING_FILE,
    Measurement,
    NoSettingMeetsTarget,
    choose,
    load_serving_config,
    measure,
)


def m(batch: int, threads: int, p95: float, rps: float) -> Measurement:
    return Measurement(batch_size=batch, threads=threads, p50_ms=p95 / 2, p95_ms=p95,
                       p99_ms=p95 * 1.5, rows_per_second=rps, iterations=10)


def test_choice_is_the_fastest_setting_within_the_target() -> None:
    table = [m(1, 1, 0.5, 2_000), m(64, 1, 4.0, 16_000), m(256, 1, 12.0, 21_000),
             m(64, 2, 3.0, 18_000), m(256, 2, 9.5, 20_000)]
    choice = choose(table, p95_ms=10)
    assert (choice.batch_size, choice.threads) == (256, 2)
    assert [x.meets_target for x in table] == [True, True, False, True, True]
    # a tighter target rules out the big batches
    assert (choose(table, p95_ms=3.5).batch_size, choose(table, p95_ms=3.5).threads) == (64, 2)


def test_ties_go_to_the_smaller_batch_then_fewer_threads() -> None:
    table = [m(128, 2, 2.0, 10_000), m(64, 2, 2.0, 10_000), m(64, 1, 2.0, 10_000)]
    choice = choose(table, p95_ms=5)
    assert (choice.batch_size, choice.threads) == (64, 1)


def test_no_setting_within_the_target_is_an_error() -> None:
    with pytest.raises(NoSettingMeetsTarget, match=r"lowest p95 was 3\.00 ms \(batch 8"):
        choose([m(8, 1, 3.0, 100.0), m(64, 1, 9.0, 900.0)], p95_ms=1)
    with pytest.raises(ValueError, match="must be > 0"):
        choose([m(8, 1, 3.0, 100.0)], p95_ms=0)


def test_measure_covers_every_setting(saved_model: Path) -> None:
    predictor = Predictor.from_folder(saved_model)
    table = measure(predictor, [1, 8], [1], seconds=0.0, max_iterations=3)
    assert [(x.batch_size, x.threads) for x in table] == [(1, 1), (8, 1)]
    for x in table:
        assert x.iterations == 3
        assert 0 < x.p50_ms <= x.p95_ms <= x.p99_ms
        assert x.rows_per_second > 0
    with pytest.raises(ValueError, match=">= 1"):
        measure(predictor, [0], [1])


def test_tune_serving_saves_the_choice_serve_uses(saved_model: Path, tmp_path: Path) -> None:
    folder = Path(shutil.copytree(saved_model, tmp_path / "model"))
    result = CliRunner().invoke(app, [
        "tune-serving", "--model", str(folder), "--p95-ms", "100000", "--batch-sizes", "1,4,16",
        "--threads", "1", "--seconds", "0", "--max-iterations", "3"])
    assert result.exit_code == 0, result.output
    saved = json.loads((folder / SERVING_FILE).read_text())
    rows = saved["measurements"]
    assert len(rows) == 3 and all(r["meets_target"] for r in rows)
    best = max(rows, key=lambda r: r["rows_per_second"])
    config = load_serving_config(folder)
    assert (config.batch_size, config.threads) == (best["batch_size"], best["threads"])
    assert config.source == "tune-serving" and config.p95_ms == 100000
    assert f"chose batch {best['batch_size']}" in result.output
    with TestClient(create_app(Predictor.from_folder(folder), config)) as client:
        assert client.get("/health").json()["config"]["batch_size"] == best["batch_size"]


def test_unreachable_target_saves_nothing(saved_model: Path, tmp_path: Path) -> None:
    folder = Path(shutil.copytree(saved_model, tmp_path / "model"))
    result = CliRunner().invoke(app, [
        "tune-serving", "--model", str(folder), "--p95-ms", "0.000001", "--batch-sizes", "1",
        "--threads", "1", "--seconds", "0", "--max-iterations", "3"])
    assert result.exit_code == 2
    assert "no setting meets p95" in " ".join(result.output.split())
    assert not (folder / SERVING_FILE).exists()
    result = CliRunner().invoke(app, ["tune-serving", "--model", str(folder), "--batch-sizes",
                                      "1,x"])
    assert result.exit_code == 2
    assert "--batch-sizes takes comma-separated integers" in result.output
