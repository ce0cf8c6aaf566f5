"""The default pipeline, YAML configuration, and resuming an interrupted pipeline."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import yaml
from typer.testing import CliRunner

from autodrs.cli import app
from autodrs.pipeline import DEFAULT_PIPELINE

DATA = "synthetic?rows=3000&seed=1"
COMMON = ["--data", DATA, "--seed", "0", "--epochs", "1", "--threads", "1", "--no-progress"]


def test_default_pipeline_runs_every_stage_and_writes_the_run_folder(tmp_path):
    out = tmp_path / "run"
    result = CliRunner().invoke(app, ["search", *COMMON, "--fast", "--baselines", "fm",
                                      "--out", str(out)])
    assert result.exit_code == 0, result.output
    r = json.loads((out / "result.json").read_text())
    assert [s["method"] for s in r["stages"]] == list(DEFAULT_PIPELINE)
    assert r["methods"] == list(DEFAULT_PIPELINE)
    for name in ("result.json", "spec.json", "model.pt", "schema.json", "manifest.json",
                 "report.html", "config.yaml"):
        assert (out / name).exists(), name
    # each stage's cost is reported, and the search cost covers them
    assert all(s["seconds"] > 0 for s in r["stages"])
    assert r["cost"]["search_seconds"] >= sum(s["seconds"] for s in r["stages"]) * 0.99
    assert "searched" in (out / "report.html").read_text()


def test_yaml_config_with_flags_winning_and_effective_config_saved(tmp_path):
    cfg = tmp_path / "run.yaml"
    cfg.write_text(yaml.safe_dump({"methods": ["hparams"], "strategy": "random", "trials": 2,
                                   "epochs": 1, "baselines": "none", "fast": True,
                                   "seed": 5}))
    out = tmp_path / "run"
    result = CliRunner().invoke(app, ["search", "--data", DATA, "--config", str(cfg),
                                      "--seed", "3", "--threads", "1", "--no-progress",
                                      "--out", str(out)])
    assert result.exit_code == 0, result.output
    r = json.loads((out / "result.json").read_text())
    assert r["seed"] == 3  # the flag wins over the file
    assert r["stages"][0]["strategy"] == "random" and len(r["stages"][0]["trials"]) == 2
    assert r["baselines"] == {}
    saved = yaml.safe_load((out / "config.yaml").read_text())
    assert saved["seed"] == 3 and saved["trials"] == 2 and saved["strategy"] == "random"


def test_unknown_config_key_is_rejected(tmp_path):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("colour: red\n")
    result = CliRunner().invoke(app, ["search", "--data", DATA, "--config", str(cfg),
                                      "--out", str(tmp_path / "run")])
    assert result.exit_code == 2
    assert "unknown config keys: colour" in result.output


def test_killed_pipeline_resumes_without_redoing_finished_stages(tmp_path):
    out = tmp_path / "run"
    argv = [sys.executable, "-m", "autodrs", "search", *COMMON, "--methods",
            "lasso,hparams", "--baselines", "none", "--out", str(out)]
    env = os.environ | {"PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([*argv, "--trials", "200"], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    first = out / "stages" / "00-lasso" / "stage.json"
    second_db = out / "stages" / "01-hparams" / "search.db"
    deadline = time.monotonic() + 240
    try:
        while time.monotonic() < deadline and not (first.exists() and second_db.exists()):
            time.sleep(0.2)
        assert first.exists() and second_db.exists(), "the pipeline never reached stage 2"
        time.sleep(2.0)  # let stage 2 get under way
        assert proc.poll() is None, "stage 2 finished before it could be interrupted"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert not (out / "result.json").exists()
    finished_at = first.stat().st_mtime_ns
    before = json.loads(first.read_text())
    done = subprocess.run([*argv, "--trials", "2", "--resume"], env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert first.stat().st_mtime_ns == finished_at  # the finished stage was not redone
    r = json.loads((out / "result.json").read_text())
    assert [s["method"] for s in r["stages"]] == ["lasso", "hparams"]
    assert r["stages"][0]["ranking"] == before["result"]["ranking"]
