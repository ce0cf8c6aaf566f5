"""``report.html``: a self-contained page (plots embedded as PNG) explaining what a run
chose and why, built from the run's ``result.json``.

Each plot is a ``<figure class="plot">``; a small inline script marks on ``<body>`` how many
plot images the browser actually decoded (``data-plots-drawn`` of ``data-plots-total``),
which the test reads from headless Chromium.
"""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path
from typing import Any

import numpy as np

from autodrs.report import plots

STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0;background:#f6f7f9;
color:#1d2330}
header{background:#1d2330;color:#fff;padding:18px 32px}
header h1{margin:0;font-size:22px} header p{margin:4px 0 0;color:#c9d1e0}
main{max-width:1100px;margin:0 auto;padding:16px 32px}
section{background:#fff;border-radius:8px;padding:16px 20px;margin:16px 0;
box-shadow:0 1px 3px rgba(0,0,0,.08)}
h2{font-size:18px;margin:0 0 8px} h3{font-size:15px;margin:12px 0 6px}
table{border-collapse:collapse;font-size:14px} td,th{padding:4px 10px;
border-bottom:1px solid #e3e6eb;text-align:right} td:first-child,th:first-child{text-align:left}
tr.searched td{font-weight:600;color:#b3261e}
figure{margin:10px 0} figure img{max-width:100%} figcaption{font-size:13px;color:#5b6475}
.kv{color:#5b6475;font-size:13px} pre{background:#f0f2f5;padding:10px;overflow:auto;font-size:12px}
"""

SCRIPT = """
window.addEventListener('load', function () {
  var imgs = document.querySelectorAll('figure.plot img');
  var drawn = 0;
  imgs.forEach(function (img) { if (img.complete && img.naturalWidth > 0) drawn++; });
  document.body.setAttribute('data-plots-drawn', String(drawn));
  document.body.setAttribute('data-plots-total', String(imgs.length));
});
"""


class _Page:
    def __init__(self) -> None:
        self.parts: list[str] = []
        self.plot_names: list[str] = []

    def add(self, text: str) -> None:
        self.parts.append(text)

    def figure(self, name: str, png: bytes, caption: str) -> None:
        data = base64.b64encode(png).decode()
        self.plot_names.append(name)
        self.add(f'<figure class="plot" data-plot="{html.escape(name)}">'
                 f'<img alt="{html.escape(caption)}" src="data:image/png;base64,{data}">'
                 f"<figcaption>{html.escape(caption)}</figcaption></figure>")


def _fmt(value: Any, digits: int = 4) -> str:
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    if isinstance(value, int):
        return f"{value:,}"
    return html.escape(str(value))


def _label(item: Any) -> str:
    return "*".join(item) if isinstance(item, list) else str(item)


def build_report(result: dict[str, Any], out: str | Path) -> list[str]:
    """Write the report to ``out``; returns the names of the plots it holds."""
    # read the result as result.json holds it (tuples as lists, numpy scalars as numbers), so
    # a report built in the command is the one ``autodrs report`` rebuilds from the file
    result = json.loads(json.dumps(result, default=_jsonable))
    page = _Page()
    data = result.get("data", {})
    title = f"autodrs {result.get('command', 'run')} on {data.get('name', 'data')}"
    page.add(f"<header><h1>{html.escape(title)}</h1><p>seed {result.get('seed')} · "
             f"{data.get('rows', '?')} rows · split {data.get('split', '?')}</p></header><main>")
    _summary(page, result)
    skipped = result.get("skipped_stages") or []
    if skipped:
        page.add("<section class='skipped'><h2>Stages skipped</h2><ul>" + "".join(
            f"<li><b>{html.escape(str(s.get('method', '?')))}</b>: "
            f"{html.escape(str(s.get('reason', '')))}</li>" for s in skipped) + "</ul></section>")
    for i, stage in enumerate(result.get("stages", [])):
        mark = len(page.parts), len(page.plot_names)
        try:
            _stage(page, i, stage, data.get("truth"))
        except Exception as e:  # one odd stage entry must not cost the rest of the report
            del page.parts[mark[0]:], page.plot_names[mark[1]:]
            page.add(f"<section class='unrendered'><h2>Stage {i + 1}: "
                     f"{html.escape(str(stage.get('method', '?')))}</h2><p>This stage's "
                     f"section could not be drawn ({html.escape(type(e).__name__)}: "
                     f"{html.escape(str(e))}); its entry is in result.json.</p></section>")
    if result.get("spec"):
        page.add("<section><h2>The chosen spec</h2><details><summary>ArchSpec JSON</summary>"
                 f"<pre>{html.escape(json.dumps(result['spec'], indent=2))}</pre>"
                 "</details></section>")
    page.add("</main>")
    doc = ("<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
           f"<title>{html.escape(title)}</title><style>{STYLE}</style></head><body>"
           + "".join(page.parts) + f"<script>{SCRIPT}</script></body></html>")
    Path(out).write_text(doc)
    return page.plot_names


def _jsonable(value: Any) -> Any:
    if hasattr(value, "tolist"):  # numpy arrays and scalars
        return value.tolist()
    return str(value)


def _summary(page: _Page, result: dict[str, Any]) -> None:
    page.add("<section><h2>Searched model against the baselines</h2>")
    rows: list[tuple[str, float, float, bool]] = []
    table = ["<table><tr><th>model</th><th>test AUC</th><th>± std</th><th>test logloss</th>"
             "<th>parameters</th><th>embedding</th></tr>"]
    test = result.get("metrics", {}).get("test")
    if test:
        params = result.get("params", {})
        spread = result.get("spread", {})
        name = "searched" if result.get("command") == "search" else result.get("model", "model")
        rows.append((name, test["auc"], spread.get("auc_std", 0.0), True))
        table.append(f"<tr class='searched'><td>{html.escape(str(name))}</td>"
                     f"<td>{_fmt(test['auc'])}</td><td>{_fmt(spread.get('auc_std', 0.0))}</td>"
                     f"<td>{_fmt(test['logloss'])}</td><td>{_fmt(params.get('total', ''))}</td>"
                     f"<td>{_fmt(params.get('embedding', ''))}</td></tr>")
    for name, base in result.get("baselines", {}).items():
        t = base.get("test", {})
        std = base.get("spread", {}).get("auc_std", 0.0)
        rows.append((name, t.get("auc", float("nan")), std, False))
        p = base.get("params", {})
        table.append(f"<tr><td>{html.escape(name)}</td><td>{_fmt(t.get('auc'))}</td>"
                     f"<td>{_fmt(std)}</td><td>{_fmt(t.get('logloss'))}</td>"
                     f"<td>{_fmt(p.get('total', ''))}</td><td>{_fmt(p.get('embedding', ''))}"
                     "</td></tr>")
    page.add("".join(table) + "</table>")
    cost = result.get("cost", {})
    if cost:
        page.add("<p class='kv'>" + " · ".join(
            f"{html.escape(k.replace('_', ' '))}: {_fmt(v, 1)}" for k, v in cost.items())
            + "</p>")
    if rows:
        page.figure("comparison", plots.model_comparison(rows),
                    "Test AUC of the searched model (red) and each baseline (blue)")
    page.add("</section>")


def _stage(page: _Page, index: int, stage: dict[str, Any], truth: dict[str, Any] | None) -> None:
    method = stage.get("method", "?")
    page.add(f"<section><h2>Stage {index + 1}: {html.escape(method)}</h2><p class='kv'>"
             f"strategy {html.escape(str(stage.get('strategy', '?')))} · "
             f"{_fmt(float(stage.get('seconds', 0.0)), 1)} s</p>")
    if stage.get("failed"):
        page.add(f"<p class='failed'>This stage <b>failed</b> and the run went on from its "
                 f"input: {html.escape(str(stage.get('error', 'no reason recorded')))}</p>")
    guard = stage.get("guard")
    if isinstance(guard, dict):
        verdict = "kept" if guard.get("kept") else "rejected"
        aucs = (f" (validation AUC {_fmt(guard['stage_valid_auc'])} against "
                f"{_fmt(guard['input_valid_auc'])} for the stage's input)"
                if "stage_valid_auc" in guard else "")
        page.add(f"<p class='guard {verdict}'>Validation guard: the stage's spec was "
                 f"<b>{verdict}</b>{aucs}: {html.escape(str(guard.get('reason', '')))}.</p>")
    heads = stage.get("heads")
    if isinstance(heads, dict) and heads.get("retrained"):
        _candidates(page, heads["retrained"], stage.get("kept") or [])
    ranking = stage.get("ranking") or []
    scores = stage.get("scores") or {}
    pair_keys = [k for k in scores if "*" in k]
    if pair_keys and len(pair_keys) == len(scores):
        _pair_heatmap(page, method, scores)
    elif ranking and scores:
        names = [_label(r) for r in ranking]
        vals = [float(scores.get(n, np.nan)) for n in names]
        relevant = set(truth["relevant"]) if truth else None
        page.figure(f"{method}-ranking", plots.scores_bar(
            names, vals, f"{method}: ranking, best first", highlight=relevant),
            "Scores of the ranked items" + (" (planted relevant fields in red)"
                                            if relevant else ""))
    curve_rows = stage.get("curve") or []
    if curve_rows and all(isinstance(c, list) and len(c) == 2 for c in curve_rows):
        # (training step, sparsity) pairs: how a pruning search (PEP) thinned its tables
        page.figure(f"{method}-sparsity", plots.curve(
            [c[0] for c in curve_rows], {"sparsity": [c[1] for c in curve_rows]},
            f"{method}: embedding sparsity during the search", "training step",
            "fraction of weights pruned"), "Share of embedding weights pruned as the "
                                           "search trained")
        curve_rows = []
    erase = stage.get("erase")
    if not curve_rows and isinstance(erase, dict) and erase.get("k"):
        curve_rows = [{"k": k, "valid_auc": v, "test_auc": t} for k, v, t in
                      zip(erase["k"], erase["valid_auc"], erase["test_auc"], strict=True)]
    if curve_rows:
        ks = [c["k"] for c in curve_rows]
        series = {key.replace("_", " "): [c[key] for c in curve_rows]
                  for key in ("valid_auc", "test_auc") if key in curve_rows[0]}
        page.figure(f"{method}-auc-vs-k", plots.curve(
            ks, series, f"{method}: AUC against the number of kept fields k", "k", "AUC"),
            "Retrained on the top-k fields of the ranking")
    thresholds = stage.get("threshold_curve")
    if thresholds:
        page.figure(f"{method}-auc-vs-threshold", plots.curve(
            [c["threshold"] for c in thresholds],
            {"valid auc": [c["valid_auc"] for c in thresholds],
             "test auc": [c["test_auc"] for c in thresholds]},
            f"{method}: AUC against the rare-value threshold", "threshold (train count)",
            "AUC"), "Retrained with values seen fewer times than the threshold sharing one "
                    "row")
    dims = stage.get("dims")
    if dims:
        names = sorted(dims, key=lambda n: -float(dims[n]))
        page.figure(f"{method}-dims", plots.scores_bar(
            names, [float(dims[n]) for n in names], f"{method}: embedding size per field",
            xlabel="dim (or kept fraction)"), "Chosen embedding dim per field")
    front = stage.get("pareto")
    if front:
        _pareto(page, method, front)
    trials = stage.get("trials")
    if trials:
        values = [_trial_value(t) for t in trials]
        if any(v == v for v in values):
            page.figure(f"{method}-progress", plots.progress(values, f"{method}: search progress"),
                        "Validation AUC of each trial and the best so far")
    if stage.get("dag"):
        nodes = stage["dag"].get("nodes", []) if isinstance(stage["dag"], dict) else stage["dag"]
        if nodes:
            page.figure(f"{method}-dag", plots.dag(nodes, f"{method}: chosen block DAG"),
                        "Blocks and their inputs, left to right")
    page.add("</section>")


def _candidates(page: _Page, tried: list[dict[str, Any]], kept: list[str]) -> None:
    """The specs an interaction stage retrained to choose between (AutoFIS ``backbone=auto``:
    per head, the strong pairs plain and every kept pair gated), the chosen one marked."""
    best = max(range(len(tried)), key=lambda i: float(tried[i].get("valid_auc", -1.0)))
    rows = []
    for i, t in enumerate(tried):
        encoders = ", ".join(f"{k} {v}" for k, v in sorted((t.get("numerical") or {}).items()))
        rows.append(f"<tr{' class=searched' if i == best else ''}>"
                    f"<td>{html.escape(str(t.get('backbone', '?')))}</td>"
                    f"<td>{t.get('pairs', '')}</td>"
                    f"<td>{'gates as attention' if t.get('gates') else 'plain'}</td>"
                    f"<td>{html.escape(encoders) or '-'}</td>"
                    f"<td>{_fmt(t.get('valid_auc'))}</td>"
                    f"<td>{_fmt(t.get('seconds'), 1)}</td></tr>")
    page.add("<h3>Candidates retrained</h3><table class='candidates'><tr><th>head</th>"
             "<th>pairs</th><th>pair weights</th><th>numerical encoders</th>"
             "<th>valid AUC</th><th>seconds</th></tr>" + "".join(rows) + "</table>")
    if kept:
        page.add("<p class='kv'>kept pairs: " + html.escape(", ".join(map(str, kept))) + "</p>")


def _trial_value(trial: dict[str, Any]) -> float:
    values = trial.get("values") or ([trial["value"]] if "value" in trial else None)
    if not values or values[0] is None:
        return float("nan")
    return float(values[0])


def _pair_heatmap(page: _Page, method: str, scores: dict[str, float]) -> None:
    fields: list[str] = []
    for key in scores:
        for name in key.split("*"):
            if name not in fields:
                fields.append(name)
    index = {n: i for i, n in enumerate(fields)}
    matrix = np.full((len(fields), len(fields)), np.nan)
    for key, value in scores.items():
        parts = key.split("*")
        if len(parts) == 2:
            i, j = index[parts[0]], index[parts[1]]
            matrix[i, j] = matrix[j, i] = abs(float(value))
    page.figure(f"{method}-pairs", plots.heatmap(fields, matrix, f"{method}: pair scores"),
                "Score of each field pair (absolute value)")


def _pareto(page: _Page, method: str, front: list[dict[str, Any]]) -> None:
    auc_key = next((k for k in ("valid_auc", "auc", "value") if k in front[0]), None)
    for cost_key, label in (("bytes", "embedding bytes"), ("params", "embedding parameters"),
                            ("latency_ms", "latency (ms)")):
        if auc_key and cost_key in front[0]:
            points = [(float(p[cost_key]), float(p[auc_key]), bool(p.get("front", True)))
                      for p in front]
            page.figure(f"{method}-pareto-{cost_key}", plots.pareto(
                points, f"{method}: AUC against {label}", label),
                f"Pareto front of validation AUC against {label}")
