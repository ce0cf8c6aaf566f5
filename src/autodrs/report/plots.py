"""Plots for the report, each returned as PNG bytes (matplotlib, no display needed)."""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

COLORS = {"searched": "#d62728", "baseline": "#1f77b4", "accent": "#2ca02c"}


def _png(fig: Any) -> bytes:
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return buf.getvalue()


def clustered(values: Sequence[float]) -> bool:
    """Whether positive values sit far from 0 (AUCs near 0.8): their axis is then drawn
    around them, with points rather than bars (a bar's length would start nowhere)."""
    finite = [v for v in values if np.isfinite(v)]
    return bool(finite) and min(finite) > 0 and max(finite) - min(finite) < 0.5 * max(finite)


def value_limits(values: Sequence[float], spread: Sequence[float] | None = None
                 ) -> tuple[float, float]:
    """Axis limits around ``values`` (with their spread), padded by 15% of their range."""
    spread = spread or [0.0] * len(values)
    pairs = [(v, s) for v, s in zip(values, spread, strict=True) if np.isfinite(v)]
    lo = min(v - s for v, s in pairs)
    hi = max(v + s for v, s in pairs)
    pad = max(0.002, (hi - lo) * 0.15)
    return lo - pad, hi + pad


def model_comparison(rows: Sequence[tuple[str, float, float | None, bool]]) -> bytes:
    """Test AUC (name, auc, std or None, is_searched) as points, best at the top, on an
    axis around the values; error bars only where a spread over seeds exists."""
    rows = sorted(rows, key=lambda r: r[1])
    fig, ax = plt.subplots(figsize=(7, 0.4 * len(rows) + 1.4))
    y = np.arange(len(rows))
    spread = [r[2] or 0.0 for r in rows]
    for i, r in enumerate(rows):
        color = COLORS["searched"] if r[3] else COLORS["baseline"]
        ax.errorbar([r[1]], [i], xerr=[r[2]] if r[2] else None, fmt="o", color=color,
                    capsize=3, markersize=7)
    ax.set_yticks(y, [r[0] for r in rows])
    ax.set_xlim(*value_limits([r[1] for r in rows], spread))
    ax.grid(axis="x", alpha=0.3)
    seeds = any(r[2] for r in rows)
    ax.set_xlabel("test AUC" + (" (mean ± std over seeds)" if seeds else ""))
    ax.set_title("searched model against hand-crafted baselines")
    return _png(fig)


def auc_against_size(points: Sequence[tuple[str, float, float, bool]], xlabel: str) -> bytes:
    """(name, size, auc, is_searched) points, each labelled; a log size axis where sizes
    span more than 20x."""
    fig, ax = plt.subplots(figsize=(7, 4))
    for name, size, auc, searched in points:
        ax.scatter([size], [auc], s=80 if searched else 40,
                   marker="*" if searched else "o",
                   color=COLORS["searched"] if searched else COLORS["baseline"], zorder=3)
        ax.annotate(name, (size, auc), textcoords="offset points", xytext=(6, 4), fontsize=9)
    sizes = [p[1] for p in points]
    if min(sizes) > 0 and max(sizes) / min(sizes) > 20:
        ax.set_xscale("log")
    ax.set_ylim(*value_limits([p[2] for p in points]))
    ax.set_xlabel(xlabel)
    ax.set_ylabel("test AUC")
    ax.set_title(f"test AUC against {xlabel}")
    ax.grid(alpha=0.3)
    return _png(fig)


def training_curves(histories: dict[str, Sequence[dict[str, Any]]], highlight: str) -> bytes:
    """Validation AUC and logloss per epoch of each named fit (``highlight`` in red)."""
    fig, (auc_ax, loss_ax) = plt.subplots(1, 2, figsize=(9, 3.6))
    for name, history in histories.items():
        epochs = [h.get("epoch", i + 1) for i, h in enumerate(history)]
        style = ({"color": COLORS["searched"], "linewidth": 2.2, "zorder": 3}
                 if name == highlight else {"alpha": 0.7})
        for ax, key in ((auc_ax, "auc"), (loss_ax, "logloss")):
            ax.plot(epochs, [h.get(key, np.nan) for h in history], marker="o", markersize=3,
                    label=name, **style)
    for ax, label in ((auc_ax, "validation AUC"), (loss_ax, "validation logloss")):
        ax.set_xlabel("epoch")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        ax.xaxis.get_major_locator().set_params(integer=True)
    auc_ax.legend(fontsize=8)
    fig.suptitle("training curves")
    return _png(fig)


