"""Metrics: one code path for every model and method."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import log_loss, roc_auc_score


def auc(labels: np.ndarray, scores: np.ndarray) -> float:
    if len(np.unique(labels)) < 2:
        raise ValueError("AUC needs both classes among the labels")
    return float(roc_auc_score(labels, scores))


def logloss(labels: np.ndarray, probs: np.ndarray) -> float:
    return float(log_loss(labels, np.clip(probs, 1e-7, 1 - 1e-7), labels=[0, 1]))


def group_auc(labels: np.ndarray, scores: np.ndarray, groups: np.ndarray) -> float:
    """Impression-weighted mean of per-group AUC over groups that have both classes."""
    order = np.argsort(groups, kind="stable")
    g, y, s = groups[order], labels[order], scores[order]
    bounds = np.flatnonzero(np.diff(g)) + 1
    total, weight = 0.0, 0
    for ys, ss in zip(np.split(y, bounds), np.split(s, bounds), strict=True):
        if 0 < ys.sum() < len(ys):
            total += roc_auc_score(ys, ss) * len(ys)
            weight += len(ys)
    return float(total / weight) if weight else float("nan")


def classification_metrics(labels: np.ndarray, probs: np.ndarray,
                           groups: np.ndarray | None = None) -> dict[str, float]:
    out = {"auc": auc(labels, probs), "logloss": logloss(labels, probs)}
    if groups is not None:
        out["gauc"] = group_auc(labels, probs, groups)
    return out
