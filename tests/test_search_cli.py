"""``autodrs search`` end to end: the result.json contract, clear errors, and a search
killed with SIGKILL that resumes without losing a finished trial."""

from __future__ import annotations

import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from autodrs.cli import app
from autodrs.data.dataset import Dataset
from autodrs.runfolder import load_model
from autodrs.spec import ArchSpec

DATA = "synthetic?rows=4000&seed=1"
COMMON = ["--data", DATA, "--seed", "0", "--epochs", "2", "--threads", "1", "--no-progress"]


def test_search_writes_the_result_contract_and_a_loadable_model(
        tmp_path: Path, tiny_synthetic: Dataset) -> None:
    out = tmp_path / "run"
    result = CliRunner().invoke(app, ["search", *COMMON, "--methods", "hparams", "--strategy",
                                      "rl", "--trials", "3", "--fast", "--out", str(out)])
    assert result.exit_code == 0, result.output
    r = json.loads((out / "result.json").read_text())
    assert r["command"] == "search" and r["seed"] == 0
    for key in ("spec", "metrics", "baselines", "params", "cost", "stages", "data"):
        assert key in r
    assert set(r["metrics"]) == {"valid", "test"}
    assert 0.5 < r["metrics"]["test"]["auc"] <= 1.0
    assert set(r["baselines"]) == {"deepfm"} and "auc" in r["baselines"]["deepfm"]["test"]
    for key in ("search_seconds", "retrain_seconds", "train_samples_per_second"):
        assert r["cost"][key] > 0
    stage = r["stages"][0]
    assert stage["method"] == "hparams" and stage["strategy"] == "rl"
    assert len(stage["trials"]) == 3 and stage["ranking"]
    spec = ArchSpec.from_dict(r["spec"]).validate(tiny_synthetic.schema)
    assert spec.provenance[-1]["method"] == "hparams"
    assert spec.embed_dim in (4, 8) and spec.training.lr in (1e-3, 3e-3)
    assert r["config"]["lr"] == spec.training.lr  # the retrain used the searched lr
    # the retrain is flagged exactly when its last (2nd) epoch validated best
    aucs = [h["auc"] for h in r["history"]]
    assert set(r["still_improving"]) <= {"searched", "deepfm"}
    assert ("searched" in r["still_improving"]) == (len(aucs) == 2 and aucs[1] > aucs[0])
    model, _ = load_model(out)
    assert model.spec == spec


def test_search_rejects_bad_arguments_clearly(tmp_path: Path) -> None:
    runner = CliRunner()
    cases = [
        (["--methods", "hparams", "--strategy", "annealing"], "unknown strategy 'annealing'"),
        (["--methods", "hparams", "--budget", "ten minutes"], "cannot read budget"),
        (["--methods", "nosuch"], "unknown method 'nosuch'"),
        (["--methods", "hparams", "--trials", "0"], "--trials must be at least 1"),
        (["--methods", "hparams", "--backend", "spark"], "unknown backend 'spark'"),
    ]
    for extra, message in cases:
        result = runner.invoke(app, ["search", *COMMON, *extra, "--out", str(tmp_path / "x")])
        assert result.exit_code == 2, (extra, result.output)
        assert message in " ".join(result.output.split()), result.output


def _finished(db: Path) -> list[tuple[int, str, float | None]]:
    """(number, state, value) of the finished trials, read straight from the SQLite file."""
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30) as con:
        rows = con.execute(
            "SELECT t.number, t.state, v.value FROM trials t LEFT JOIN trial_values v "
            "ON v.trial_id = t.trial_id WHERE t.state IN ('COMPLETE', 'PRUNED', 'FAIL') "
            "ORDER BY t.number").fetchall()
    return [(int(n), str(s), v) for n, s, v in rows]


def _params(db: Path) -> dict[int, list[tuple[str, float]]]:
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30) as con:
        rows = con.execute("SELECT t.number, p.param_name, p.param_value FROM trial_params p "
                           "JOIN trials t ON t.trial_id = p.trial_id").fetchall()
    out: dict[int, list[tuple[str, float]]] = {}
    for n, name, value in rows:
        out.setdefault(int(n), []).append((name, value))
    return {n: sorted(v) for n, v in out.items()}


