"""report.html renders in headless Chromium with every plot present and drawn."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from autodrs.cli import app
from autodrs.report.html import build_report

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                  "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync"]


def _chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        pytest.fail("headless Chromium is needed to test the report: apt-get install chromium "
                    "(.ci/run installs it)")
    return path


def _render(html_path: Path, tmp_path: Path) -> tuple[str, Path]:
    chromium = _chromium()
    profile = tmp_path / "profile"
    dom = subprocess.run(
        [chromium, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "--virtual-time-budget=5000",
         "--dump-dom", html_path.as_uri()],
        capture_output=True, text=True, timeout=120, check=True).stdout
    shot = tmp_path / "shot.png"
    subprocess.run(
        [chromium, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "--window-size=1200,2400",
         f"--screenshot={shot}", html_path.as_uri()],
        capture_output=True, timeout=120, check=True)
    return dom, shot


def _full_result() -> dict:
    fields = ["r0", "r1", "r2", "n0", "n1"]
    return {
        "command": "search", "seed": 7,
        "data": {"name": "synthetic", "rows": 1000, "split": "random",
                 "truth": {"relevant": ["r0", "r1", "r2"]},
                 "fields": {f: {"kind": "categorical", "vocab_size": 10 + i}
                            for i, f in enumerate(fields)} | {"num0": {"kind": "numerical",
                                                                     "vocab_size": 0}}},
        "spec": {"fields": [*fields[:3], "num0"], "crosses": [["r0", "r1"]], "embed_dim": 8,
                 "field_dims": {"r0": 16, "r2": 4}, "numerical": {"num0": "autodis"},
                 "linear": True, "fm": True, "mlp": [64, 32], "dropout": 0.1,
                 "interactions": [{"fields": ["r0", "r1"], "function": "product",
                                   "weight": 0.7},
                                  {"fields": ["r1", "r2"], "function": "multiply"}],
                 "loss": {"name": "focal", "params": {"gamma": 2.0}},
                 "training": {"lr": 0.003, "batch_size": None, "weight_decay": None},
                 "provenance": [{"method": "preset", "model": "deepfm"},
                                {"method": "autofield", "strategy": "gradient",
                                 "decided": ["fields"]},
                                {"method": "guard", "rejected": "autodim"}]},
        "metrics": {"test": {"auc": 0.80, "logloss": 0.50},
                    "valid": {"auc": 0.81, "logloss": 0.49}},
        "params": {"embedding": 1000, "total": 2000},
        "bytes": {"embedding": 4000, "total": 8000},
        "baselines": {"deepfm": {"test": {"auc": 0.78, "logloss": 0.52},
                                 "valid": {"auc": 0.785, "logloss": 0.515},
                                 "spread": {"auc_std": 0.0},
                                 "params": {"embedding": 3000, "total": 5000}}},
        "cost": {"search_seconds": 12.0, "retrain_seconds": 3.0},
        "history": [{"epoch": e, "auc": 0.7 + 0.03 * e, "logloss": 0.6 - 0.03 * e}
                    for e in range(1, 5)],
        "config": {"epochs": 10, "batch_size": 1024, "lr": 0.001, "patience": 2},
        "settings": {"data": "synthetic", "methods": ["autofield", "autodim"], "budget": "5m",
                     "strategy": None, "seed": 7, "options": {}},
        "versions": {"autodrs": "0.1.0", "torch": "2.13.0", "polars": "1.30.0",
                     "numpy": "2.2.0"},
        "machine": {"python": "3.11.7", "threads": 2},
        "stages": [
            {"method": "autofield", "strategy": "gradient", "seconds": 4.0,
             "ranking": fields, "scores": {f: 1.0 - 0.1 * i for i, f in enumerate(fields)},
             "curve": [{"k": k, "valid_auc": 0.7 + 0.02 * k, "test_auc": 0.69 + 0.02 * k}
                       for k in range(1, 6)]},
            {"method": "autodim", "strategy": "gradient", "seconds": 2.0,
             "dims": {"r0": 16, "r1": 8, "r2": 4}, "bytes": 4096,
             "pareto": [{"bytes": 100 * i, "valid_auc": 0.7 + 0.01 * i, "front": i % 2 == 0}
                        for i in range(1, 8)]},
            {"method": "autofis", "strategy": "gradient", "seconds": 3.0,
             "ranking": [["r0", "r1"], ["r1", "r2"], ["r0", "r2"]],
             "scores": {"r0*r1": 0.9, "r1*r2": 0.5, "r0*r2": 0.0}, "kept": ["r0*r1"],
             "heads": {"chosen": "fm", "retrained": [
                 {"backbone": "fm", "numerical": {}, "pairs": 1, "gates": False,
                  "valid_auc": 0.83, "seconds": 1.5},
                 {"backbone": "fm", "numerical": {}, "pairs": 2, "gates": True,
                  "valid_auc": 0.82, "seconds": 1.2},
                 {"backbone": "deepfm", "numerical": {"num0": "bucket"}, "pairs": 2,
                  "gates": True, "valid_auc": 0.81, "seconds": 2.0}]}},
            # as the hparams method writes it: decisions ranked, values keyed "trial N"
            {"method": "hparams", "strategy": "tpe", "seconds": 5.0,
             "ranking": [{"mlp": "64-32", "lr": 0.003}, {"mlp": "128", "lr": 0.001}],
             "scores": {"trial 4": 0.8, "trial 2": 0.76},
             "trials": [{"number": i, "values": [float(v)]}
                        for i, v in enumerate(np.linspace(0.6, 0.8, 6))]},
            {"method": "autoctr", "strategy": "evolution", "seconds": 6.0, "ranking": [],
             "scores": {}, "dag": {"nodes": [
                 {"id": "b0", "label": "FM", "inputs": ["embeddings"]},
                 {"id": "b1", "label": "MLP 64", "inputs": ["embeddings"]},
                 {"id": "b2", "label": "MLP 32", "inputs": ["b0", "b1"]}]}},
        ],
    }


@pytest.fixture(scope="module")
def full_report(tmp_path_factory) -> tuple[list[str], Path]:
    """The report of ``_full_result``, built once (tests only read it)."""
    out = tmp_path_factory.mktemp("full") / "report.html"
    return build_report(_full_result(), out), out


def test_every_plot_is_present_and_drawn_in_chromium(full_report, tmp_path):
    names, out = full_report
    assert names == ["comparison", "auc-vs-embedding", "training-curves", "autofield-ranking",
                     "autofield-auc-vs-k", "autodim-dims", "autodim-pareto-bytes",
                     "autofis-pairs", "hparams-progress", "autoctr-dag"]
    html_text = out.read_text()
    assert "http://" not in html_text and "https://" not in html_text  # self-contained
    dom, shot = _render(out, tmp_path)
    drawn = re.search(r'data-plots-drawn="(\d+)"', dom)
    total = re.search(r'data-plots-total="(\d+)"', dom)
    assert drawn and total, "the page's load script did not run"
    assert int(total.group(1)) == len(names)
    assert int(drawn.group(1)) == len(names)
    for name in names:
        assert f'data-plot="{name}"' in dom
    # the screenshot is a real rendering, not a blank page
    from matplotlib.image import imread

    pixels = imread(shot)
    assert pixels.shape[0] > 500 and float(pixels[..., :3].std()) > 0.05


def test_report_lists_the_candidates_a_stage_retrained(full_report):
    text = full_report[1].read_text()
    table = text[text.index("<table class='candidates'>"):]
    table = table[:table.index("</table>")]
    rows = re.findall(r"<tr( class=searched)?><td>(\w+)</td><td>(\d+)</td><td>([\w ]+)</td>"
                      r"<td>([^<]*)</td><td>([\d.]+)</td>", table)
    assert [(r[1], r[2], r[3], r[4], r[5]) for r in rows] == [
        ("fm", "1", "plain", "-", "0.8300"), ("fm", "2", "gates as attention", "-", "0.8200"),
        ("deepfm", "2", "gates as attention", "num0 bucket", "0.8100")]
    assert [bool(r[0]) for r in rows] == [True, False, False]  # the best validation marked
    assert "kept pairs: r0*r1" in text


def test_report_command_renders_a_trained_run(tmp_path):
    runner = CliRunner()
    run = tmp_path / "run"
    result = runner.invoke(app, ["train", "--data", "synthetic?rows=2000&seed=4", "--model", "lr",
                                 "--epochs", "1", "--out", str(run), "--no-progress"])
    assert result.exit_code == 0, result.output
    (run / "report.html").unlink()
    result = runner.invoke(app, ["report", str(run)])
    assert result.exit_code == 0, result.output
    dom, _ = _render(run / "report.html", tmp_path)
    assert 'data-plots-drawn="1"' in dom and 'data-plots-total="1"' in dom
    data = json.loads((run / "result.json").read_text())
    assert f"{data['metrics']['test']['auc']:.4f}" in dom


def test_report_of_a_folder_without_result_fails_clearly(tmp_path):
    result = CliRunner().invoke(app, ["report", str(tmp_path)])
    assert result.exit_code == 2
    assert "result.json not found" in result.output


def _section(text: str, cls: str) -> str:
    start = text.index(f"<section class='{cls}'>")
    return text[start:text.index("</section>", start)]


def test_report_leads_with_the_architecture_and_ends_with_configuration(full_report):
    text = full_report[1].read_text()
    order = [text.index(f"<section class='{c}'>") for c in
             ("architecture", "leaderboard", "curves", "diagnostics", "configuration")]
    assert order == sorted(order)
    arch = _section(text, "architecture")
    assert "reads 4 of 6 fields (dropping n0, n1)" in arch
    assert "embedded in 4 to 16 dimensions" in arch
    assert "1 cross feature: r0 × r1" in arch
    assert "models 2 of the" in arch and "<td>r0×r1</td><td>product</td><td>0.7</td>" in arch
    assert "<td>MLP</td><td>64 → 32 (dropout 0.1)</td>" in arch
    assert "<td>num0</td><td>numerical</td><td>kept</td><td>8</td><td>-</td>" \
           "<td>autodis encoder</td>" in arch
    assert "<tr class=dropped><td>n0</td>" in arch
    # a searched rate, and the command's batch size where the spec leaves it
    assert "<td>learning rate</td><td>0.003 (searched)</td>" in arch
    assert "<td>batch size</td><td>1,024 (the command&#x27;s setting)</td>" in arch
    assert "focal loss (gamma 2)" in arch
    assert "rejected what autodim proposed" in arch
    config = _section(text, "configuration")
    assert "<td>torch</td><td>2.13.0</td>" in config and "ArchSpec JSON" in config
    assert "<td>budget</td><td>5m</td>" in config and "<td>methods</td><td>[&quot;autofield" \
           "&quot;, &quot;autodim&quot;]</td>" in config
    assert "<td>strategy</td>" not in config  # left unset
    assert "<td>seed</td><td>7</td>" in config


def test_leaderboard_has_validation_and_test_metrics_and_sizes(full_report, tmp_path):
    out = tmp_path / "report.html"
    board = _section(full_report[1].read_text(), "leaderboard")
    head = re.search(r"<table class='board'><tr>(.*?)</tr>", board).group(1)
    assert re.findall(r"<th>([^<]*)</th>", head) == [
        "model", "valid AUC", "test AUC", "valid logloss", "test logloss", "parameters",
        "embedding parameters", "bytes"]
    assert ("<tr class=searched><td>searched</td><td>0.8100</td><td>0.8000</td><td>0.4900</td>"
            "<td>0.5000</td><td>2,000</td><td>1,000</td><td>8,000</td></tr>") in board
    # latency where measured: a column of its own, blank for the models not measured
    result = _full_result()
    result["latency_ms"] = 1.234
    build_report(result, out)
    board = _section(out.read_text(), "leaderboard")
    assert "<th>latency (ms)</th>" in board and "<td>8,000</td><td>1.23</td></tr>" in board
    assert "<td>5,000</td><td>3,000</td><td></td><td></td></tr>" in board


def test_one_seed_shows_no_spread_and_several_seeds_do(full_report, tmp_path):
    out = tmp_path / "report.html"
    text = full_report[1].read_text()  # one seed; a baseline's spread of 0.0 recorded
    assert "± 0.0000" not in text and "± std" not in text and "0.0000" not in text
    bench = {"command": "bench", "seed": 1, "seeds": [1, 2, 3], "data": {"name": "synthetic"},
             "baselines": {
                 "fm": {"test": {"auc": 0.78, "logloss": 0.52}, "params": {"total": 5},
                        "spread": {"auc_std": 0.0031, "logloss_std": 0.002}},
                 "lr": {"test": {"auc": 0.75, "logloss": 0.55}, "params": {"total": 3},
                        "spread": {"auc_std": 0.0042, "logloss_std": 0.001}}}}
    build_report(bench, out)
    board = _section(out.read_text(), "leaderboard")
    assert "over 3 seeds" in board
    assert "<tr><td>fm</td><td>0.7800</td><td>0.0031</td><td>0.5200</td><td>0.0020</td>" in board


def test_search_diagnostics_plot_no_test_scores(tmp_path, monkeypatch):
    """Every number a stage's charts are drawn from is a validation number: the sentinel
    test AUCs planted in the stage entries reach no chart and no diagnostics text."""
    result = _full_result()
    sentinels = [0.6111, 0.6222, 0.6333]
    result["stages"].append({
        "method": "frequency", "strategy": "grid", "seconds": 1.0, "ranking": [], "scores": {},
        "threshold_curve": [{"threshold": t, "valid_auc": 0.79 + 0.001 * t, "test_auc": s}
                            for t, s in zip((1, 2, 3), sentinels, strict=True)]})
    result["stages"].append({
        "method": "lasso", "strategy": "erase", "seconds": 1.0, "ranking": ["r0", "r1"],
        "scores": {"r0": 0.5, "r1": 0.2},
        "erase": {"k": [1, 2, 3], "valid_auc": [0.7, 0.71, 0.72], "test_auc": sentinels}})
    result["stages"][0]["curve"] = [{"k": k, "valid_auc": 0.7 + 0.01 * k, "test_auc": s}
                                    for k, s in zip((1, 2, 3), sentinels, strict=True)]
    drawn: list[float] = []

    def record(name):
        original = getattr(plots, name)

        def wrapper(*args, **kwargs):
            drawn.extend(_numbers([args, kwargs]))
            return original(*args, **kwargs)
        return wrapper

    from autodrs.report import plots
    for name in ("curve", "scores_bar", "progress", "pareto", "heatmap", "dag"):
        monkeypatch.setattr(plots, name, record(name))
    out = tmp_path / "report.html"
    names = build_report(result, out)
    assert {"frequency-auc-vs-threshold", "lasso-auc-vs-k", "autofield-auc-vs-k"} <= set(names)
    assert 0.79 + 0.001 in drawn and 0.71 in drawn  # the validation curves are drawn
    assert not {round(v, 4) for v in drawn} & set(sentinels)
    diagnostics = _section(out.read_text(), "diagnostics")
    assert "test" not in diagnostics.lower().replace("the test split is kept", "")
    assert not any(f"{s:.4f}" in diagnostics for s in sentinels)


def _numbers(value):
    if isinstance(value, bool):
        return []
    if isinstance(value, int | float):
        return [float(value)]
    if isinstance(value, dict):
        return [n for v in value.values() for n in _numbers(v)]
    if isinstance(value, list | tuple):
        return [n for v in value for n in _numbers(v)]
    if isinstance(value, np.ndarray):
        return [float(v) for v in value.ravel()]
    return []


def test_charts_with_nothing_to_show_are_left_out(tmp_path):
    out = tmp_path / "report.html"
    result = _full_result()
    # hparams ranks decisions and keys its values by trial: no bar chart of NaNs, a table
    result["stages"][3].pop("trials")
    # a ranking whose items carry no score
    result["stages"].append({"method": "marlfs", "strategy": "rl", "seconds": 1.0,
                             "ranking": ["r0", "r1"], "scores": {"x": float("nan")}})
    del result["history"], result["baselines"]
    names = build_report(result, out)
    assert not [n for n in names if n.startswith(("hparams", "marlfs"))]
    assert "training-curves" not in names  # no history
    assert "comparison" not in names and "auc-vs-embedding" not in names  # one model only
    text = out.read_text()
    trials = text[text.index("<table class='trials'>"):]
    assert "<td>4</td><td>0.8000</td><td>mlp=64-32, lr=0.003</td>" in trials
    assert "Scores of the ranked items" not in text


def test_training_curves_are_drawn_from_history(tmp_path):
    out = tmp_path / "report.html"
    result = _full_result()
    result["baselines"]["deepfm"]["history"] = [{"epoch": 1, "auc": 0.7, "logloss": 0.6},
                                                {"epoch": 2, "auc": 0.75, "logloss": 0.55}]
    names = build_report(result, out)
    assert "training-curves" in names
    assert "(the final model in red)" in _section(out.read_text(), "curves")
    result["history"] = [{"epoch": 1, "auc": None}]  # nothing usable: no chart
    del result["baselines"]["deepfm"]["history"]
    assert "training-curves" not in build_report(result, out)


def test_axes_sit_around_values_near_0_8(tmp_path, monkeypatch):
    from autodrs.report import plots

    limits: dict[str, list[tuple[float, float]]] = {}
    original = plots._png

    def capture(fig):
        title = fig.axes[0].get_title()
        limits[title] = [ax.get_xlim() for ax in fig.axes] + [ax.get_ylim() for ax in fig.axes]
        return original(fig)

    monkeypatch.setattr(plots, "_png", capture)
    result = _full_result()
    result["stages"].append({"method": "optim", "strategy": "grid", "seconds": 1.0,
                             "ranking": ["lr=0.003", "lr=0.001"],
                             "scores": {"lr=0.003": 0.792, "lr=0.001": 0.785}})
    build_report(result, tmp_path / "report.html")
    assert limits["searched model against hand-crafted baselines"][0][0] > 0.7
    assert limits["optim: ranking, best first"][0][0] > 0.7
    assert limits["test AUC against embedding parameters"][1][0] > 0.7  # the y axis
    # values that run from near 0 (dims 4 to 16) keep bars from 0
    assert limits["autodim: embedding size per field"][0][0] <= 0.0


def test_architecture_of_every_field_a_block_dag_and_pruned_tables():
    from autodrs.nn.pruned import encode_mask
    from autodrs.report.architecture import describe

    mask = np.zeros((10, 4), dtype=bool)
    mask[:5] = True  # half the weights kept
    spec = {"fields": None, "embed_dim": 4, "pruning": {"a": encode_mask(mask)},
            "dag": {"nodes": [{"id": "b0", "label": "FM", "inputs": ["embeddings"]},
                              {"id": "b1", "label": "MLP", "inputs": ["b0"]}]},
            "interactions": None, "training": {}, "controller": {"k": 2}}
    arch = describe(spec, {"a": {"kind": "categorical", "vocab_size": 10},
                           "b": {"kind": "sequence", "vocab_size": 7}},
                    {"lr": 0.001, "batch_size": 256})
    words = " ".join(arch.sentences)
    assert "reads 2 of 2 fields, each embedded in 4 dimensions" in words
    assert "prunes the tables of a value by value" in words
    assert "all 1 field pairs" not in words  # no pair tower, no pair sentence
    assert arch.fields[0][5] == "50% of its embedding weights kept"
    assert ["block DAG", "2 blocks"] in arch.towers
    assert ["per-example field controller (AdaFS)", "keeps the top 2 fields"] in arch.towers
    assert ["learning rate", "0.001 (the command's setting)"] in arch.training


def test_pareto_front_is_drawn_against_the_stage_own_objectives(tmp_path):
    """A multi-objective stage names its costs (``pareto_objectives``); each gets a chart."""
    result = _full_result()
    front = [{"number": i, "values": [0.7 + 0.01 * i, 1000 * i, 50 * i], "valid_auc": 0.7 + 0.01 * i,
              "embedding_bytes": 1000 * i, "params": 50 * i, "front": True} for i in range(1, 4)]
    result["stages"][3].update(pareto=front,
                               pareto_objectives=["auc", "embedding_bytes", "params"])
    names = build_report(result, tmp_path / "report.html")
    assert "hparams-pareto-embedding_bytes" in names and "hparams-pareto-params" in names
    assert "AUC against embedding bytes" in (tmp_path / "report.html").read_text()
