"""``report.html``: a self-contained page (plots embedded as PNG) explaining what a run
chose and why, built from the run's ``result.json``.

In order: the final architecture in words and tables, the leaderboard (validation and test
metrics, size, latency where measured) with AUC against size, the training curves, the
search diagnostics (validation data only: test scores are for the leaderboard, so nothing
in the search invites choosing by them), then the configuration and versions. A chart with
nothing to show is left out, and a spread column appears only over several seeds.

Each plot is a ``<figure class="plot">``; a small inline script marks on ``<body>`` how many
plot images the browser actually decoded (``data-plots-drawn`` of ``data-plots-total``),
which the test reads from headless Chromium.
"""

from __future__ import annotations

import base64
import html
import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from autodrs.report import plots
from autodrs.report.architecture import describe

STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0;background:#f6f7f9;
color:#1d2330}
header{background:#1d2330;color:#fff;padding:18px 32px}
header h1{margin:0;font-size:22px} header p{margin:4px 0 0;color:#c9d1e0}
main{max-width:1100px;margin:0 auto;padding:16px 32px}
section{background:#fff;border-radius:8px;padding:16px 20px;margin:16px 0;
box-shadow:0 1px 3px rgba(0,0,0,.08)}
section.diagnostics{background:transparent;box-shadow:none;padding:0}
h2{font-size:18px;margin:0 0 8px} h3{font-size:15px;margin:12px 0 6px}
table{border-collapse:collapse;font-size:14px;margin:6px 0} td,th{padding:4px 10px;
border-bottom:1px solid #e3e6eb;text-align:right} td:first-child,th:first-child{text-align:left}
table.text td,table.text th{text-align:left}
tr.searched td{font-weight:600;color:#b3261e} tr.dropped td{color:#9aa1ad}
.tables{display:flex;flex-wrap:wrap;gap:8px 32px;align-items:flex-start}
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

    def table(self, head: list[str], rows: list[list[str]], cls: str = "",
              row_classes: list[str] | None = None) -> None:
        """A table of already-escaped cells."""
        row_classes = row_classes or [""] * len(rows)
        self.add(f"<table{f' class={chr(39)}{cls}{chr(39)}' if cls else ''}><tr>"
                 + "".join(f"<th>{h}</th>" for h in head) + "</tr>"
                 + "".join(f"<tr{f' class={c}' if c else ''}>"
                           + "".join(f"<td>{cell}</td>" for cell in row) + "</tr>"
                           for row, c in zip(rows, row_classes, strict=True)) + "</table>")


def _fmt(value: Any, digits: int = 4) -> str:
    if value is None or value == "":
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
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
    if result.get("spec"):
        _architecture(page, result)
    _leaderboard(page, result)
    _curves(page, result)
    skipped = result.get("skipped_stages") or []
    if skipped:
        page.add("<section class='skipped'><h2>Stages skipped</h2><ul>" + "".join(
            f"<li><b>{html.escape(str(s.get('method', '?')))}</b>: "
            f"{html.escape(str(s.get('reason', '')))}</li>" for s in skipped) + "</ul></section>")
    stages = result.get("stages", [])
    if stages:
        page.add("<section class='diagnostics'><h2>Search diagnostics</h2><p class='kv'>What "
                 "each stage tried and found, on validation data only: the test split is "
                 "kept for the leaderboard above.</p>")
    for i, stage in enumerate(stages):
        mark = len(page.parts), len(page.plot_names)
        try:
            _stage(page, i, stage, data.get("truth"))
        except Exception as e:  # one odd stage entry must not cost the rest of the report
            del page.parts[mark[0]:], page.plot_names[mark[1]:]
            page.add(f"<section class='unrendered'><h2>Stage {i + 1}: "
                     f"{html.escape(str(stage.get('method', '?')))}</h2><p>This stage's "
                     f"section could not be drawn ({html.escape(type(e).__name__)}: "
                     f"{html.escape(str(e))}); its entry is in result.json.</p></section>")
    if stages:
        page.add("</section>")
    _configuration(page, result)
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


def _architecture(page: _Page, result: dict[str, Any]) -> None:
    arch = describe(result["spec"], result.get("data", {}).get("fields") or {},
                    result.get("config"))
    name = "searched" if result.get("command") == "search" else result.get("model", "model")
    page.add(f"<section class='architecture'><h2>The final model ({html.escape(str(name))})"
             "</h2><p class='words'>" + " ".join(html.escape(s) for s in arch.sentences)
             + "</p>")
    page.add("<h3>Fields</h3>")
    page.table(["field", "kind", "", "dim", "vocabulary", "notes"],
               [[html.escape(c) for c in row] for row in arch.fields], cls="text fields",
               row_classes=["dropped" if row[2] == "dropped" else "" for row in arch.fields])
    page.add("<div class='tables'>")
    if arch.towers:
        page.add("<div><h3>Towers</h3>")
        page.table(["tower", "setting"], [[html.escape(c) for c in r] for r in arch.towers],
                   cls="text towers")
        page.add("</div>")
    page.add("<div><h3>Training</h3>")
    page.table(["setting", "value"], [[html.escape(c) for c in r] for r in arch.training],
               cls="text training")
    page.add("</div>")
    if arch.pairs:
        page.add("<div><h3>Kept interaction pairs</h3>")
        page.table(["pair", "function", "weight"],
                   [[html.escape(c) for c in r] for r in arch.pairs], cls="text pairs")
        if arch.more_pairs:
            page.add(f"<p class='kv'>and {arch.more_pairs} more (spec.json lists them)</p>")
        page.add("</div>")
    page.add("</div></section>")


def _board_rows(result: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per model of the leaderboard: the command's final model, then the
    baselines, each tuned baseline (``tuned_baselines``) in a row of its own."""
    rows = []
    tuned = result.get("tuned_baselines") or {}
    if result.get("metrics", {}).get("test"):
        name = "searched" if result.get("command") == "search" else result.get("model", "model")
        rows.append(_board_row(str(name), result, result["metrics"], searched=True))
        lr = (result.get("config") or {}).get("lr")
        rows[-1]["training"] = (("searched" if "optim" in (result.get("methods") or [])
                                 else "not searched") + (f", lr {lr:g}" if lr else ""))
    for name, base in (result.get("baselines") or {}).items():
        rows.append(_board_row(name, base, base, searched=False))
        if "lr" in base:
            rows[-1]["training"] = f"untuned, lr {base['lr']:g}"
        if name in tuned:
            rows.append(_board_row(f"{name} (tuned)", tuned[name], tuned[name],
                                   searched=False))
            t = tuned[name]
            tried = len(t.get("candidates") or {})
            of = tried + int(t.get("untried") or 0)
            rows[-1]["training"] = f"tuned, lr {t['lr']:g}" + (
                f" ({tried} of {of} candidates tried)" if tried < of else "")
    if "baseline_tuning" not in result:  # a run from before tuned baselines: no column
        for row in rows:
            row["training"] = None
    return rows


def _board_row(name: str, entry: dict[str, Any], metrics: dict[str, Any],
               searched: bool) -> dict[str, Any]:
    valid, test = metrics.get("valid") or {}, metrics.get("test") or {}
    params, size = entry.get("params") or {}, entry.get("bytes") or {}
    spread = entry.get("spread") or {}
    return {"name": name, "searched": searched, "training": None,
            "valid_auc": valid.get("auc"), "test_auc": test.get("auc"),
            "valid_logloss": valid.get("logloss"), "test_logloss": test.get("logloss"),
            "params": params.get("total"), "embedding": params.get("embedding"),
            "bytes": size.get("total"), "latency_ms": entry.get("latency_ms"),
            "auc_std": spread.get("auc_std"), "logloss_std": spread.get("logloss_std")}


def _seeds(result: dict[str, Any]) -> int:
    return len(result.get("seeds") or []) or 1


def _leaderboard(page: _Page, result: dict[str, Any]) -> None:
    rows = _board_rows(result)
    if not rows:
        return
    rows.sort(key=lambda r: -_finite(r["test_auc"], -1.0))
    several = _seeds(result) > 1
    columns = [("training", "training", 0),
               ("valid_auc", "valid AUC", 4), ("test_auc", "test AUC", 4),
               ("auc_std", "± std", 4), ("valid_logloss", "valid logloss", 4),
               ("test_logloss", "test logloss", 4), ("logloss_std", "± std", 4),
               ("params", "parameters", 0), ("embedding", "embedding parameters", 0),
               ("bytes", "bytes", 0), ("latency_ms", "latency (ms)", 2)]
    # a column only where some model has a value; a spread only over several seeds
    shown = [c for c in columns if any(r[c[0]] is not None for r in rows)
             and (several or not c[0].endswith("_std"))]
    page.add("<section class='leaderboard'><h2>Leaderboard</h2>")
    if several:
        page.add(f"<p class='kv'>mean and standard deviation over {_seeds(result)} seeds</p>")
    page.table(["model", *(c[1] for c in shown)],
               [[html.escape(r["name"]), *(_fmt(r[c[0]], c[2]) for c in shown)] for r in rows],
               cls="board", row_classes=["searched" if r["searched"] else "" for r in rows])
    _fairness_notes(page, result)
    cost = result.get("cost", {})
    if cost:
        page.add("<p class='kv'>" + " · ".join(
            f"{html.escape(k.replace('_', ' '))}: {_fmt(v, 1)}" for k, v in cost.items()
            if v is not None) + "</p>")
    ranked = [r for r in rows if _finite(r["test_auc"]) is not None]
    if len(ranked) > 1:
        page.figure("comparison", plots.model_comparison(
            [(r["name"], r["test_auc"], r["auc_std"] if several else None, r["searched"])
             for r in ranked]),
            "Test AUC of the final model (red) and each baseline (blue)"
            + (", with the standard deviation over seeds" if several else ""))
    for key, label in (("embedding", "embedding parameters"), ("bytes", "model bytes")):
        sized = [r for r in ranked if _finite(r[key]) is not None]
        if len(sized) > 1 and len({r[key] for r in sized}) > 1:
            page.figure(f"auc-vs-{key}", plots.auc_against_size(
                [(r["name"], float(r[key]), r["test_auc"], r["searched"]) for r in sized],
                label), f"Test AUC against {label}: the final model (red star) and each "
                        "baseline")
            break
    page.add("</section>")


def _fairness_notes(page: _Page, result: dict[str, Any]) -> None:
    """Under the leaderboard: whether the baselines got the searched model's training
    search, and the fits the epoch cap ended while they were still improving."""
    tuning = result.get("baseline_tuning")
    if isinstance(tuning, dict) and result.get("baselines"):
        if tuning.get("tuned"):
            text = ("Baselines tuned like the searched model: each also went through its "
                    "optim stage (the same learning-rate candidates and budget rule); "
                    "untuned rows train at the command's --lr, tuned rows at the rate that "
                    "validated best.")
            left = tuning.get("not_tuned") or {}
            if left:
                text += " Not tuned: " + "; ".join(f"{n} ({r})" for n, r in left.items()) + "."
        else:
            text = f"The baselines were not tuned: {tuning.get('reason', '')}."
        page.add(f"<p class='kv tuning'>{html.escape(text)}</p>")
    capped = result.get("still_improving")
    if isinstance(capped, list) and capped:
        epochs = (result.get("settings") or {}).get("epochs")
        cap = f" of {epochs}" if epochs else ""
        page.add("<p class='kv capped'>Still improving when the epoch cap ended them (they "
                 f"validated best at the last{cap} epochs, so more epochs may do better): "
                 f"{html.escape(', '.join(map(str, capped)))}.</p>")


def _curves(page: _Page, result: dict[str, Any]) -> None:
    name = "searched" if result.get("command") == "search" else str(result.get("model", "model"))
    histories = {}
    if _usable_history(result.get("history")):
        histories[name] = result["history"]
    for base, entry in (result.get("baselines") or {}).items():
        if _usable_history(entry.get("history")):
            histories[base] = entry["history"]
    if not histories:
        return
    page.add("<section class='curves'><h2>Training curves</h2>")
    page.figure("training-curves", plots.training_curves(histories, name),
                "Validation AUC and logloss after each epoch"
                + (" of the final model's training" if list(histories) == [name] else
                   " (the final model in red)"))
    page.add("</section>")


def _usable_history(history: Any) -> bool:
    return isinstance(history, list) and any(
        isinstance(h, dict) and _finite(h.get("auc")) is not None for h in history)


def _finite(value: Any, default: float | None = None) -> float | None:
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    return default


def _configuration(page: _Page, result: dict[str, Any]) -> None:
    page.add("<section class='configuration'><h2>Configuration and versions</h2>")
    settings = {k: v for k, v in (result.get("settings") or {}).items()
                if v is not None and v != {} and v != []}
    if settings:
        page.add("<h3>Command settings</h3><p class='kv'>As given or defaulted (config.yaml in "
                 "the run folder; settings left unset are not listed).</p>")
        page.table(["setting", "value"], [[html.escape(str(k)), _value(v)]
                                          for k, v in settings.items()], cls="text settings")
    config = result.get("config") or {}
    if config:
        page.add("<h3>Training configuration</h3>")
        page.table(["setting", "value"], [[html.escape(str(k)), _value(v)]
                                          for k, v in config.items()], cls="text config")
    versions = result.get("versions")
    machine = result.get("machine") or {}
    page.add("<h3>Versions</h3>")
    if versions:
        page.table(["package", "version"], [[html.escape(str(k)), _value(v)]
                                            for k, v in versions.items()], cls="text versions")
    else:
        page.add("<p class='kv'>This result.json records no library versions (it was written "
                 "before autodrs recorded them).</p>")
    if machine:
        page.add("<p class='kv'>machine: " + " · ".join(
            f"{html.escape(str(k))} {_value(v)}" for k, v in machine.items()) + "</p>")
    if result.get("spec"):
        page.add("<h3>The final spec</h3><details><summary>ArchSpec JSON</summary>"
                 f"<pre>{html.escape(json.dumps(result['spec'], indent=2))}</pre></details>")
    page.add("</section>")


def _value(value: Any) -> str:
    if isinstance(value, dict | list):
        return html.escape(json.dumps(value))
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.6g}"
    return html.escape(str(value))  # settings as written: a seed 2026, not 2,026


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
    elif ranking and all(isinstance(r, dict) for r in ranking):
        _best_trials(page, ranking, scores)
    elif ranking and scores:
        names = [_label(r) for r in ranking]
        vals = [_finite(scores.get(n), math.nan) for n in names]
        dims = stage.get("dims") or {}
        same_as_dims = bool(dims) and all(dims.get(n) == scores.get(n) for n in names)
        # a ranking whose items have no score draws nothing; one that is the dims, once
        if any(v == v for v in vals) and not same_as_dims:
            if "fine_tune" in stage:  # a transfer: units ranked by how often they are tuned
                marked = set((truth.get("transfer") or {}).get("changed") or []) if truth else set()
                caption = ("Share of target rows whose policy fine-tunes each field and layer "
                           "(the rest keep the source's weights), highest first"
                           + (" (fields whose effect changed between domains in red)"
                              if marked else ""))
            else:
                marked = set(truth.get("relevant") or []) if truth else set()
                caption = (f"The score {method} ranks by, best first"
                           + (" (planted relevant fields in red)" if marked else ""))
            page.figure(f"{method}-ranking", plots.scores_bar(
                names, vals, f"{method}: ranking, best first", highlight=marked or None),
                caption)
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
        curve_rows = [{"k": k, "valid_auc": v}
                      for k, v in zip(erase["k"], erase["valid_auc"], strict=True)]
    # validation only: a stage's test scores stay in result.json, out of the search's view
    if curve_rows and "valid_auc" in curve_rows[0]:
        page.figure(f"{method}-auc-vs-k", plots.curve(
            [c["k"] for c in curve_rows], {"valid AUC": [c["valid_auc"] for c in curve_rows]},
            f"{method}: validation AUC against the number of kept fields k", "k",
            "validation AUC"), "Retrained on the top-k fields of the ranking")
    thresholds = stage.get("threshold_curve")
    if thresholds:
        page.figure(f"{method}-auc-vs-threshold", plots.curve(
            [c["threshold"] for c in thresholds],
            {"valid AUC": [c["valid_auc"] for c in thresholds]},
            f"{method}: validation AUC against the rare-value threshold",
            "threshold (train count)", "validation AUC"),
            "Retrained with values seen fewer times than the threshold sharing one row")
    dims = stage.get("dims")
    if dims:
        names = sorted(dims, key=lambda n: -float(dims[n]))
        page.figure(f"{method}-dims", plots.scores_bar(
            names, [float(dims[n]) for n in names], f"{method}: embedding size per field",
            xlabel="dim (or kept fraction)"), "Chosen embedding dim per field")
    front = stage.get("pareto")
    if front:
        _pareto(page, method, front, stage.get("pareto_objectives"))
    trials = stage.get("trials")
    if trials:
        values = [_trial_value(t) for t in trials]
        if any(v == v for v in values):
            numbers = [t.get("number", i) for i, t in enumerate(trials)]
            page.figure(f"{method}-progress", plots.progress(
                values, f"{method}: search progress", numbers=numbers),
                "Validation AUC of each trial and the best so far")
    if stage.get("dag"):
        nodes = stage["dag"].get("nodes", []) if isinstance(stage["dag"], dict) else stage["dag"]
        if nodes:
            page.figure(f"{method}-dag", plots.dag(nodes, f"{method}: chosen block DAG"),
                        "Blocks and their inputs, left to right")
    page.add("</section>")


def _best_trials(page: _Page, decisions: list[dict[str, Any]],
                 scores: dict[str, float]) -> None:
    """A black-box stage's best trials: ``ranking`` holds their decisions, ``scores`` their
    validation values keyed ``trial N``, both best first."""
    rows = [[html.escape(key.removeprefix("trial ")), _fmt(_finite(value)),
             html.escape(", ".join(f"{k}={v}" for k, v in decision.items()))]
            for (key, value), decision in zip(scores.items(), decisions, strict=False)]
    if rows:
        page.add("<h3>Best trials</h3>")
        page.table(["trial", "validation value", "decision"], rows, cls="trials")


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


_COST_LABELS = {"bytes": "bytes", "params": "parameters", "latency_ms": "latency (ms)",
                "embedding_bytes": "embedding bytes", "embedding_params": "embedding parameters"}


def _pareto(page: _Page, method: str, front: list[dict[str, Any]],
            objectives: list[str] | None = None) -> None:
    """One chart per cost of the front: its own objectives when the stage names them
    (``pareto_objectives``: AUC first, then costs), else the costs its points carry."""
    auc_key = next((k for k in ("valid_auc", "auc", "value") if k in front[0]), None)
    costs = [o for o in objectives or [] if o != "auc"] or [
        k for k in ("bytes", "params", "latency_ms") if k in front[0]]
    for cost_key in costs:
        label = _COST_LABELS.get(cost_key, cost_key)
        if auc_key and cost_key in front[0]:
            points = [(float(p[cost_key]), float(p[auc_key]), bool(p.get("front", True)))
                      for p in front]
            page.figure(f"{method}-pareto-{cost_key}", plots.pareto(
                points, f"{method}: AUC against {label}", label),
                f"Pareto front of validation AUC against {label}")
