"""An honest leaderboard: every baseline gets the searched model's training search (its
``optim`` stage), both its untuned and tuned fits are reported, a baseline's part of the
budget covers its tuning, and fits the epoch cap ended while improving are flagged."""

from __future__ import annotations

import html
import json
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
from typer.testing import CliRunner

import autodrs
from autodrs.api import baseline_line, plan_line, plan_search
from autodrs.cli import app
from autodrs.config import SearchSettings, defaults_of
from autodrs.data.dataset import Dataset
from autodrs.models.backbones import backbone_spec
from autodrs.pipeline import (
    BASELINE_SHARE,
    TUNED_BASELINE_SHARE,
    fit_baselines,
    tune_baseline,
)
from autodrs.report.html import build_report
from autodrs.train.trainer import TrainConfig

DATA = "synthetic?rows=3000&seed=1"
COMMON = ["--data", DATA, "--seed", "0", "--epochs", "2", "--threads", "1", "--no-progress",
          "--set", "optim.lr_factors=1,4"]


def _lrs(candidates: dict[str, dict]) -> list[float]:
    return sorted(c["lr"] for c in candidates.values())


def test_every_baseline_is_tuned_like_the_searched_model_and_both_fits_are_shown(
        tmp_path: Path) -> None:
    out = tmp_path / "run"
    res = CliRunner().invoke(app, ["search", *COMMON, "--methods", "optim",
                                   "--baselines", "fm,lr", "--out", str(out)])
    assert res.exit_code == 0, res.output
    r = json.loads((out / "result.json").read_text())
    assert r["baseline_tuning"]["tuned"] is True
    assert set(r["tuned_baselines"]) == set(r["baselines"]) == {"fm", "lr"}
    stage = r["stages"][0]
    for name, tuned in r["tuned_baselines"].items():
        # the searched model's candidates, each a full retrain judged on validation AUC
        assert _lrs(tuned["candidates"]) == _lrs(stage["candidates"]) == [1e-3, 4e-3]
        best = max(tuned["candidates"].values(), key=lambda c: c["valid_auc"])
        assert tuned["lr"] == best["lr"]
        assert tuned["valid"]["auc"] == pytest.approx(best["valid_auc"], abs=1e-6)
        # the untuned baseline is the search's own first candidate (the command's --lr)
        untuned = r["baselines"][name]
        assert untuned["lr"] == 1e-3 and untuned["test"]["auc"] > 0.5
        first = next(c for c in tuned["candidates"].values() if c["lr"] == 1e-3)
        assert untuned["valid"]["auc"] == pytest.approx(first["valid_auc"], abs=1e-6)
        assert set(untuned) <= set(tuned) and tuned["train_rows"] == untuned["train_rows"]
    assert r["cost"]["baseline_tuning_seconds"] > 0
    assert "each also tuned by the searched model's optim stage" in res.output.splitlines()[0]
    assert "baseline fm tuned: lr=0.001, batch=1024 -> lr=" in res.output
    table = res.output.split("searched model against baselines")[1].split("└")[0]
    assert table.count("(tuned)") == 2 and table.count("untuned") == 2
    # the report's leaderboard has both rows, labelled, and says the baselines were tuned
    page = (out / "report.html").read_text()
    assert "<td>fm (tuned)</td><td>tuned, lr " in page
    assert "<td>fm</td><td>untuned, lr 0.001</td>" in page
    assert "Baselines tuned like the searched model" in page
    # the Python API's leaderboard: a row per fit, with a tuned column
    board = autodrs.api.SearchResult(r, out, model=None).leaderboard()  # type: ignore[arg-type]
    assert board.height == 5 and set(board["model"]) == {"searched", "fm", "lr"}
    assert sorted(board.filter(board["model"] == "fm")["tuned"].to_list()) == [False, True]
    tuned_fm = board.filter((board["model"] == "fm") & board["tuned"])
    assert tuned_fm["lr"][0] == r["tuned_baselines"]["fm"]["lr"]
    assert tuned_fm["test_auc"][0] == pytest.approx(r["tuned_baselines"]["fm"]["test"]["auc"])


