"""Experiment tracking: a run sent to MLflow and TensorBoard carries the run's own numbers,
bad targets fail before any work, and a stage's Optuna study is found for Optuna Dashboard."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import optuna
import pytest
from typer.testing import CliRunner

from autodrs.cli import app
from autodrs.tracking import TrackingError, parse_targets, run_scalars

COMMON = ["--data", "synthetic?rows=3000&seed=1", "--seed", "0", "--epochs", "2",
          "--threads", "1", "--no-progress"]


@pytest.fixture(scope="module")
def tracked_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One small search sent to MLflow (SQLite store) and TensorBoard as it finishes."""
    root = tmp_path_factory.mktemp("tracked")
    out, tb, db = root / "run", root / "tb", root / "mlflow.db"
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)  # MLflow writes artifacts under ./mlruns of a SQLite store
        result = CliRunner().invoke(app, [
            "search", *COMMON, "--methods", "hparams", "--trials", "2", "--fast",
            "--out", str(out), "--track", f"mlflow=sqlite:///{db}",
            "--track", f"tensorboard={tb}"])
    assert result.exit_code == 0, result.output
    return {"out": out, "tb": tb, "db": db, "root": root}


def test_mlflow_run_holds_the_runs_metrics_settings_and_files(tracked_run: dict[str, Path]
                                                               ) -> None:
    from mlflow.tracking import MlflowClient

    r = json.loads((tracked_run["out"] / "result.json").read_text())
    client = MlflowClient(tracking_uri=f"sqlite:///{tracked_run['db']}")
    runs = client.search_runs([client.get_experiment_by_name("autodrs").experiment_id])
    assert len(runs) == 1
    run = runs[0]
    assert run.info.status == "FINISHED"
    assert run.data.metrics["test.auc"] == pytest.approx(r["metrics"]["test"]["auc"])
    assert run.data.metrics["baselines.deepfm.test_auc"] == pytest.approx(
        r["baselines"]["deepfm"]["test"]["auc"])
    assert run.data.params["seed"] == "0" and run.data.params["methods"] == "['hparams']"
    curve = client.get_metric_history(run.info.run_id, "history.valid_auc")
    assert sorted(m.step for m in curve) == [p["epoch"] for p in r["history"]]
    files = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"result.json", "model.pt", "config.yaml"} <= files


def test_tensorboard_events_hold_the_same_numbers(tracked_run: dict[str, Path]) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    r = json.loads((tracked_run["out"] / "result.json").read_text())
    (folder,) = [p for p in tracked_run["tb"].iterdir() if p.is_dir()]
    events = EventAccumulator(str(folder))
    events.Reload()
    (test_auc,) = events.Scalars("test/auc")
    assert test_auc.value == pytest.approx(r["metrics"]["test"]["auc"], abs=1e-6)
    assert [e.step for e in events.Scalars("history/valid_auc")] == [
        p["epoch"] for p in r["history"]]


def test_a_finished_run_can_be_sent_later(tracked_run: dict[str, Path], tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["track", str(tracked_run["out"]), "--to",
                                      f"tensorboard={tmp_path}"])
    assert result.exit_code == 0, result.output
    assert "tensorboard:" in result.output
    assert list(tmp_path.glob("*/events.out.tfevents.*"))


def test_studies_names_each_stages_optuna_storage(tracked_run: dict[str, Path]) -> None:
    result = CliRunner().invoke(app, ["studies", str(tracked_run["out"])])
    assert result.exit_code == 0, result.output
    url = result.output.split("00-hparams: ", 1)[1].split()[0]
    summaries = optuna.get_all_study_summaries(storage=url)
    assert summaries and summaries[0].n_trials >= 1
    assert "optuna-dashboard " + url in result.output


@pytest.mark.parametrize(("target", "message"), [
    ("wandb", "unknown tracker 'wandb'"),
    ("mlflow", "pip install 'autodrs[mlflow]'"),
])
def test_bad_tracker_fails_before_any_work(target: str, message: str, tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "mlflow", None)  # as if the extra were not installed
    out = tmp_path / "run"
    result = CliRunner().invoke(app, ["search", *COMMON, "--methods", "hparams", "--out",
                                      str(out), "--track", target])
    assert result.exit_code == 2
    assert message in result.output.replace("\n", "")
    assert not (out / "result.json").exists()


def test_track_needs_a_run_folder(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["track", str(tmp_path), "--to", "tensorboard"])
    assert result.exit_code == 2 and "no result.json" in result.output


def test_scalars_skip_what_is_not_a_finite_number() -> None:
    rows = run_scalars({"metrics": {"test": {"auc": 0.7, "logloss": float("nan")}},
                        "history": [{"epoch": 3, "auc": 0.6}],
                        "stages": [{"seconds": 1.5, "guard": {"stage_valid_auc": 0.65}}],
                        "params": {"total": 10, "note": "x"}})
    assert rows == [("test/auc", 0.7, 0), ("history/valid_auc", 0.6, 3),
                    ("stages/seconds", 1.5, 0), ("stages/valid_auc", 0.65, 0),
                    ("size/params_total", 10.0, 0)]
    with pytest.raises(TrackingError):
        parse_targets(["mlflow", "comet"])


def test_a_failing_tracker_costs_only_the_export(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    import autodrs.tracking

    def refuse(*args: object, **kwargs: object) -> list[str]:
        raise ConnectionError("tracking server unreachable")

    monkeypatch.setattr(autodrs.tracking, "export_run", refuse)
    out = tmp_path / "run"
    result = CliRunner().invoke(app, ["train", *COMMON, "--out", str(out), "--track",
                                      f"tensorboard={tmp_path / 'tb'}"])
    assert result.exit_code == 0, result.output
    assert (out / "result.json").exists() and (out / "model.pt").exists()
    assert "tracking server unreachable" in (out / "run.log").read_text()
