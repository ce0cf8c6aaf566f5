"""The command line: the result.json contract and clear errors."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from autodrs.cli import app

runner = CliRunner()
SMALL = "synthetic?rows=3000&seed=2"


def test_datasets_lists_builtins():
    result = runner.invoke(app, ["datasets"])
    assert result.exit_code == 0
    assert "movielens-100k" in result.output and "synthetic" in result.output


def test_train_writes_result_json_per_contract(tmp_run):
    result = runner.invoke(app, ["train", "--data", SMALL, "--model", "fm", "--epochs", "1",
                                 "--seed", "3", "--out", str(tmp_run), "--no-progress"])
    assert result.exit_code == 0, result.output
    data = json.loads((tmp_run / "result.json").read_text())
    assert data["command"] == "train" and data["seed"] == 3
    assert data["spec"]["fm"] is True
    for split in ("test", "valid"):
        assert set(data["metrics"][split]) == {"auc", "logloss"}
    assert data["params"]["total"] >= data["params"]["embedding"] > 0
    assert data["cost"]["train_samples_per_second"] > 0
    sizes = data["data"]["sizes"]
    assert sum(sizes.values()) == 3000 and abs(sizes["train"] - 2400) < 100
    for name in ("model.pt", "spec.json", "schema.json", "manifest.json"):
        assert (tmp_run / name).exists()


def test_train_notes_a_model_still_improving_at_the_last_epoch(tmp_run):
    result = runner.invoke(app, ["train", "--data", SMALL, "--model", "fm", "--epochs", "2",
                                 "--patience", "2", "--out", str(tmp_run), "--no-progress"])
    assert result.exit_code == 0, result.output
    data = json.loads((tmp_run / "result.json").read_text())
    aucs = [h["auc"] for h in data["history"]]
    assert aucs[1] > aucs[0]  # the second epoch validated best
    assert data["still_improving"] is True
    assert "still improving" in result.output and "--epochs" in result.output


def test_train_same_seed_same_metrics(tmp_path):
    outs = []
    for k in range(2):
        out = tmp_path / f"r{k}"
        runner.invoke(app, ["train", "--data", SMALL, "--model", "lr", "--epochs", "1",
                            "--out", str(out), "--no-progress"])
        outs.append(json.loads((out / "result.json").read_text())["metrics"])
    assert outs[0] == outs[1]


def test_train_a_spec_file(tmp_path, tmp_run):
    spec = {"linear": True, "fields": ["r0", "r1"]}
    (tmp_path / "spec.json").write_text(json.dumps(spec))
    result = runner.invoke(app, ["train", "--data", SMALL, "--spec", str(tmp_path / "spec.json"),
                                 "--epochs", "1", "--out", str(tmp_run), "--no-progress"])
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_run / "result.json").read_text())["spec"]["fields"] == ["r0", "r1"]


@pytest.mark.parametrize("args,message", [
    (["--model", "nope"], "unknown model 'nope'"),
    (["--data", "/no/such/file.csv"], "neither a built-in"),
    (["--label", "click"], "label column 'click' not found"),
    (["--categorical", "ghost"], "'ghost' is not a column"),
])
def test_bad_arguments_exit_2_with_a_message(tmp_run, args, message):
    base = {"--data": SMALL, "--model": "lr"}
    pairs = dict(zip(args[::2], args[1::2], strict=True))
    argv = ["train", *[x for k, v in (base | pairs).items() for x in (k, v)],
            "--epochs", "1", "--out", str(tmp_run)]
    result = runner.invoke(app, argv)
    assert result.exit_code == 2
    assert message in " ".join(result.output.split())


def test_spec_naming_an_unknown_field_is_rejected(tmp_path, tmp_run):
    (tmp_path / "spec.json").write_text(json.dumps({"linear": True, "fields": ["ghost"]}))
    result = runner.invoke(app, ["train", "--data", SMALL, "--spec", str(tmp_path / "spec.json"),
                                 "--out", str(tmp_run)])
    assert result.exit_code == 2
    assert "unknown field 'ghost'" in result.output


def test_bench_writes_a_leaderboard(tmp_run):
    result = runner.invoke(app, ["bench", "--data", SMALL, "--baselines", "lr,fm", "--seeds", "2",
                                 "--epochs", "1", "--out", str(tmp_run)])
    assert result.exit_code == 0, result.output
    data = json.loads((tmp_run / "result.json").read_text())
    assert set(data["baselines"]) == {"lr", "fm"}
    assert len(data["runs"]["fm"]) == 2
    assert data["baselines"]["fm"]["spread"]["auc_std"] >= 0
    assert "| fm |" in (tmp_run / "leaderboard.md").read_text()


def test_console_script_is_installed():
    out = subprocess.run([sys.executable, "-m", "autodrs", "--help"], capture_output=True,
                         text=True, check=True)
    for command in ("datasets", "train", "bench", "search", "report", "predict", "serve",
                    "export", "tune-serving"):
        assert command in out.stdout


def test_verbosity_flags_and_the_run_log(tmp_path):
    out = tmp_path / "run"
    args = ["train", "--data", "synthetic?rows=3000&seed=1", "--model", "fm", "--epochs", "1",
            "--threads", "1", "--no-progress", "--out", str(out)]
    quiet = CliRunner().invoke(app, ["-q", *args])
    assert quiet.exit_code == 0, quiet.output
    assert "training fm" not in quiet.output and "test AUC" in quiet.output
    log = (out / "run.log").read_text()  # the run log has everything, debug included
    assert "INFO autodrs: training fm" in log and "DEBUG autodrs: settings:" in log
    verbose = CliRunner().invoke(app, ["-v", *args, "--overwrite"])
    assert "training fm" in verbose.output and "settings: {" in verbose.output
    plain = CliRunner().invoke(app, [*args, "--overwrite"])
    assert "training fm" in plain.output and "settings: {" not in plain.output


def test_importing_autodrs_leaves_other_libraries_logging_alone():
    code = ("import logging, optuna\n"
            "before = optuna.logging.get_verbosity()\n"
            "import autodrs.api, autodrs.cli, autodrs.methods, autodrs.search.blackbox\n"
            "assert optuna.logging.get_verbosity() == before, optuna.logging.get_verbosity()\n"
            "assert logging.getLogger().handlers == []\n"
            "assert logging.getLogger('autodrs').handlers == []\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr


def test_methods_lists_each_method_with_its_component_strategies_and_options():
    import autodrs.methods  # noqa: F401  (fills the registry)
    from autodrs.search.base import METHODS

    result = CliRunner(env={"COLUMNS": "400"}).invoke(app, ["methods"])
    assert result.exit_code == 0, result.output
    lines = {line.split("│")[1].strip(): line for line in result.output.splitlines()
             if line.count("│") >= 4}
    for name, cls in METHODS.items():
        assert name in lines, name
        assert cls.component in lines[name] and ", ".join(cls.strategies) in lines[name]
    assert "fidelity=auto" in lines["autoctr"]


def test_train_called_as_a_function_as_ray_workers_call_it(tmp_path):
    from autodrs.cli import train

    train(None, data=SMALL, out_dir=tmp_path / "run", model="fm", epochs=1, threads=1,
          progress=False, seed=0)
    assert json.loads((tmp_path / "run" / "result.json").read_text())["model"] == "fm"
