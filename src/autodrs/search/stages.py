"""Run search methods as stages, each refining the spec the one before produced.

Each stage gets its own folder ``out_dir/stages/NN-method`` (its Optuna study lives there)
and, once finished, a ``stage.json`` holding its result and spec; with ``ctx.resume`` a
finished stage is read back instead of run again, and an unfinished one resumes its study.
A wall-time budget is shared out: each stage gets the time left divided by the stages left.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import fields, replace
from pathlib import Path
from typing import Any

from autodrs.runfolder import write_json
from autodrs.search.base import SearchContext, SearchError, StageResult, get_method
from autodrs.spec import ArchSpec

STAGE_FILE = "stage.json"


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


def run_stages(ctx: SearchContext, methods: list[str],
               on_stage: Callable[[int, StageResult], Any] | None = None) -> list[StageResult]:
    """Run ``methods`` in order from ``ctx.spec``; return one ``StageResult`` per method.
    Every stage's spec is validated against the schema before the next stage starts."""
    if not methods:
        raise SearchError("no search methods given")
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
        else:
            left = ctx.remaining()
            budget = None if left is None else max(0.0, left) / (len(instances) - index)
            stage_ctx = replace(ctx, spec=spec.copy(), out_dir=folder, budget_seconds=budget,
                                started=time.monotonic())
            result = method.search(stage_ctx)
            result.spec.validate(ctx.dataset.schema)
            if folder is not None:
                save_stage(folder, result)
        spec = result.spec
        results.append(result)
        if on_stage is not None:
            on_stage(index, result)
    return results