def test_no_tune_baselines_skips_the_tuning_and_says_so(tmp_path: Path) -> None:
    out = tmp_path / "run"
    res = CliRunner().invoke(app, ["search", *COMMON, "--methods", "optim", "--baselines", "fm",
                                   "--no-tune-baselines", "--out", str(out)])
    assert res.exit_code == 0, res.output
    r = json.loads((out / "result.json").read_text())
    assert r["tuned_baselines"] == {} and r["baseline_tuning"]["tuned"] is False
    assert "--no-tune-baselines" in r["baseline_tuning"]["reason"]
    assert "baselines not tuned: --no-tune-baselines" in " ".join(res.output.split())
    assert "tuned by the searched model's optim stage" not in res.output
    assert "The baselines were not tuned: --no-tune-baselines" in (
        out / "report.html").read_text()
    # without an optim stage the searched model's training is not searched either
    settings = SearchSettings.from_mapping({"data": DATA, "methods": ["hparams"],
                                            "baselines": ["fm"], "budget": "100s"})
    plan = plan_search(settings)
    assert plan.tune_baselines is False and plan.baseline_seconds == BASELINE_SHARE * 100


def test_the_baselines_share_of_the_budget_covers_their_tuning() -> None:
    settings = SearchSettings.from_mapping({"data": DATA, "baselines": ["fm", "lr"],
                                            "budget": "100s"})
    plan = plan_search(settings)  # the default pipeline: optim first
    assert plan.tune_baselines is True
    assert plan.baseline_seconds == TUNED_BASELINE_SHARE * 100 > BASELINE_SHARE * 100
    line = plan_line(plan.names, plan.baselines, plan.seconds, plan.baseline_seconds, None,
                     plan.tune_baselines)
    assert "2 baseline(s) (fm, lr), each also tuned by the searched model's optim stage " \
           "(same candidates and budget rule; that time included) within 40s" in line


def test_tuning_runs_within_the_baselines_part_and_keeps_the_budget_rule(
        tiny_synthetic: Dataset) -> None:
    config = TrainConfig(epochs=1, batch_size=512, progress=False, threads=1, seed=0)
    specs = {"fm": backbone_spec("fm", 4), "lr": backbone_spec("lr", 4)}
    parts: list[tuple[str, float]] = []
    t0 = time.monotonic()
    fit_baselines(tiny_synthetic, specs, config, seconds=60.0,
                  tune=lambda name, spec, left: parts.append((name, left())))
    # each tuning sees what is left of its own baseline's part: at most an equal share
    # of the share, and the second at most what the first left
    assert [n for n, _ in parts] == ["fm", "lr"]
    assert 0 < parts[0][1] <= 30.0 and 0 < parts[1][1] <= 60.0 - (time.monotonic() - t0) + 1
    untimed: list[object] = []
    fit_baselines(tiny_synthetic, specs, config,
                  tune=lambda name, spec, left: untimed.append(left()))
    assert untimed == [None, None]
    # with no time left after the first candidate, no other is tried (the optim stage's
    # rule), and with none at all there is no tuning
    options = {"lr_factors": "1,3,2"}
    done = tune_baseline(tiny_synthetic, tiny_synthetic, specs["fm"], config, options,
                         remaining=lambda: 0.001)
    assert done is not None
    assert len(done.stage.extra["candidates"]) == 1 and done.stage.extra["untried"] == 2
    assert tune_baseline(tiny_synthetic, tiny_synthetic, specs["fm"], config, options,
                         remaining=lambda: 0.0) is None
    full = tune_baseline(tiny_synthetic, tiny_synthetic, specs["fm"], config, options)
    assert full is not None and len(full.stage.extra["candidates"]) == 3 and full.stage.extra["untried"] == 0
    chosen = full.stage.extra["lr"]
    assert full.outcome.metrics["valid"]["auc"] == pytest.approx(
        full.stage.extra["candidates"][f"lr={chosen:g}, batch=512"]["valid_auc"], abs=1e-6)


