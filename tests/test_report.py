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
                 "truth": {"relevant": ["r0", "r1", "r2"]}},
        "spec": {"fields": fields[:3]},
        "metrics": {"test": {"auc": 0.80, "logloss": 0.50}, "valid": {"auc": 0.81}},
        "params": {"embedding": 1000, "total": 2000},
        "baselines": {"deepfm": {"test": {"auc": 0.78, "logloss": 0.52},
                                 "spread": {"auc_std": 0.004}, "params": {"total": 5000}}},
        "cost": {"search_seconds": 12.0, "retrain_seconds": 3.0},
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
            {"method": "hparams", "strategy": "tpe", "seconds": 5.0, "ranking": [], "scores": {},
             "trials": [{"number": i, "values": [float(v)]}
                        for i, v in enumerate(np.linspace(0.6, 0.8, 6))]},
            {"method": "autoctr", "strategy": "evolution", "seconds": 6.0, "ranking": [],
             "scores": {}, "dag": {"nodes": [
                 {"id": "b0", "label": "FM", "inputs": ["embeddings"]},
                 {"id": "b1", "label": "MLP 64", "inputs": ["embeddings"]},
                 {"id": "b2", "label": "MLP 32", "inputs": ["b0", "b1"]}]}},
        ],
    }


def test_every_plot_is_present_and_drawn_in_chromium(tmp_path):
    out = tmp_path / "report.html"
    names = build_report(_full_result(), out)
    assert names == ["comparison", "autofield-ranking", "autofield-auc-vs-k", "autodim-dims",
                     "autodim-pareto-bytes", "autofis-pairs", "hparams-progress", "autoctr-dag"]
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


def test_report_lists_the_candidates_a_stage_retrained(tmp_path):
    out = tmp_path / "report.html"
    build_report(_full_result(), out)
    text = out.read_text()
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
