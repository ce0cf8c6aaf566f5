"""The ERASE evaluation protocol (Jia et al., KDD 2024) for any field ranking.

For each k of a grid, the model of the spec is retrained from scratch on the top-k fields
of the ranking, taken in schema order so that a subset always builds the same model
(``experiment.fit_spec``: same trainer, split and early stopping as every baseline),
giving validation and test AUC against k. The area under the test-AUC curve is
the trapezoid integral over the fraction of fields kept, divided by the width of the grid:
the mean test AUC over the grid, so curves of different grids stay comparable. The pipeline
picks k as the smallest k whose validation AUC is within ``tolerance`` of the best one.

Under a wall-time budget the whole curve is rarely affordable (each point is a full
retrain), so ``erase_bisect`` measures only where that decision is made: all fields, then a
bisection for the smallest k within ``tolerance`` of the best validation AUC seen
(log2 n retrains instead of n), never starting a retrain the time left cannot pay for.
The bisection assumes AUC rises with k, which noise fields break (the curve peaks at the
relevant fields and falls after them), so it first measures the ranking's own cuts, the ks
before the two largest drops in the scores (``gap_cuts``): where a ranking separates
relevant from noise fields, that is the peak, and the bisection only looks below it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from autodrs.data.dataset import Dataset
from autodrs.experiment import fit_spec
from autodrs.methods.selection.subset import in_schema_order, with_fields
from autodrs.search.base import validates_alike
from autodrs.spec import ArchSpec
from autodrs.train.trainer import TimeLimit, TrainConfig

MAX_POINTS = 12


@dataclass
class ErasePoint:
    k: int
    fields: list[str]
    valid_auc: float
    test_auc: float
    valid_logloss: float
    test_logloss: float
    seconds: float


@dataclass
class EraseCurve:
    points: list[ErasePoint]
    n_fields: int
    tolerance: float
    logloss_tolerance: float | None = None

    @property
    def area(self) -> float:
        return curve_area([p.k for p in self.points], [p.test_auc for p in self.points],
                          self.n_fields)

    @property
    def chosen(self) -> ErasePoint:
        return pick_k(self.points, self.tolerance, self.logloss_tolerance)

    def to_dict(self) -> dict[str, Any]:
        return {
            "k": [p.k for p in self.points],
            "valid_auc": [round(p.valid_auc, 6) for p in self.points],
            "test_auc": [round(p.test_auc, 6) for p in self.points],
            "area": round(self.area, 6),
            "chosen_k": self.chosen.k,
            "tolerance": self.tolerance,
            "logloss_tolerance": self.logloss_tolerance,
            "points": [asdict(p) for p in self.points],
        }


def default_grid(n_fields: int, max_points: int = MAX_POINTS) -> list[int]:
    """Every k from 1 to ``n_fields`` when that is few enough, else evenly spaced ks that
    always include 1 and ``n_fields``."""
    if n_fields <= max_points:
        return list(range(1, n_fields + 1))
    return sorted({int(round(k)) for k in np.linspace(1, n_fields, max_points)})


def curve_area(ks: list[int], aucs: list[float], n_fields: int) -> float:
    """Mean of the AUC-vs-(k / n_fields) curve over its span (trapezoid rule)."""
    if not ks:
        raise ValueError("an ERASE curve needs at least one point")
    if len(ks) == 1:
        return float(aucs[0])
    x = np.asarray(ks, dtype=float) / n_fields
    y = np.asarray(aucs, dtype=float)
    return float(np.trapezoid(y, x) / (x[-1] - x[0]))


def pick_k(points: list[ErasePoint], tolerance: float,
           logloss_tolerance: float | None = None) -> ErasePoint:
    """The smallest k whose validation AUC is within ``tolerance`` of the best point's (and,
    given ``logloss_tolerance``, whose validation logloss is within that of the best point's:
    ``validates_alike``)."""
    best = max(points, key=lambda p: p.valid_auc)
    return min((p for p in points if validates_alike(
        p.valid_auc, p.valid_logloss, best.valid_auc, best.valid_logloss, tolerance,
        logloss_tolerance)), key=lambda p: p.k)


def gap_cuts(scores: Sequence[float], count: int = 2) -> list[int]:
    """The ranking's own cuts: the number of fields above each of its ``count`` largest
    drops between consecutive scores (best first), largest drop first; empty for fewer
    than two fields or equal scores. Two, because a relevant field the model reads poorly
    often sits in the gap between the relevant fields and the noise ones."""
    values = [float(v) for v in scores]
    drops = [values[i] - values[i + 1] for i in range(len(values) - 1)]
    order = sorted(range(len(drops)), key=lambda i: (-drops[i], i))
    return [i + 1 for i in order[:count] if drops[i] > 0]


def measure_point(ds: Dataset, ranking: list[str], k: int, spec: ArchSpec,
                  config: TrainConfig, cache: dict[frozenset[str], ErasePoint] | None = None,
                  hooks: list[TimeLimit] | None = None) -> ErasePoint:
    """Retrain ``spec`` on the top-``k`` fields of ``ranking`` (or reuse ``cache``'s point
    for that field set) and return its ERASE point."""
    fields = in_schema_order(ds.schema, ranking[:k])
    key = frozenset(fields)
    if cache is not None and key in cache:
        return cache[key]
    outcome = fit_spec(ds, with_fields(spec, fields), config, hooks)
    m = outcome.metrics
    point = ErasePoint(k=k, fields=fields, valid_auc=m["valid"]["auc"],
                       test_auc=m["test"]["auc"], valid_logloss=m["valid"]["logloss"],
                       test_logloss=m["test"]["logloss"], seconds=round(outcome.seconds, 3))
    if cache is not None:
        cache[key] = point
    return point


def erase_curve(ds: Dataset, ranking: list[str], spec: ArchSpec, config: TrainConfig,
                ks: list[int] | None = None, tolerance: float = 0.002,
                stop: Callable[[], bool] | None = None,
                cache: dict[frozenset[str], ErasePoint] | None = None,
                logloss_tolerance: float | None = None) -> EraseCurve:
    """Retrain ``spec`` on the top-k fields of ``ranking`` for each k of ``ks`` (ascending).

    ``stop`` is asked before each retrain after the first (a search budget): the curve then
    holds the points measured so far, largest k first. ``cache`` reuses the point of a field set measured
    before with the same data, spec and config (rankings of different methods share their
    all-fields point, and often more).
    """
    if not ranking:
        raise ValueError("an ERASE curve needs a non-empty ranking")
    grid = sorted(set(ks or default_grid(len(ranking))))
    bad = [k for k in grid if not 1 <= k <= len(ranking)]
    if bad:
        raise ValueError(f"k values {bad} are outside 1..{len(ranking)} (the ranked fields)")
    points: list[ErasePoint] = []
    # largest k first: a budget that runs out keeps the all-fields reference and the
    # subsets nearest to it, never only the smallest subsets
    for k in reversed(grid):
        if points and stop is not None and stop():
            break
        points.append(measure_point(ds, ranking, k, spec, config, cache))
    points.sort(key=lambda p: p.k)
    return EraseCurve(points=points, n_fields=len(ranking), tolerance=tolerance,
                      logloss_tolerance=logloss_tolerance)


def erase_bisect(ds: Dataset, ranking: list[str], spec: ArchSpec, config: TrainConfig,
                 tolerance: float = 0.002,
                 remaining: Callable[[], float | None] | None = None,
                 cache: dict[frozenset[str], ErasePoint] | None = None,
                 anchors: Sequence[int] = (),
                 logloss_tolerance: float | None = None) -> EraseCurve:
    """The ERASE choice of k by bisection: retrain on all ranked fields and on each k of
    ``anchors`` (the ranking's own cuts, :func:`gap_cuts`), then halve the
    interval [lo, hi] of ks, where ``hi`` is the smallest k measured that validates alike the
    best so far (``pick_k``'s rule: within ``tolerance`` of its validation AUC and, given
    ``logloss_tolerance``, of its logloss), and ``lo`` is one above the largest k measured
    below it.

    The curve holds the measured points; its ``chosen`` point is the ERASE rule over them.
    When ``remaining`` (seconds left, None for no limit) is shorter than the longest retrain
    so far, the search stops and keeps what it measured; a retrain still under way when the
    time runs out ends early (``TimeLimit``), so a stage ends within its budget.
    """
    if not ranking:
        raise ValueError("an ERASE curve needs a non-empty ranking")
    measured: dict[int, ErasePoint] = {}
    hooks = [TimeLimit(remaining)] if remaining is not None else None

    def measure(k: int) -> ErasePoint:
        return measure_point(ds, ranking, k, spec, config, cache, hooks)

    n = len(ranking)
    bad = [k for k in anchors if not 1 <= k <= n]
    if bad:
        raise ValueError(f"anchor ks {bad} are outside 1..{n} (the ranked fields)")

    def affordable() -> bool:
        left = remaining() if remaining is not None else None
        return left is None or left >= max(p.seconds for p in measured.values())

    measured[n] = measure(n)
    for k in anchors:
        if k not in measured and affordable():
            measured[k] = measure(k)
    while True:
        hi = pick_k(list(measured.values()), tolerance, logloss_tolerance).k
        below = [k for k in measured if k < hi]
        lo = max(below) + 1 if below else 1
        if lo >= hi or not affordable():
            break
        mid = (lo + hi) // 2
        measured[mid] = measure(mid)
    points = sorted(measured.values(), key=lambda p: p.k)
    return EraseCurve(points=points, n_fields=n, tolerance=tolerance,
                      logloss_tolerance=logloss_tolerance)
