"""``mtl``: search which bottom layers the tasks of multi-label data share.

The space (``candidates``) holds every branching of a ``bottom``-layer shared-bottom model
(``MultiTaskSpec.sharing``): layer by layer the tasks are split into groups, each group with a
module of its own, and a group never merges again once split (a tree, as in Learning to
Branch, Guo et al. 2020, and the branched networks of Vandenhende et al. 2020), from all tasks
sharing every layer to each task on its own modules after the shared embeddings; beside
them MMoE models with each of ``experts`` experts. With T tasks and L layers that is every
chain of set partitions P_1 >= ... >= P_L (each refining the one before): 3 for two tasks and
two layers, 12 for three.

Estimation: each candidate is trained from scratch with the run's trainer
(``experiment.fit_spec``, early stopping on validation AUC) and scored by its validation AUC
averaged over the tasks; the best is kept (a tie goes to the candidate found first, which
shares more). ``grid`` tries the candidates from the most shared to the least, ``random`` in a
random order drawn by the seed; ``--trials`` caps how many are trained and the budget stops
the search before a candidate the time left cannot pay for. Options: ``bottom`` (widths,
default the spec's multitask bottom or [128, 64]), ``tower`` ([32]), ``experts`` (2,4; 0 for
none), ``gradnorm`` (alpha: every candidate trains under GradNorm), ``epochs`` (per
candidate). The spec keeps the input's fields and embeddings and gains the chosen
``multitask`` part.
"""

from __future__ import annotations

import itertools
import random
import time
from dataclasses import replace
from typing import Any

from autodrs.experiment import fit_spec
from autodrs.search.base import (
    Method,
    SearchContext,
    SearchError,
    StageResult,
    no_result,
    option,
    register_method,
)
from autodrs.spec import MultiTaskSpec
from autodrs.train.trainer import TimeLimit

MAX_TASKS = 5


def partitions(items: list[int]) -> list[list[list[int]]]:
    """Every set partition of ``items`` (blocks in order of their first item)."""
    if not items:
        return [[]]
    first, rest = items[0], items[1:]
    out = []
    for part in partitions(rest):
        out.append([[first], *part])
        for k in range(len(part)):
            out.append([*part[:k], [first, *part[k]], *part[k + 1:]])
    return [sorted((sorted(b) for b in p), key=lambda b: b[0]) for p in out]


def _refines(finer: list[list[int]], coarser: list[list[int]]) -> bool:
    return all(any(set(b) <= set(c) for c in coarser) for b in finer)


def _row(part: list[list[int]], tasks: int) -> list[int]:
    """A partition as ``sharing``'s row: each task's module (its block's number)."""
    row = [0] * tasks
    for k, block in enumerate(part):
        for t in block:
            row[t] = k
    return row


def branchings(tasks: int, layers: int) -> list[list[list[int]]]:
    """Every ``sharing`` (one row per layer) whose partitions refine layer by layer, the
    most shared first."""
    parts = partitions(list(range(tasks)))
    out = []
    for chain in itertools.product(parts, repeat=layers):
        if all(_refines(chain[i + 1], chain[i]) for i in range(layers - 1)):
            out.append([_row(p, tasks) for p in chain])
    return sorted(out, key=lambda s: (sum(len(set(r)) for r in s),
                                      [len(set(r)) for r in reversed(s)]))


def describe(mt: MultiTaskSpec, tasks: list[str]) -> str:
    """A candidate as a person reads it: per layer, the task groups sharing a module
    (``like+love | dislike``), or ``mmoe-4``."""
    if mt.backbone == "mmoe":
        return f"mmoe-{mt.experts}"
    rows = mt.sharing or [[0] * len(tasks) for _ in mt.bottom]
    layers = []
    for row in rows:
        groups = [[tasks[t] for t in range(len(tasks)) if row[t] == k]
                  for k in sorted(set(row), key=row.index)]
        layers.append(" | ".join("+".join(g) for g in groups))
    return "; ".join(f"L{i + 1}: {text}" for i, text in enumerate(layers))


def candidates(tasks: int, bottom: list[int], tower: list[int], experts: list[int],
               gradnorm: float | None) -> list[MultiTaskSpec]:
    """The space: every branching of the bottom layers, then MMoE with each expert count."""
    if tasks > MAX_TASKS:
        raise SearchError(f"mtl enumerates the branchings of up to {MAX_TASKS} tasks; the "
                          f"data has {tasks}")
    # every layer shared is written as a plain shared-bottom spec (``sharing`` None)
    out = [MultiTaskSpec(backbone="shared_bottom", bottom=list(bottom), tower=list(tower),
                         sharing=s if any(len(set(r)) > 1 for r in s) else None,
                         gradnorm=gradnorm)
           for s in branchings(tasks, len(bottom))]
    out += [MultiTaskSpec(backbone="mmoe", bottom=list(bottom), tower=list(tower),
                          experts=e, gradnorm=gradnorm) for e in experts if e > 0]
    return out


