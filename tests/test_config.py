"""One settings model for train, search and bench: YAML keys are flag names, a run's own
config.yaml runs it again, per-method options reach their method, bad keys and values are
named."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from autodrs.cli import app
from autodrs.config import SearchSettings, TrainSettings

DATA = "synthetic?rows=3000&seed=1"
QUICK = ["--data", DATA, "--seed", "0", "--epochs", "1", "--threads", "1", "--no-progress"]
runner = CliRunner()


def one_line(result: Any) -> str:
    return " ".join(result.output.split())


@pytest.fixture()
def probe(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """A search method ``probe`` that records the options its stage was given."""
    from autodrs.search.base import METHODS, Method, SearchContext, StageResult

    seen: list[dict[str, Any]] = []

    class Probe(Method):
        name = "probe"
        component = "training"
        strategies = ("grid",)

        def search(self, ctx: SearchContext) -> StageResult:
            seen.append({"depth": ctx.options.get("depth", 1),
                         "width": ctx.options.get("width", 8)})
            return StageResult(method=self.name, strategy="grid", spec=ctx.spec.copy())

    monkeypatch.setitem(METHODS, "probe", Probe)
    return seen


def test_a_run_s_saved_config_runs_it_again_to_the_same_spec(tmp_path: Path) -> None:
    first = tmp_path / "first"
    result = runner.invoke(app, ["search", *QUICK, "--methods", "hparams", "--strategy",
                                 "random", "--trials", "2", "--fast", "--baselines", "none",
                                 "--out", str(first)])
    assert result.exit_code == 0, result.output
    saved = yaml.safe_load((first / "config.yaml").read_text())
    # keys are the flag names, and where the run was written is not part of it
    assert saved["methods"] == ["hparams"] and saved["format"] is None and "out" not in saved
    second = tmp_path / "second"
    again = runner.invoke(app, ["search", "--config", str(first / "config.yaml"),
                                "--out", str(second)])
    assert again.exit_code == 0, again.output
    a, b = (json.loads((d / "result.json").read_text()) for d in (first, second))
    def without_timing(spec: dict[str, Any]) -> dict[str, Any]:
        steps = [{k: v for k, v in step.items() if k != "seconds"} for step in spec["provenance"]]
        return {**spec, "provenance": steps}

    assert without_timing(a["spec"]) == without_timing(b["spec"])
    assert a["metrics"] == b["metrics"]
    shown = ("out", "progress")  # where the run was written, and whether bars were drawn
    assert ({k: v for k, v in a["settings"].items() if k not in shown}
            == {k: v for k, v in b["settings"].items() if k not in shown})
    assert a["versions"]["torch"] and a["versions"] == b["versions"]


def test_method_options_from_yaml_and_set_reach_their_method(
        tmp_path: Path, probe: list[dict[str, Any]]) -> None:
    cfg = tmp_path / "run.yaml"
    cfg.write_text(yaml.safe_dump({"methods": "probe", "baselines": "none",
                                   "options": {"probe": {"depth": 2, "width": 4}}}))
    out = tmp_path / "run"
    result = runner.invoke(app, ["search", *QUICK, "--config", str(cfg), "--set",
                                 "probe.depth=5", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert probe == [{"depth": 5, "width": 4}]  # --set wins over the file, option by option
    saved = yaml.safe_load((out / "config.yaml").read_text())
    assert saved["options"] == {"probe": {"depth": 5, "width": 4}}
    # the saved file gives the method the same options
    probe.clear()
    again = runner.invoke(app, ["search", "--config", str(out / "config.yaml"), "--out",
                                str(tmp_path / "again")])
    assert again.exit_code == 0, again.output
    assert probe == [{"depth": 5, "width": 4}]


@pytest.mark.parametrize(("content", "extra", "message"), [
    ({"colour": "red"}, [], "unknown key 'colour' in"),
    ({"epoch": 3}, [], "unknown key 'epoch' in .* \\(did you mean 'epochs'\\?\\)"),
    ({"epochs": "ten"}, [], "epochs in .*: expected an integer, got 'ten'"),
    ({"fast": "yes"}, [], "fast in .*: expected true or false, got 'yes'"),
    ({"epochs": 0}, [], "--epochs must be at least 1, got 0"),
    ({"budget": "soon"}, [], "cannot read budget 'soon'"),
    ({"options": {"nosuch": {"a": 1}}}, [], "options: unknown method 'nosuch'"),
    ({"options": {"autoctr": {"fidelty": "full"}}}, [],
     "method 'autoctr' has no option 'fidelty'; its options: .*fidelity"),
    ({}, ["--set", "autoctr.fidelty=full"], "method 'autoctr' has no option 'fidelty'"),
    ({}, ["--set", "fidelity"], "write it as METHOD.OPTION=VALUE"),
])
def test_bad_config_keys_and_values_are_named(tmp_path: Path, content: dict[str, Any],
                                              extra: list[str], message: str) -> None:
    import re

    cfg = tmp_path / "bad.yaml"
    cfg.write_text(yaml.safe_dump(content))
    result = runner.invoke(app, ["search", "--data", DATA, "--config", str(cfg), *extra,
                                 "--out", str(tmp_path / "run")])
    assert result.exit_code == 2, result.output
    assert re.search(message, one_line(result)), result.output
    assert not (tmp_path / "run").exists()  # refused before any work


def test_train_and_bench_take_a_config_file(tmp_path: Path) -> None:
    cfg = tmp_path / "train.yaml"
    cfg.write_text(yaml.safe_dump({"data": DATA, "model": "fm", "epochs": 1, "seed": 3,
                                   "threads": 1, "batch-size": 512}))
    result = runner.invoke(app, ["train", "--config", str(cfg), "--seed", "4", "--out",
                                 str(tmp_path / "t")])
    assert result.exit_code == 0, result.output
    r = json.loads((tmp_path / "t" / "result.json").read_text())
    assert r["model"] == "fm" and r["seed"] == 4 and r["config"]["batch_size"] == 512
    assert TrainSettings.from_mapping(yaml.safe_load(
        (tmp_path / "t" / "config.yaml").read_text())).model == "fm"
    cfg = tmp_path / "bench.yaml"
    cfg.write_text(yaml.safe_dump({"data": DATA, "baselines": ["fm"], "seeds": 1,
                                   "epochs": 1, "threads": 1}))
    result = runner.invoke(app, ["bench", "--config", str(cfg), "--out", str(tmp_path / "b")])
    assert result.exit_code == 0, result.output
    r = json.loads((tmp_path / "b" / "result.json").read_text())
    assert list(r["baselines"]) == ["fm"] and r["seeds"] == [2026]


def test_settings_read_lists_and_budgets_as_written() -> None:
    s = SearchSettings.from_mapping({"methods": "autofield, autodim", "budget": 90,
                                     "baselines": "none", "batch-size": 256})
    assert s.methods == ["autofield", "autodim"] and s.budget == "90"
    assert s.baselines == [] and s.batch_size == 256 and s.lr == 1e-3
    assert SearchSettings.from_mapping(yaml.safe_load(s.to_yaml())) == s


def test_search_baselines_all_none_and_the_defaults() -> None:
    from autodrs.api import plan_search
    from autodrs.config import DEFAULT_BASELINES
    from autodrs.models.backbones import BACKBONES

    def plan(**values: Any) -> Any:
        return plan_search(SearchSettings.from_mapping(values))

    assert plan(methods="hparams", baselines="all").baselines == list(BACKBONES)
    assert plan(methods="hparams", baselines="none").baselines == []
    assert plan(methods="hparams").baselines == ["deepfm"]
    default = plan()
    assert default.baselines == DEFAULT_BASELINES.split(",") and default.model == "auto"
    # two fifths when the baselines are tuned like the searched model, else a quarter
    assert plan(budget="4m").baseline_seconds == 96.0
    assert plan(budget="4m", tune_baselines=False).baseline_seconds == 60.0