def test_search_killed_with_sigkill_resumes_without_losing_finished_trials(
        tmp_path: Path, tiny_synthetic: Dataset) -> None:
    out = tmp_path / "run"
    db = out / "stages" / "00-hparams" / "search.db"
    args = [sys.executable, "-c", "from autodrs.cli import main; main()", "search", *COMMON, "--methods", "hparams",
            "--strategy", "tpe", "--baselines", "none", "--out", str(out)]
    proc = subprocess.Popen([*args, "--trials", "40"], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, env=os.environ.copy())
    try:
        deadline = time.monotonic() + 240
        before: list[tuple[int, str, float | None]] = []
        while time.monotonic() < deadline and proc.poll() is None:
            if db.exists():
                try:
                    before = [t for t in _finished(db) if t[1] == "COMPLETE"]
                except sqlite3.OperationalError:
                    before = []
                if len(before) >= 3:
                    break
            time.sleep(0.2)
        assert proc.poll() is None, "the search ended before it could be killed"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    kept = [t for t in _finished(db) if t[1] == "COMPLETE"]
    params_before = _params(db)
    assert len(kept) >= 3 and len(kept) < 40
    assert not (out / "result.json").exists()

    target = len(kept) + 2
    done = subprocess.run([*args, "--trials", str(target), "--resume"], capture_output=True,
                          text=True, env=os.environ.copy(), timeout=300)
    assert done.returncode == 0, done.stderr
    after = _finished(db)
    after_complete = [t for t in after if t[1] == "COMPLETE"]
    assert after_complete[: len(kept)] == kept  # every finished trial is still there, unchanged
    params_after = _params(db)
    assert all(params_after[n] == params_before[n] for n, _, _ in kept)
    r = json.loads((out / "result.json").read_text())
    trials = r["stages"][0]["trials"]
    not_interrupted = [t for t in trials if t.get("error") != "interrupted"]
    assert len(not_interrupted) == target
    assert all(t["state"] == "COMPLETE" for t in not_interrupted)


def test_the_stage_line_says_what_was_chosen_and_what_the_guard_did() -> None:
    from autodrs.api import stage_line
    from autodrs.search.base import StageResult

    stage = StageResult("autofis", "gradient", ArchSpec(), ranking=[["a", "b"]], seconds=12.3,
                        extra={"budget_seconds": 40.0, "heads": {"chosen": "fm", "retrained": [
                            {"backbone": "fm", "pairs": 5, "gates": False, "valid_auc": 0.8381},
                            {"backbone": "fm", "pairs": 9, "gates": True, "valid_auc": 0.8339}]},
                            "guard": {"kept": False, "stage_valid_auc": 0.8381,
                                      "input_valid_auc": 0.8390}})
    line = stage_line(3, 4, stage)
    assert line.startswith("stage 4/4 autofis (gradient): 12.3s of 40.0s; best first: [['a', 'b']]")
    assert "chose the fm head, 5 pairs plain (validation 0.8381) of 2 retrained" in line
    assert line.endswith("guard: rejected (0.8381 against 0.8390)")
    # a stage without candidates or a guard check: the plain line
    bare = StageResult("autofield", "gradient", ArchSpec(), ranking=["x"], seconds=1.0)
    assert stage_line(0, 2, bare) == "stage 1/2 autofield (gradient): 1.0s; best first: ['x']"


def test_a_stage_that_found_nothing_says_so_on_its_line() -> None:
    from autodrs.api import stage_line
    from autodrs.search.base import StageResult

    stage = StageResult("hparams", "random", ArchSpec(), ranking=[], seconds=2.0,
                        extra={"no_result": "the budget ended before any trial finished"})
    line = stage_line(0, 1, stage)
    assert "found nothing" in line and "before any trial finished" in line


def test_objectives_a_method_cannot_honour_are_refused_before_any_work() -> None:
    from autodrs.api import plan_search
    from autodrs.config import SearchSettings
    from autodrs.search.base import SearchError

    with pytest.raises(SearchError, match="sif"):
        plan_search(SearchSettings(methods=["sif"], objectives=["auc", "bytes"]))
    plan = plan_search(SearchSettings(methods=["hparams"], strategy="random",
                                      objectives=["auc", "embedding_bytes"]))
    assert plan.names == ["hparams"]


def test_warm_start_is_left_to_the_method_unless_given(tmp_path: Path, monkeypatch) -> None:
    """Unset, ``warm_start`` is not in the options (AutoCTR's own default applies)."""
    from autodrs.search.base import METHODS, Method, SearchContext, StageResult

    seen: list[object] = []

    class Probe(Method):
        name = "probe"
        component = "training"
        strategies = ("grid",)

        def search(self, ctx: SearchContext) -> StageResult:
            seen.append(ctx.options.get("warm_start", "unset"))
            return StageResult(method=self.name, strategy="grid", spec=ctx.spec.copy())

    monkeypatch.setitem(METHODS, "probe", Probe)
    for flag, want in (([], "unset"), (["--warm-start"], True), (["--no-warm-start"], False)):
        out = tmp_path / str(want)
        r = CliRunner().invoke(app, ["search", "--data", "synthetic?rows=2000", "--methods",
                                     "probe", "--baselines", "none", "--epochs", "1",
                                     "--out", str(out), *flag])
        assert r.exit_code == 0, r.output
        assert seen[-1] == want