def _ints(value: Any, key: str) -> list[int]:
    items = value.split(",") if isinstance(value, str) else value
    try:
        out = [int(v) for v in items if str(v).strip()]
    except (TypeError, ValueError) as e:
        raise SearchError(f"option {key}={value!r} is not a list of integers") from e
    if any(v < 0 for v in out):
        raise SearchError(f"option {key}={value!r} has a negative number")
    return out


@register_method
class MultiTaskSearch(Method):
    """Which bottom layers the tasks share (or MMoE), chosen on mean validation AUC."""

    name = "mtl"
    component = "multitask"
    strategies = ("grid", "random")
    retrains_its_choice = True

    def search(self, ctx: SearchContext) -> StageResult:
        strategy = self.resolve_strategy(ctx)
        t0 = time.perf_counter()
        tasks = ctx.dataset.schema.tasks
        if len(tasks) < 2:  # nothing to search: the run goes on from its input spec
            return no_result(self.name, strategy, ctx.spec, "the data has one label; mtl "
                             "searches multi-task models (--labels a,b or "
                             "movielens-100k?tasks=like,love)", time.perf_counter() - t0)
        base = ctx.spec.multitask or MultiTaskSpec()
        bottom = _ints(ctx.options.get("bottom", base.bottom), "bottom")
        tower = _ints(ctx.options.get("tower", base.tower), "tower")
        experts = _ints(ctx.options.get("experts", "2" if ctx.fast else "2,4"), "experts")
        if not bottom or 0 in bottom or 0 in tower:
            raise SearchError(f"mtl needs bottom widths > 0 (got {bottom}) and tower widths "
                              f"> 0 (got {tower})")
        gradnorm = option(ctx, "gradnorm", base.gradnorm)
        space = candidates(len(tasks), bottom, tower, experts, gradnorm)
        if strategy == "random":
            random.Random(ctx.seed).shuffle(space)
        limit = ctx.trials or (3 if ctx.fast else len(space))
        train = ctx.train
        epochs = option(ctx, "epochs", 1 if ctx.fast else None, int)
        if epochs is not None:
            if epochs < 1:
                raise SearchError(f"option epochs must be >= 1, got {epochs}")
            train = replace(train, epochs=epochs)
        tried: list[dict[str, Any]] = []
        chosen: MultiTaskSpec | None = None
        best = -1.0
        longest, stopped = 0.0, None
        for mt in space[:limit]:
            left = ctx.remaining()
            if left is not None and (left <= 0 or left < longest):
                stopped = (f"{len(space) - len(tried)} candidates not tried: "
                           f"{max(0.0, left):.0f}s left, a fit takes about {longest:.0f}s")
                break
            outcome = fit_spec(ctx.dataset, ctx.spec.copy(multitask=mt), train,
                               hooks=[TimeLimit(ctx.remaining)])
            longest = max(longest, outcome.seconds)
            if outcome.fit.stopped_by_hook and tried:
                stopped = "a fit ran past the budget"
                break
            valid = outcome.metrics["valid"]
            entry = {"candidate": describe(mt, tasks), "multitask": dict(mt.__dict__),
                     "valid_auc": round(valid["auc"], 6),
                     "valid_logloss": round(valid["logloss"], 6),
                     **{f"valid_auc:{t}": round(valid[f"auc:{t}"], 6) for t in tasks},
                     "params": outcome.params["total"], "seconds": round(outcome.seconds, 3)}
            tried.append(entry)
            if valid["auc"] > best:
                best, chosen = valid["auc"], mt
        if chosen is None:
            return no_result(self.name, strategy, ctx.spec,
                             stopped or "no candidate was trained", time.perf_counter() - t0)
        ranked = sorted(tried, key=lambda e: -e["valid_auc"])
        spec = ctx.spec.copy(multitask=chosen)
        spec.record(self.name, strategy, ["multitask"], time.perf_counter() - t0,
                    candidate=describe(chosen, tasks))
        extra: dict[str, Any] = {"multitask": spec.to_dict()["multitask"],
                                 "chosen": describe(chosen, tasks), "candidates": tried,
                                 "space": len(space)}
        if stopped:
            extra["stopped"] = stopped
        return StageResult(self.name, strategy, spec,
                           ranking=[e["candidate"] for e in ranked],
                           scores={e["candidate"]: e["valid_auc"] for e in ranked},
                           seconds=time.perf_counter() - t0, extra=extra)
