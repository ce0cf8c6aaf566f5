"""Frequency pruning: rare values share one row, the threshold chosen on validation data.

Per-value embedding pruning by train frequency, the baseline of the embedding-compression
literature (the rare-id threshold of OptEmbed / OptInter's pre-processing; DNIS groups values
by the same counts): a value seen fewer than ``t`` times in the train split loses its own row
and is read as the out-of-vocabulary id, whose row all rare values then share. The
vocabulary is ordered by train count, so the kept values of a field are a prefix of it and
the spec stores one number per field (``ArchSpec.vocab_limits``); the table holds the kept
rows only, so parameters, state-dict bytes and ``model.pt`` really shrink.

Search: the model of the spec is retrained from scratch (``experiment.fit_spec``, the run's
trainer) at each threshold of a small grid, ascending (``thresholds``, default 1, 2, 3, 5,
10, 20; 1 is the input spec), and the largest threshold whose validation AUC is within
``tolerance`` (default 0) of the best is kept (and, with the option ``logloss_tolerance``,
whose validation logloss is within that of the best's: ``search.base.validates_alike``).
Rare ids are noise to a full table (a few gradient steps each), so on small data a threshold
often validates *better* than none as well as storing fewer rows. Under a budget no retrain
is started that the time left cannot pay for (judged by the longest retrain so far), and one
the budget cuts short is left out.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from autodrs.data.schema import FIRST_ID
from autodrs.experiment import fit_spec
from autodrs.methods.embedding.common import dims_result, option, searched_fields
from autodrs.search.base import (
    Method,
    SearchContext,
    SearchError,
    StageResult,
    register_method,
    validates_alike,
)
from autodrs.train.trainer import TimeLimit

THRESHOLDS = (1, 2, 3, 5, 10, 20)
FAST_THRESHOLDS = (1, 5)


def value_counts(ctx: SearchContext) -> dict[str, np.ndarray]:
    """Train count of each vocabulary value (reserved ids left out), per categorical field
    of the spec that has a vocabulary and no pruning mask."""
    schema = ctx.dataset.schema
    cols = {n: i for i, n in enumerate(schema.categorical)}
    counts: dict[str, np.ndarray] = {}
    for name in searched_fields(ctx):
        f = schema.field(name)
        if f.hash_buckets or not f.vocab or name in ctx.spec.pruning:
            continue
        ids = ctx.dataset.train.cat[:, cols[name]].numpy()
        counts[name] = np.bincount(ids, minlength=f.vocab_size)[FIRST_ID:f.vocab_size]
    return counts


def limits_at(counts: dict[str, np.ndarray], threshold: int) -> dict[str, int]:
    """Values kept per field at ``threshold`` (those seen at least that often), for the
    fields where it removes any."""
    kept = {name: int((c >= threshold).sum()) for name, c in counts.items()}
    return {name: k for name, k in kept.items() if k < len(counts[name])}


def parse_thresholds(value: Any) -> list[int]:
    items = value.split(",") if isinstance(value, str) else list(value)
    try:
        out = sorted({int(v) for v in items})
    except (TypeError, ValueError) as e:
        raise SearchError(f"option thresholds must be whole numbers, got {value!r}") from e
    if not out or out[0] < 1:
        raise SearchError(f"option thresholds must be counts >= 1, got {value!r}")
    return out


@register_method
class FrequencyPruning(Method):
    """Per-value pruning by train frequency, the threshold picked on validation AUC."""

    name = "frequency"
    retrains_its_choice = True
    component = "embedding"
    strategies = ("grid",)

    def search(self, ctx: SearchContext) -> StageResult:
        strategy = self.resolve_strategy(ctx)
        t0 = time.perf_counter()
        thresholds = parse_thresholds(ctx.options.get(
            "thresholds", FAST_THRESHOLDS if ctx.fast else THRESHOLDS))
        tolerance = option(ctx, "tolerance", 0.0)
        if tolerance < 0:
            raise SearchError(f"option tolerance must be >= 0, got {tolerance}")
        logloss_tolerance = option(ctx, "logloss_tolerance", None)  # None: AUC alone
        if logloss_tolerance is not None and logloss_tolerance < 0:
            raise SearchError(f"option logloss_tolerance must be >= 0, got {logloss_tolerance}")
        counts = value_counts(ctx)
        if not counts:
            raise SearchError("frequency pruning needs a categorical field with a vocabulary "
                              "(hashed or mask-pruned fields are left out); the spec has none")
        points: list[dict[str, Any]] = []
        longest, skipped = 0.0, None
        for threshold in thresholds:
            limits = limits_at(counts, threshold)
            if points and limits == points[-1]["limits"]:
                continue  # no value is as rare as this and not rarer than the last
            left = ctx.remaining()
            if left is not None and (left <= 0 or left < longest):
                skipped = (f"thresholds from {threshold} on not tried: {max(0.0, left):.0f}s "
                           f"left, a retrain takes about {longest:.0f}s")
                break
            spec = ctx.spec.copy(vocab_limits={**ctx.spec.vocab_limits, **limits})
            outcome = fit_spec(ctx.dataset, spec, ctx.train, hooks=[TimeLimit(ctx.remaining)])
            longest = max(longest, outcome.seconds)
            if outcome.fit.stopped_by_hook:
                skipped = f"the retrain at threshold {threshold} ran past the budget"
                break
            m = outcome.metrics
            points.append({"threshold": threshold, "limits": limits,
                           "valid_auc": round(m["valid"]["auc"], 6),
                           "valid_logloss": round(m["valid"]["logloss"], 6),
                           "test_auc": round(m["test"]["auc"], 6),
                           "embedding_params": outcome.params["embedding"],
                           "seconds": round(outcome.seconds, 3)})
        if points:
            best = max(points, key=lambda p: p["valid_auc"])
            chosen = max((p for p in points if validates_alike(
                p["valid_auc"], p["valid_logloss"], best["valid_auc"], best["valid_logloss"],
                tolerance, logloss_tolerance)), key=lambda p: p["threshold"])
        else:
            chosen = {"threshold": 1, "limits": {}}
        spec = ctx.spec.copy(vocab_limits={**ctx.spec.vocab_limits, **chosen["limits"]})
        kept = {name: chosen["limits"].get(name, len(c)) / len(c) for name, c in counts.items()}
        extra: dict[str, Any] = {
            "threshold": chosen["threshold"], "vocab_limits": chosen["limits"],
            "threshold_curve": [{k: v for k, v in p.items() if k != "limits"}
                                for p in points],
            "tolerance": tolerance, "logloss_tolerance": logloss_tolerance}
        if skipped:
            extra["stopped"] = skipped
        return dims_result(self.name, strategy, ctx, spec, kept, time.perf_counter() - t0,
                           extra=extra)
