"""Nothing lost, nothing silently wrong (issue 26): a run folder is never replaced unasked,
``--resume`` refuses other data, every method's lone search ends in a report, a stage that
fails or does not apply never costs the finished work, bad flags are one line before any
work, and a model unreasonable for its data is said before it trains."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch
from typer.testing import CliRunner

import autodrs.methods  # noqa: F401  (fills the registry)
from autodrs.cli import app
from autodrs.data.dataset import Dataset
from autodrs.experiment import scale_warning
from autodrs.models.backbones import backbone_spec
from autodrs.search.base import METHODS

runner = CliRunner()
DATA = "synthetic?rows=2000&seed=1"
QUICK = ["--seed", "0", "--epochs", "1", "--threads", "1", "--no-progress"]
SEARCH = ["search", "--data", DATA, *QUICK, "--methods", "hparams", "--strategy", "random",
          "--trials", "1", "--fast", "--baselines", "none"]


def one_line(result) -> str:  # type: ignore[no-untyped-def]
    return " ".join(result.output.split())


def unwritable_folder(tmp_path: Path) -> Path:
    """An existing folder no file can be created in: permission bits for a normal user;
    root ignores them, so for root a sysfs folder (the kernel refuses new files there)."""
    if os.geteuid() == 0:
        return Path("/sys/kernel")
    folder = tmp_path / "locked"
    folder.mkdir()
    folder.chmod(0o555)
    return folder


# ------------------------------------------------------------ 1. no silent replacement
def test_search_refuses_to_replace_a_finished_run_unless_told(tmp_path: Path) -> None:
    out = tmp_path / "run"
    assert runner.invoke(app, [*SEARCH, "--out", str(out)]).exit_code == 0
    before = (out / "result.json").read_bytes()
    model_before = (out / "model.pt").read_bytes()
    again = runner.invoke(app, [*SEARCH, "--seed", "1", "--out", str(out)])
    assert again.exit_code == 2, again.output
    text = one_line(again)
    assert "already holds a finished search run" in text
    assert "--resume" in text and "--overwrite" in text
    assert (out / "result.json").read_bytes() == before
    assert (out / "model.pt").read_bytes() == model_before
    (out / "notes.txt").write_text("mine")
    replaced = runner.invoke(app, [*SEARCH, "--seed", "1", "--overwrite", "--out", str(out)])
    assert replaced.exit_code == 0, replaced.output
    assert json.loads((out / "result.json").read_text())["seed"] == 1
    assert (out / "notes.txt").read_text() == "mine"  # only autodrs's own outputs go


def test_train_and_bench_refuse_a_folder_holding_a_run(tmp_path: Path) -> None:
    out = tmp_path / "run"
    train = ["train", "--data", DATA, "--model", "lr", *QUICK, "--out", str(out)]
    assert runner.invoke(app, train).exit_code == 0
    before = (out / "result.json").read_bytes()
    for argv in (train, ["bench", "--data", DATA, "--baselines", "lr", "--seeds", "1",
                         "--epochs", "1", "--out", str(out)]):
        again = runner.invoke(app, argv)
        assert again.exit_code == 2, again.output
        assert "already holds a finished train run" in one_line(again)
        assert "--overwrite" in one_line(again) and "--resume" not in one_line(again)
    assert (out / "result.json").read_bytes() == before
    assert runner.invoke(app, [*train, "--overwrite"]).exit_code == 0


# ------------------------------------------------------------ 2. resume checks its data
def test_resume_refuses_other_data_settings(tmp_path: Path) -> None:
    out = tmp_path / "run"
    assert runner.invoke(app, [*SEARCH, "--out", str(out)]).exit_code == 0
    config = (out / "config.yaml").read_text()
    other = [("--data" if a == DATA else a) for a in SEARCH]
    other[other.index("--data") + 1] = "synthetic?rows=1500&seed=1"
    again = runner.invoke(app, [*other, "--resume", "--out", str(out)])
    assert again.exit_code == 2, again.output
    text = one_line(again)
    assert "--resume" in text and "other data settings" in text and "rows=1500" in text
    assert (out / "config.yaml").read_text() == config  # nothing rewritten
    assert runner.invoke(app, [*SEARCH, "--resume", "--out", str(out)]).exit_code == 0


def test_resume_refuses_a_data_file_that_changed(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)

    def write(rows: int) -> None:
        pl.DataFrame({"a": rng.integers(0, 20, rows).astype(str),
                      "b": rng.integers(0, 30, rows).astype(str),
                      "label": rng.integers(0, 2, rows)}).write_csv(tmp_path / "rows.csv")

    write(1500)
    out = tmp_path / "run"
    argv = [*SEARCH[:2], str(tmp_path / "rows.csv"), "--label", "label", *SEARCH[3:],
            "--out", str(out)]
    assert runner.invoke(app, argv).exit_code == 0
    write(1000)  # same path, other rows
    again = runner.invoke(app, [*argv, "--resume"])
    assert again.exit_code == 2, again.output
    assert "the data reads differently now" in one_line(again)


# ------------------------------------------------------------ 6. every lone method reports
@pytest.mark.parametrize("method", sorted(m for m in METHODS if METHODS[m].command is None))
def test_a_lone_method_search_ends_with_its_report(method: str, tmp_path: Path) -> None:
    out = tmp_path / "run"
    result = runner.invoke(app, ["search", "--data", DATA, *QUICK, "--methods", method,
                                 "--fast", "--trials", "2", "--batch-size", "128",
                                 "--baselines", "none", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "could not be built" not in result.output
    page = (out / "report.html").read_text()
    assert f"Stage 1: {method}" in page
    assert "could not be drawn" not in page
    stages = json.loads((out / "result.json").read_text())["stages"]
    assert [s["method"] for s in stages] == [method] and not stages[0].get("failed")
    if method == "pep":  # its (step, sparsity) curve, the shape that crashed the report
        assert 'data-plot="pep-sparsity"' in page


def test_a_method_with_its_own_command_is_refused_before_any_work(tmp_path: Path) -> None:
    out = tmp_path / "run"
    result = runner.invoke(app, ["search", "--data", DATA, *QUICK, "--methods", "autoft",
                                 "--out", str(out)])
    assert result.exit_code == 2, result.output
    assert "autodrs transfer" in one_line(result)
    assert not out.exists()


def test_a_failing_report_costs_only_the_report(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(result: dict, out: Path) -> list[str]:
        raise TypeError("tuple indices must be integers or slices, not str")

    monkeypatch.setattr("autodrs.report.html.build_report", broken)
    out = tmp_path / "run"
    result = runner.invoke(app, [*SEARCH, "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert (out / "result.json").exists() and (out / "model.pt").exists()
    lines = [line for line in result.output.splitlines() if "could not be built" in line]
    assert len(lines) == 1 and "TypeError" in lines[0] and "autodrs report" in lines[0]
    assert result.exception is None


# ------------------------------------------------------------ 7. numerical-only tables
@pytest.fixture()
def numerical_table(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(1500, 3))
    p = 1 / (1 + np.exp(-(x[:, 0] - x[:, 1] ** 2 + 0.5)))
    path = tmp_path / "num.csv"
    pl.DataFrame({"x0": x[:, 0], "x1": x[:, 1], "x2": x[:, 2],
                  "label": (rng.random(1500) < p).astype(int)}).write_csv(path)
    return path


def test_default_pipeline_skips_stages_with_nothing_to_do(numerical_table: Path,
                                                          tmp_path: Path) -> None:
    out = tmp_path / "run"
    result = runner.invoke(app, ["search", "--data", str(numerical_table), "--label", "label",
                                 "--numerical", "x0,x1,x2", *QUICK, "--fast",
                                 "--baselines", "fm", "--out", str(out)])
    assert result.exit_code == 0, result.output
    for name in ("frequency", "autodim"):
        assert f"skipping {name}: the data has no categorical fields" in one_line(result)
    r = json.loads((out / "result.json").read_text())
    assert [s["method"] for s in r["skipped_stages"]] == ["frequency", "autodim"]
    assert "autodim" not in [s["method"] for s in r["stages"]]
    assert "Stages skipped" in (out / "report.html").read_text()


def test_a_failing_stage_is_recorded_and_the_run_goes_on(numerical_table: Path,
                                                         tmp_path: Path) -> None:
    out = tmp_path / "run"
    result = runner.invoke(app, ["search", "--data", str(numerical_table), "--label", "label",
                                 "--numerical", "x0,x1,x2", *QUICK, "--fast",
                                 "--methods", "autodim,autofield", "--baselines", "none",
                                 "--out", str(out)])
    assert result.exit_code == 0, result.output
    r = json.loads((out / "result.json").read_text())
    first, second = r["stages"]
    assert first["method"] == "autodim" and first["failed"] is True
    assert "needs at least one categorical field" in first["error"]
    assert second["method"] == "autofield" and not second.get("failed")
    assert (out / "model.pt").exists()
    assert "autodim (gradient) failed" in one_line(result)
    assert "1 of 2 stages failed" in one_line(result)
    page = (out / "report.html").read_text()
    assert "This stage <b>failed</b>" in page
    assert not (out / "stages" / "00-autodim" / "stage.json").exists()  # resume retries it


# ------------------------------------------------------------ 8, 9. bad flags: one line
BAD_FLAGS = [
    (["--epochs", "0"], "--epochs must be at least 1, got 0"),
    (["--epochs", "-1"], "--epochs must be at least 1, got -1"),
    (["--batch-size", "0"], "--batch-size must be at least 1, got 0"),
    (["--patience", "-1"], "--patience must be at least 0, got -1"),
    (["--threads", "0"], "--threads must be at least 1, got 0"),
    (["--seed", "-1"], "--seed must be between 0 and"),
    (["--lr", "0"], "--lr must be greater than 0"),
    (["--device", "tpu"], "unknown --device 'tpu'"),
    (["--device", "cuda"], "--device cuda: CUDA is not available"),
]


@pytest.mark.parametrize("command", ["train", "search", "bench"])
@pytest.mark.parametrize(("flags", "message"), BAD_FLAGS,
                         ids=[" ".join(f) for f, _ in BAD_FLAGS])
def test_bad_flags_are_one_line_before_any_work(command: str, flags: list[str], message: str,
                                                tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    out = tmp_path / "run"
    extra = {"search": ["--methods", "hparams"], "bench": ["--baselines", "lr"]}.get(command, [])
    settings = {"--seed": "0", "--epochs": "1", "--threads": "1"} | dict([flags])
    # data that does not exist: a flag error must come before the data is read
    result = runner.invoke(app, [command, "--data", str(tmp_path / "absent.csv"), *extra,
                                 *[x for kv in settings.items() for x in kv],
                                 "--out", str(out)])
    assert result.exit_code == 2, result.output
    assert message in one_line(result), result.output
    assert not isinstance(result.exception, Exception) or isinstance(result.exception,
                                                                     SystemExit)
    assert not out.exists()


@pytest.mark.parametrize("where", ["file", "under-file", "unwritable"])
def test_out_that_cannot_be_a_run_folder_is_refused_before_any_work(
        where: str, tmp_path: Path) -> None:
    afile = tmp_path / "taken"
    afile.write_text("x")
    out = {"file": afile, "under-file": afile / "run",
           "unwritable": unwritable_folder(tmp_path)}[where]
    expected = {"file": "is a file; a run folder is needed",
                "under-file": "is a file, so no folder can be made under it",
                "unwritable": "cannot write in the folder"}[where]
    for command in (["train", "--model", "lr"], ["search", "--methods", "hparams"]):
        # absent data: the --out check must come first, before the data is read
        result = runner.invoke(app, [*command, "--data", str(tmp_path / "absent.csv"),
                                     *QUICK, "--out", str(out)])
        assert result.exit_code == 2, result.output
        assert f"--out {out}" in one_line(result) and expected in one_line(result)
    assert afile.read_text() == "x"


def test_predict_and_serve_check_their_flags(saved_model: Path, tmp_path: Path) -> None:
    rows = tmp_path / "rows.csv"
    rows.write_text("r0,r1\n1,2\n")
    locked = unwritable_folder(tmp_path)
    result = runner.invoke(app, ["predict", "--model", str(saved_model), "--data", str(rows),
                                 "--out", str(locked / "scores.csv")])
    assert result.exit_code == 2, result.output
    assert f"--out {locked / 'scores.csv'}: cannot write in" in one_line(result)
    result = runner.invoke(app, ["predict", "--model", str(saved_model), "--data", str(rows),
                                 "--out", str(tmp_path)])
    assert result.exit_code == 2 and "is a folder; a file name is needed" in one_line(result)
    result = runner.invoke(app, ["serve", "--model", str(saved_model), "--port", "99999"])
    assert result.exit_code == 2, result.output
    assert "--port must be between 0 and 65535, got 99999" in one_line(result)


# ------------------------------------------------------------ 10. unreasonable models
def test_a_model_unreasonable_for_its_data_is_said_before_training(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    rows = 300  # 40 id-like columns: every value nearly unique, far more weights than rows
    table = {f"c{i}": [f"v{v}" for v in rng.integers(0, 10**6, rows)] for i in range(40)}
    table["label"] = rng.integers(0, 2, rows)
    path = tmp_path / "wide.csv"
    pl.DataFrame(table).write_csv(path)
    out = tmp_path / "run"
    result = runner.invoke(app, ["train", "--data", str(path), "--label", "label",
                                 "--model", "deepfm", *QUICK, "--out", str(out)])
    assert result.exit_code == 0, result.output
    text = one_line(result)
    assert "unreasonable for its size" in text and "training rows" in text
    assert text.index("unreasonable") < text.index("test AUC")  # said before training


def test_scale_warning_counts_fields_and_parameters(tiny_synthetic: Dataset,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    spec = backbone_spec("deepfm", 8)
    assert scale_warning(tiny_synthetic, spec) is None
    monkeypatch.setattr("autodrs.experiment.MAX_FIELDS", 5)
    fields = len(tiny_synthetic.schema.fields)
    assert f"{fields:,} fields for" in (scale_warning(tiny_synthetic, spec) or "")
    monkeypatch.setattr("autodrs.experiment.MAX_FIELDS", 1000)
    monkeypatch.setattr("autodrs.experiment.MAX_PARAMS_PER_ROW", 1)
    rows = len(tiny_synthetic.train)
    assert f"parameters for {rows:,} training rows" in (scale_warning(tiny_synthetic, spec) or "")