def test_fits_the_epoch_cap_ended_while_improving_are_flagged(tmp_path: Path) -> None:
    fit = SimpleNamespace(stopped_by_hook=False, still_improving=True, best_epoch=10)
    outcome = SimpleNamespace(fit=fit, metrics={"valid": {"auc": 0.7}}, seconds=1.0)
    assert "still improving at its last epoch, 10" in baseline_line("fm", outcome)  # type: ignore[arg-type]
    fit.still_improving = False
    assert "still improving" not in baseline_line("fm", outcome)  # type: ignore[arg-type]
    entry = {"valid": {"auc": 0.7, "logloss": 0.5}, "test": {"auc": 0.69, "logloss": 0.5},
             "params": {"total": 10, "embedding": 8}, "lr": 0.001}
    result = {"command": "search", "methods": ["optim"], "metrics": entry,
              "params": entry["params"], "config": {"lr": 0.003},
              "settings": {"epochs": 50}, "baselines": {"fm": entry},
              "tuned_baselines": {"fm": {**entry, "lr": 0.003}},
              "baseline_tuning": {"tuned": True}, "still_improving": ["fm (tuned)"]}
    build_report(result, tmp_path / "r.html")
    page = (tmp_path / "r.html").read_text()
    assert "Still improving when the epoch cap ended them" in page
    assert "last of 50 epochs" in page and "fm (tuned)." in page
    result["still_improving"] = []
    build_report(result, tmp_path / "r.html")
    assert "Still improving" not in (tmp_path / "r.html").read_text()


def test_the_default_epoch_cap_is_one_early_stopping_reaches() -> None:
    """On movielens-100k at lr 1e-3 the baselines validated best at epochs 10 to 25 when a
    10-epoch cap cut four of five short (docs/benchmarks.md); the default leaves room."""
    cap = defaults_of(SearchSettings)["epochs"]
    assert cap >= 50
    res = CliRunner().invoke(app, ["search", "--help"])
    assert f"[default: {cap}]" in " ".join(res.output.split()).split("--epochs")[1][:200]


def test_a_baseline_its_part_cut_short_is_left_untuned_and_said_so(tmp_path: Path) -> None:
    out = tmp_path / "run"
    res = CliRunner().invoke(app, ["search", *COMMON, "--methods", "optim", "--baselines", "fm",
                                   "--epochs", "3", "--batch-size", "8", "--budget", "60s",
                                   "--baseline-budget", "0.5s", "--model", "auto",
                                   "--out", str(out)])
    assert res.exit_code == 0, res.output
    r = json.loads((out / "result.json").read_text())
    assert r["baselines"]["fm"]["cut_short"] is True and r["tuned_baselines"] == {}
    reason = r["baseline_tuning"]["not_tuned"]["fm"]
    assert "used its whole part of the baselines' budget" in reason
    assert f"baseline fm not tuned: {reason}" in " ".join(res.output.split())
    # the search still starts from a baseline: the untuned fit stands in for the tuned one
    assert r["start"]["valid_auc"]["fm"] == pytest.approx(r["baselines"]["fm"]["valid"]["auc"],
                                                          abs=1e-6)
    assert html.escape(f"Not tuned: fm ({reason})") in (out / "report.html").read_text()


def test_a_tuning_the_budget_stopped_early_says_how_many_candidates_it_tried(
        tmp_path: Path) -> None:
    from autodrs.cli import board_rows

    entry = {"valid": {"auc": 0.7, "logloss": 0.5}, "test": {"auc": 0.69, "logloss": 0.5},
             "params": {"total": 10, "embedding": 8}, "lr": 0.001}
    partial = {**entry, "candidates": {"a": {}}, "untried": 3}
    result = {"command": "search", "methods": ["optim"], "metrics": entry,
              "params": entry["params"], "config": {"lr": 0.001}, "baselines": {"fm": entry},
              "tuned_baselines": {"fm": partial}, "baseline_tuning": {"tuned": True},
              "still_improving": []}
    assert board_rows(result)[-1][1] == "tuned, lr 0.001 (1 of 4 tried)"
    build_report(result, tmp_path / "r.html")
    assert "<td>tuned, lr 0.001 (1 of 4 candidates tried)</td>" in (tmp_path / "r.html").read_text()
    result["tuned_baselines"]["fm"] = {**entry, "candidates": {"a": {}, "b": {}}, "untried": 0}
    assert board_rows(result)[-1][1] == "tuned, lr 0.001"