@pytest.fixture()
def probe(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """A search method ``probe`` that keeps its input spec and records the training rows
    its stage was given."""
    from autodrs.search.base import METHODS, Method, SearchContext, StageResult

    seen: list[int] = []

    class Probe(Method):
        name = "probe"
        component = "training"
        strategies = ("grid",)

        def search(self, ctx: SearchContext) -> StageResult:
            seen.append(len(ctx.dataset.train))
            return StageResult(method=self.name, strategy="grid", spec=ctx.spec.copy())

    monkeypatch.setitem(METHODS, "probe", Probe)
    return seen


def test_search_rows_samples_the_stages_and_trains_the_retrain_and_baselines_on_all_rows(
        tmp_path: Path, probe: list[int]) -> None:
    out = tmp_path / "run"
    result = CliRunner().invoke(app, ["search", *COMMON, "--methods", "probe", "--search-rows",
                                      "500", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert result.output.startswith("search: 1 baseline(s) (deepfm), then 1 stage(s) (probe) "
                                    "on at most 500 training rows")
    r = json.loads((out / "result.json").read_text())
    train_rows = r["data"]["sizes"]["train"]
    assert train_rows > 3000 and probe == [500]
    assert r["rows"]["stages"]["train"] == 500 and r["stages"][0]["train_rows"] == 500
    # the validation split is kept whole: it is below the sampled splits' floor
    assert r["rows"]["stages"]["valid"] == r["data"]["sizes"]["valid"]
    assert r["rows"]["retrain"] == train_rows
    assert r["baselines"]["deepfm"]["train_rows"] == train_rows
    assert "the stages search on 500 of" in result.output
    # --search-rows 0 searches on every row
    probe.clear()
    result = CliRunner().invoke(app, ["search", *COMMON, "--methods", "probe", "--search-rows",
                                      "0", "--baselines", "none", "--out", str(tmp_path / "b")])
    assert result.exit_code == 0, result.output
    assert probe == [train_rows]


def test_the_baselines_train_within_their_share_of_the_budget(
        tmp_path: Path, probe: list[int]) -> None:
    out = tmp_path / "run"
    result = CliRunner().invoke(app, [
        "search", *COMMON, "--methods", "probe", "--baselines", "fm", "--epochs", "3",
        "--batch-size", "8", "--budget", "30s", "--baseline-budget", "0.5s",
        "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "within 0.5s" in result.output.splitlines()[0]
    r = json.loads((out / "result.json").read_text())
    assert r["baselines"]["fm"]["cut_short"] is True
    assert r["cost"]["baseline_budget_seconds"] == 0.5
    assert "cut short by their share of the budget" in " ".join(result.output.split())
    # off a terminal the search's progress is plain lines: each stage, and the budget spent
    assert re.search(r"^stage 1/1 probe: running \[budget: [\d.]+s used, [\d.]+s left\]\n"
                     r"stage 1/1 probe \(grid\): .*\[budget: [\d.]+s used, [\d.]+s left\]$",
                     result.output, re.MULTILINE), result.output
    bad = CliRunner().invoke(app, ["search", *COMMON, "--methods", "probe", "--budget", "5s",
                                   "--baseline-budget", "1m", "--out", str(tmp_path / "x")])
    assert bad.exit_code == 2 and "--baseline-budget 1m leaves nothing" in bad.output


def test_default_baselines_too_costly_for_a_wide_table_are_left_out(tmp_path: Path) -> None:
    import numpy as np
    import polars as pl

    from autodrs.api import choose_baselines, plan_search
    from autodrs.config import SearchSettings
    from autodrs.data.dataset import load_dataset

    rng = np.random.default_rng(0)
    wide = pl.DataFrame({f"x{i}": rng.normal(size=300) for i in range(73)}).with_columns(
        site=pl.Series(rng.choice(["a", "b", "c"], 300)),
        label=pl.Series(rng.integers(0, 2, 300)))  # 74 fields
    wide.write_parquet(tmp_path / "wide.parquet")
    ds = load_dataset(str(tmp_path / "wide.parquet"), seed=0)
    plan = plan_search(SearchSettings())
    left_out = choose_baselines(plan, ds.schema, 16)
    assert [b["model"] for b in left_out] == ["ipnn", "dcnv2"]
    assert "2,701 pairs" in left_out[0]["reason"] and "1,184 wide" in left_out[1]["reason"]
    assert plan.baselines == ["deepfm", "fm", "widedeep"]
    # baselines a user names are trained whatever the width
    named = plan_search(SearchSettings(baselines=["ipnn"]))
    assert choose_baselines(named, ds.schema, 16) == [] and named.baselines == ["ipnn"]
    # a narrow table keeps them all
    narrow = plan_search(SearchSettings())
    assert choose_baselines(narrow, load_dataset(DATA, seed=0).schema, 16) == []
