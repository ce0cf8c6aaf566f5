"""``--lazy-tables`` reaches every fit of a command: the trainer's optimiser is the lazy Adam
and the run's saved config says so (the flag re-runs from ``config.yaml``)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from autodrs.cli import app
from autodrs.train import trainer
from autodrs.train.lazy import LazyAdam


@pytest.fixture
def lazy_made(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    made: list[int] = []

    class Counted(LazyAdam):
        def __init__(self, *args, **kwargs) -> None:  # type: ignore[no-untyped-def]
            made.append(1)
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(trainer, "LazyAdam", Counted)
    return made


@pytest.mark.parametrize("lazy", [True, False])
def test_train_flag_picks_the_lazy_optimiser(tmp_path: Path, lazy_made: list[int],
                                             lazy: bool) -> None:
    out = tmp_path / "run"
    args = ["train", "--data", "synthetic?rows=2000&seed=1", "--epochs", "1", "--threads", "1",
            "--no-progress", "--seed", "0", "--out", str(out)]
    done = CliRunner().invoke(app, args + (["--lazy-tables"] if lazy else []))
    assert done.exit_code == 0, done.output
    assert bool(lazy_made) is lazy
    result = json.loads((out / "result.json").read_text())
    assert result["config"]["lazy_tables"] is lazy
    assert yaml.safe_load((out / "config.yaml").read_text())["lazy_tables"] is lazy


def test_search_flag_reaches_the_stages_and_the_baselines(tmp_path: Path,
                                                          lazy_made: list[int]) -> None:
    out = tmp_path / "run"
    done = CliRunner().invoke(app, [
        "search", "--data", "synthetic?rows=2000&seed=1", "--methods", "hparams", "--trials",
        "1", "--fast", "--epochs", "1", "--baselines", "fm", "--no-tune-baselines",
        "--threads", "1", "--no-progress", "--seed", "0", "--lazy-tables", "--out", str(out)])
    assert done.exit_code == 0, done.output
    # the stage's trial, the retrain and the fm baseline each built one
    assert len(lazy_made) >= 3
    assert json.loads((out / "result.json").read_text())["settings"]["lazy_tables"] is True