def scores_bar(names: Sequence[str], scores: Sequence[float], title: str,
               xlabel: str = "score", highlight: set[str] | None = None) -> bytes:
    """A ranking of fields or crosses, best first (top): bars from 0, or points on an axis
    around the values where they sit far from 0."""
    names, scores = list(names)[:30], list(scores)[:30]
    fig, ax = plt.subplots(figsize=(7, 0.32 * len(names) + 1.4))
    y = np.arange(len(names))[::-1]
    colors = [COLORS["searched"] if highlight and n in highlight else COLORS["baseline"]
              for n in names]
    if clustered(scores):
        ax.scatter(scores, y, color=colors, zorder=3)
        ax.set_xlim(*value_limits(scores))
        ax.grid(axis="x", alpha=0.3)
    else:
        ax.barh(y, scores, color=colors)
    ax.set_yticks(y, names)
    ax.set_xlabel(xlabel)
    ax.set_title(title)
    return _png(fig)


def curve(xs: Sequence[float], series: dict[str, Sequence[float]], title: str, xlabel: str,
          ylabel: str) -> bytes:
    fig, ax = plt.subplots(figsize=(7, 3.6))
    for label, ys in series.items():
        ax.plot(xs[:len(ys)], ys, marker="o", label=label)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    return _png(fig)


def heatmap(fields: Sequence[str], matrix: np.ndarray, title: str) -> bytes:
    fig, ax = plt.subplots(figsize=(0.42 * len(fields) + 2.5, 0.42 * len(fields) + 1.8))
    image = ax.imshow(matrix, cmap="viridis")
    ax.set_xticks(range(len(fields)), fields, rotation=60, ha="right")
    ax.set_yticks(range(len(fields)), fields)
    fig.colorbar(image, ax=ax, fraction=0.046)
    ax.set_title(title)
    return _png(fig)


def progress(values: Sequence[float], title: str, ylabel: str = "validation AUC",
             numbers: Sequence[int] | None = None) -> bytes:
    """Each trial's value (at its trial number) and the best so far."""
    vals = np.asarray(values, dtype=float)
    best = np.maximum.accumulate(np.where(np.isnan(vals), -np.inf, vals))
    fig, ax = plt.subplots(figsize=(7, 3.4))
    x = np.asarray(numbers if numbers is not None else np.arange(len(vals)))
    ax.scatter(x, vals, s=14, color=COLORS["baseline"], label="trial")
    ax.plot(x, np.where(np.isinf(best), np.nan, best), color=COLORS["searched"],
            drawstyle="steps-post", label="best so far")
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.set_xlabel("trial")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    return _png(fig)


def pareto(points: Sequence[tuple[float, float, bool]], title: str, xlabel: str) -> bytes:
    """(cost, auc, on_front) points; the front is drawn as a step line."""
    fig, ax = plt.subplots(figsize=(7, 3.8))
    xs = [p[0] for p in points]
    ys = [p[1] for p in points]
    ax.scatter(xs, ys, s=16, color="#999999", label="evaluated")
    front = sorted((p for p in points if p[2]), key=lambda p: p[0])
    if front:
        ax.step([p[0] for p in front], [p[1] for p in front], where="post",
                color=COLORS["searched"], marker="o", label="Pareto front")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("validation AUC")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    return _png(fig)


def dag(nodes: Sequence[dict[str, Any]], title: str) -> bytes:
    """A block DAG: ``nodes`` have ``id``, ``label`` and ``inputs`` (ids of earlier nodes or
    the string ``"embeddings"``); drawn left to right by depth."""
    depth: dict[str, int] = {"embeddings": 0}
    for node in nodes:
        depth[node["id"]] = 1 + max((depth.get(i, 0) for i in node.get("inputs", [])), default=0)
    columns: dict[int, list[str]] = {}
    for key, d in depth.items():
        columns.setdefault(d, []).append(key)
    pos = {key: (d, i - (len(col) - 1) / 2) for d, col in columns.items()
           for i, key in enumerate(col)}
    labels = {"embeddings": "embeddings"} | {n["id"]: n.get("label", n["id"]) for n in nodes}
    fig, ax = plt.subplots(figsize=(2.2 * (max(columns) + 1) + 1, 1.1 * max(
        len(c) for c in columns.values()) + 1.5))
    for node in nodes:
        for src in node.get("inputs", []):
            (x0, y0), (x1, y1) = pos[src], pos[node["id"]]
            ax.annotate("", xy=(x1 - 0.18, y1), xytext=(x0 + 0.18, y0),
                        arrowprops={"arrowstyle": "->", "color": "#555555"})
    for key, (x, y) in pos.items():
        ax.text(x, y, labels[key], ha="center", va="center", fontsize=9,
                bbox={"boxstyle": "round,pad=0.4", "fc": "#e8f0fb", "ec": COLORS["baseline"]})
    ax.set_xlim(-0.6, max(columns) + 0.6)
    ys = [p[1] for p in pos.values()]
    ax.set_ylim(min(ys) - 0.8, max(ys) + 0.8)
    ax.axis("off")
    ax.set_title(title)
    return _png(fig)
