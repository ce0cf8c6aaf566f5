"""Run search methods as stages, each refining the spec the one before produced.

Each stage gets its own folder ``out_dir/stages/NN-method`` (its Optuna study lives there)
and, once finished, a ``stage.json`` holding its result and spec; with ``ctx.resume`` a
finished stage is read back instead of run again, and an unfinished one resumes its study.
A wall-time budget is shared out by weight: each stage gets the time left (less what is
``reserve``d for the retrain after the stages) times its weight over the weights of the stages
left, so time a stage leaves unused goes to the stages after it. Every fit the stage's method
starts ends by the end of its part of the share (``autodrs.train.trainer.deadline``), even
one the method runs without a time limit of its own; the guard's judging follows, its fits
ending by the end of the share. A stage left no time is not started (``no_result``).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import fields, replace
from pathlib import Path
from typing import Any

from autodrs.runfolder import write_json
from autodrs.search.base import (
    SearchContext,
    SearchError,
    StageResult,
    get_method,
    no_result,
)
from autodrs.spec import ArchSpec
from autodrs.train.trainer import deadline

STAGE_FILE = "stage.json"
# the part of a stage's share kept for the guard's judging before any retrain's length is
# known (the baselines were cut short, so no full fit has been timed)
UNKNOWN_JUDGING_SHARE = 0.5


def stage_dir(out_dir: Path, index: int, method: str) -> Path:
    return Path(out_dir) / "stages" / f"{index:02d}-{method}"


def save_stage(folder: Path, result: StageResult) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    write_json(folder / STAGE_FILE, {"result": result.to_dict(), "spec": result.spec.to_dict()})


def load_stage(folder: Path) -> StageResult | None:
    path = folder / STAGE_FILE
    if not path.exists():
        return None
    data = json.loads(path.read_text())
    entry = dict(data["result"])
    known = {f.name for f in fields(StageResult)} - {"spec", "extra"}
    kwargs = {k: entry.pop(k) for k in list(entry) if k in known}
    return StageResult(spec=ArchSpec.from_dict(data["spec"]), extra=entry, **kwargs)


def stage_budget(left: float | None, weights: Sequence[float], index: int,
                 reserve: float = 0.0) -> float | None:
    """Seconds for stage ``index`` when ``left`` seconds remain: the time left after the
    ``reserve`` times the stage's weight over the weights of this and the later stages."""
    if left is None:
        return None
    rest = sum(weights[index:])
    return max(0.0, left - reserve) * (weights[index] / rest if rest > 0 else 1.0)


def failed_stage(method: str, strategy: str, spec: ArchSpec, error: BaseException,
                 seconds: float) -> StageResult:
    """The result of a stage that raised: its input spec goes on, and the reason is kept."""
    text = str(error).strip().splitlines()
    reason = f"{type(error).__name__}: {text[0] if text else 'no message'}"
    return StageResult(method=method, strategy=strategy, spec=spec.copy(), seconds=seconds,
                       extra={"failed": True, "error": reason})


def run_stages(ctx: SearchContext, methods: list[str],
               on_stage: Callable[[int, StageResult], Any] | None = None,
               weights: Sequence[float] | None = None,
               reserve: float = 0.0,
               guard: Callable[[ArchSpec, StageResult], ArchSpec] | None = None,
               keep_going: bool = False,
               ) -> list[StageResult]:
    """Run ``methods`` in order from ``ctx.spec``; return one ``StageResult`` per method.
    Every stage's spec is validated against the schema before the next stage starts.
    Under a budget (``ctx.budget_seconds``) stage i gets ``stage_budget`` seconds: equal
    shares by default, ``weights`` (one per method) otherwise, after ``reserve`` seconds
    kept back for what follows the stages (the pipeline's retrain); the stage's result
    records it as ``budget_seconds``. A ``guard`` is called with the stage's input spec and
    its fresh result, and returns the spec the next stage starts from (the pipeline's
    ``ValidationGuard`` keeps the input when the stage's spec validates worse); the guarded
    spec is what ``stage.json`` stores, so a resumed run makes the same decision. A guard
    with an ``expected_seconds()`` has that much (``UNKNOWN_JUDGING_SHARE`` of the share
    while it is 0) taken off each stage's share, so judging the stage fits in its time, and
    its fits end with the share, except for methods that retrain their choice themselves
    (``Method.retrains_choice``: the guard reuses that fit). A stage whose share leaves the
    method no time is not run: its result is ``no_result``. With ``keep_going`` a stage
    that raises does not end the run: its result keeps its input spec and records
    ``failed`` and the ``error``; it is not saved, so ``--resume`` tries it again. A stage
    that found nothing (``StageResult.no_result``, e.g. its budget ran out before any trial
    finished) passes its input on unjudged by the guard, and is not saved either."""
    if not methods:
        raise SearchError("no search methods given")
    weights = list(weights) if weights is not None else [1.0] * len(methods)
    if len(weights) != len(methods) or any(w < 0 for w in weights):
        raise SearchError(f"need one non-negative stage weight per method, got {weights}")
    instances = [get_method(name) for name in methods]
    for method in instances:
        method.resolve_strategy(ctx)  # reject a bad strategy before any stage runs
    spec = ctx.spec
    results: list[StageResult] = []
    for index, method in enumerate(instances):
        folder = stage_dir(ctx.out_dir, index, method.name) if ctx.out_dir else None
        done = load_stage(folder) if folder is not None and ctx.resume else None
        if done is not None and done.method == method.name:
            result = done
            if guard is not None and hasattr(guard, "replay"):
                guard.replay(result)  # its verdict counts for the stages after it
        else:
            share = budget = stage_budget(ctx.remaining(), weights, index, reserve)
            if (budget is not None and guard is not None and hasattr(guard, "expected_seconds")
                    and not method.retrains_choice(ctx.options)):
                # time to judge it: a retrain as long as the longest so far, or, before any
                # is known, a part of the share
                judging = guard.expected_seconds() or UNKNOWN_JUDGING_SHARE * budget
                budget = max(0.0, budget - judging)
            # options given to this method by name (``per_method``) win over the run's
            options = {**ctx.options, **ctx.options.get("per_method", {}).get(method.name, {})}
            stage_ctx = replace(ctx, spec=spec.copy(), out_dir=folder, budget_seconds=budget,
                                started=time.monotonic(), options=options)
            t0 = time.perf_counter()
            # every fit inside the method ends by the method's part of the share, and every
            # fit of the guard by the share's end (``trainer.deadline``), whether or not the
            # method or the guard stop them themselves
            end = None if budget is None else stage_ctx.started + budget
            share_end = None if share is None else stage_ctx.started + share
            try:
                if budget is not None and budget <= 0:
                    result = no_result(method.name, method.resolve_strategy(ctx), spec,
                                       "no time was left for this stage", 0.0)
                else:
                    with deadline(end):
                        result = method.search(stage_ctx)
                if budget is not None:
                    result.extra["budget_seconds"] = round(budget, 3)
                result.spec.validate(ctx.dataset.schema)
                if guard is not None and not result.no_result:
                    with deadline(share_end):
                        result.spec = guard(spec, result)
            except Exception as e:
                if not keep_going:
                    raise
                result = failed_stage(method.name, method.resolve_strategy(ctx), spec, e,
                                      time.perf_counter() - t0)
            if folder is not None and not result.extra.get("failed") and not result.no_result:
                save_stage(folder, result)
        spec = result.spec
        results.append(result)
        if on_stage is not None:
            on_stage(index, result)
    return results
