"""``optim``: the learning rate (and, optionally, the batch size) a spec trains with, chosen
by full retrains on validation AUC and written into ``spec.training``.

Every stage of the pipeline compares specs retrained with the run's trainer, and how fast
that trainer learns decides what its epoch budget reaches. On movielens-100k at the
command's defaults (Adam at lr 1e-3, batch 1024, 10 epochs, patience 2), DeepFM validates
and tests higher at three times the learning rate (test +0.0055, +0.0037, +0.0029 on three
seeds), and so do FM, DCN-V2 and Wide&Deep; five times is too much. The stage retrains the
spec at each multiple of its learning rate in ``lr_factors`` (1, 3, 2, 0.5, tried in that
order: the run's own setting first, a fit the run has usually done already) and at each
batch size in ``batch_sizes`` (default: the spec's own only), and keeps the setting that
validates best; a tie keeps the earlier one. Under a budget it stops trying once the time
left cannot pay for one more retrain, judged by the longest so far. The spec's own training
settings (a searched one, or the command's) are the starting point; the test split is
never looked at.
"""

from __future__ import annotations

import time
from dataclasses import replace
from typing import Any

from autodrs.experiment import fit_spec, with_training
from autodrs.search.base import (
    Method,
    SearchContext,
    SearchError,
    StageResult,
    option,
    register_method,
)
from autodrs.spec import ArchSpec

DEFAULT_LR_FACTORS = (1.0, 3.0, 2.0, 0.5)


def parse_numbers(raw: Any, key: str, cast: type = float) -> list[Any]:
    """Option ``key``'s value ``raw`` as a list of positive numbers (``1,3,2`` or a list).
    The callers read each option by its literal name, so ``--set optim.KEY=...`` knows it."""
    items = [v for v in raw.split(",") if v.strip()] if isinstance(raw, str) else list(raw)
    try:
        values = [cast(v) for v in items]
    except (TypeError, ValueError) as e:
        raise SearchError(f"optim option {key} must be positive numbers, got {raw!r}") from e
    if not values or any(v <= 0 for v in values):
        raise SearchError(f"optim option {key} must be positive numbers, got {raw!r}")
    return list(dict.fromkeys(values))  # order kept, repeats dropped


def label(lr: float, batch_size: int) -> str:
    return f"lr={lr:g}, batch={batch_size}"


@register_method
class Optim(Method):
    """``--methods optim``: options ``lr_factors`` (multiples of the spec's learning rate,
    default 1,3,2,0.5), ``batch_sizes`` (default the spec's own) and ``search_epochs`` (per
    candidate, default the training epochs)."""

    name = "optim"
    component = "training"
    strategies = ("grid",)
    retrains_its_choice = True

    def search(self, ctx: SearchContext) -> StageResult:
        strategy = self.resolve_strategy(ctx)
        t0 = time.perf_counter()
        spec = ctx.spec
        current = with_training(ctx.train, spec)
        factors = parse_numbers(ctx.options.get("lr_factors", DEFAULT_LR_FACTORS),
                                "lr_factors")
        batches = parse_numbers(ctx.options.get("batch_sizes", (current.batch_size,)),
                                "batch_sizes", int)
        epochs = 1 if ctx.fast else option(ctx, "search_epochs", ctx.train.epochs, int)
        if epochs < 1:
            raise SearchError(f"option search_epochs must be >= 1, got {epochs}")
        config = replace(ctx.train, epochs=epochs, progress=False, checkpoint=None)
        candidates = [(float(f"{current.lr * f:.6g}"), b) for b in batches for f in factors]
        results: dict[str, dict[str, Any]] = {}
        specs: dict[str, ArchSpec] = {}
        longest = 0.0
        for lr, batch in candidates:
            left = ctx.remaining()
            if results and left is not None and left < longest:
                break  # the time left cannot pay for another retrain
            if (lr, batch) == (current.lr, current.batch_size):
                candidate = spec  # the spec as it is: a fit the run may already have done
            else:
                candidate = spec.copy(training=replace(spec.training, lr=lr, batch_size=batch))
            outcome = fit_spec(ctx.dataset, candidate, config)
            longest = max(longest, outcome.seconds)
            key = label(lr, batch)
            specs[key] = candidate
            results[key] = {"lr": lr, "batch_size": batch,
                            "valid_auc": round(outcome.metrics["valid"]["auc"], 6),
                            "valid_logloss": round(outcome.metrics["valid"]["logloss"], 6),
                            "best_epoch": outcome.fit.best_epoch,
                            "seconds": round(outcome.seconds, 3)}
            if ctx.out_of_budget():
                break
        ranking = sorted(results, key=lambda k: -results[k]["valid_auc"])  # stable: ties
        best = ranking[0]  # go to the earlier candidate
        out = specs[best]
        seconds = time.perf_counter() - t0
        if out is not spec:
            out.record(self.name, strategy, ["training"], seconds, chosen=best,
                       candidates=len(results))
        return StageResult(self.name, strategy, out, ranking=ranking,
                           scores={k: v["valid_auc"] for k, v in results.items()},
                           seconds=seconds,
                           extra={"lr": results[best]["lr"],
                                  "batch_size": results[best]["batch_size"],
                                  "start": label(current.lr, current.batch_size),
                                  "candidates": results,
                                  "untried": len(candidates) - len(results)})
