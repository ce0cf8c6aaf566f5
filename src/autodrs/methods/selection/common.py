"""What every field-selection method shares: its options, and the path from a score per
field to the stage result.

A method only scores the candidate fields (``SelectionMethod.score_fields``). The shared
path first finds redundant copies (near-bijections of another field's ids) and lets the
method score one representative per group. It ranks the representatives (best first), with
each copy right after its representative and sharing its score, and chooses the subset: a
fixed ``k``, the best subset a black-box search found, or the ERASE rule (the smallest k
whose retrained validation AUC is within ``tolerance`` of the best). The subset goes into
``spec.fields`` (in schema order); ranking, scores and the ERASE curve go into the result.

Options (``ctx.options``): ``k`` (keep exactly the top k), ``k_grid`` (ks of the ERASE
curve; default every k up to 12 fields, else 12 evenly spaced ks), ``erase`` (``grid``:
retrain every k of the grid; ``bisect``: only the ks a bisection for the chosen k needs,
log2 n retrains after the ranking's own cuts, the ks before the two largest drops in the
scores,
stopping before a retrain the stage's budget cannot pay for; default
``bisect`` under a budget without ``k_grid``, else ``grid``; when the time left cannot
pay for even the all-fields retrain, estimated from the ``epoch_seconds`` a method
reports, every field is kept and ``erase_skipped`` says why), ``tolerance`` (0.002),
``redundancy`` (purity threshold of the near-bijection test, 0.98; 0 turns it off),
``fast`` (an ERASE curve of two points).
"""

from __future__ import annotations

import time
from abc import abstractmethod
from dataclasses import dataclass, field, replace
from typing import Any

from autodrs.methods.selection.erase import EraseCurve, erase_bisect, erase_curve, gap_cuts
from autodrs.methods.selection.redundancy import find_redundant, place_copies, redundant_copies
from autodrs.methods.selection.subset import in_schema_order, with_fields
from autodrs.search.base import (
    Method,
    SearchContext,
    SearchError,
    StageResult,
    no_result,
    option,
)
from autodrs.spec import ArchSpec
from autodrs.train.trainer import TrainConfig


@dataclass
class SelectionConfig:
    k: int | None = None
    k_grid: list[int] | None = None
    erase: str | None = None
    tolerance: float = 0.002
    logloss_tolerance: float | None = None
    redundancy: float = 0.98
    fast: bool = False

    @classmethod
    def from_options(cls, options: dict[str, Any], n_fields: int) -> SelectionConfig:
        cfg = cls(fast=bool(options.get("fast", False)))
        try:
            if options.get("k") is not None:
                cfg.k = int(options["k"])
            grid = options.get("k_grid")
            if grid is not None:
                items = grid.split(",") if isinstance(grid, str) else grid
                cfg.k_grid = sorted({int(k) for k in items})
            cfg.erase = options.get("erase")
            cfg.tolerance = float(options.get("tolerance", cfg.tolerance))
            if options.get("logloss_tolerance") is not None:
                cfg.logloss_tolerance = float(options["logloss_tolerance"])
            cfg.redundancy = float(options.get("redundancy", cfg.redundancy) or 0.0)
        except (TypeError, ValueError) as e:
            raise SearchError(f"bad selection option: {e}") from e
        if cfg.k is not None and not 1 <= cfg.k <= n_fields:
            raise SearchError(f"option k={cfg.k} must be in 1..{n_fields} (the candidate fields)")
        if cfg.k_grid is not None and not all(1 <= k <= n_fields for k in cfg.k_grid):
            raise SearchError(f"option k_grid={cfg.k_grid} must lie in 1..{n_fields}")
        if cfg.erase not in (None, "grid", "bisect"):
            raise SearchError(f"option erase must be grid or bisect, got {cfg.erase!r}")
        if cfg.tolerance < 0:
            raise SearchError(f"option tolerance must be >= 0, got {cfg.tolerance}")
        if cfg.logloss_tolerance is not None and cfg.logloss_tolerance < 0:
            raise SearchError(f"option logloss_tolerance must be >= 0, got "
                              f"{cfg.logloss_tolerance}")
        if not 0.0 <= cfg.redundancy <= 1.0:
            raise SearchError(f"option redundancy must be in [0, 1], got {cfg.redundancy}")
        return cfg


class NothingFound(Exception):
    """Raised by ``score_fields`` when the method's search found nothing (its budget ran out
    before any trial finished): the stage then returns ``no_result`` with this reason and
    its input spec, never a subset chosen from empty scores."""

    def __init__(self, reason: str, trials: list[dict[str, Any]] | None = None) -> None:
        super().__init__(reason)
        self.trials = trials or []


@dataclass
class FieldScores:
    """A method's verdict: a score per candidate field (higher is better), optionally the
    subset its own search preferred, and anything worth reporting."""

    scores: dict[str, float]
    subset: list[str] | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    trials: list[dict[str, Any]] = field(default_factory=list)


def candidate_fields(ctx: SearchContext) -> list[str]:
    fields = ctx.spec.used_fields(ctx.dataset.schema)
    if len(fields) < 2:
        raise SearchError(f"field selection needs two or more candidate fields, got {fields}")
    return fields


def rank(scores: dict[str, float], order: list[str]) -> list[str]:
    """Fields by score, best first; ties keep the candidate order (deterministic)."""
    return sorted(order, key=lambda f: (-scores[f], order.index(f)))


class SelectionMethod(Method):
    """A field-selection method: subclasses score the candidate fields."""

    component = "selection"
    decides: tuple[str, ...] = ("fields",)
    # under the ERASE rule (no fixed k, no black-box subset) the chosen subset is one of the
    # retrained points; otherwise a guard finds no fit to reuse and pays for one
    retrains_its_choice = True

    @abstractmethod
    def score_fields(self, ctx: SearchContext, fields: list[str], strategy: str) -> FieldScores:
        """Score every field of ``fields`` (higher keeps it sooner)."""

    def finish_spec(self, spec: ArchSpec, scored: FieldScores) -> ArchSpec:
        """The stage's spec once its fields are chosen; methods that add a module (AdaFS's
        controller) override this."""
        return spec

    def search(self, ctx: SearchContext) -> StageResult:
        strategy = self.resolve_strategy(ctx)
        t0 = time.perf_counter()
        fields = candidate_fields(ctx)
        cfg = SelectionConfig.from_options(ctx.options, len(fields))
        # copies are found first and scored through their representative: a method that
        # saw both would split the credit between them (permuting one, the model still
        # reads the other) and rank both too low
        pairs = (find_redundant(ctx.dataset.schema, ctx.dataset.train, fields, cfg.redundancy)
                 if cfg.redundancy > 0 else [])
        copies = redundant_copies(fields, pairs)
        kept = [f for f in fields if f not in copies]
        try:
            scored = self.score_fields(replace(ctx, spec=with_fields(ctx.spec, kept)), kept,
                                       strategy)
        except NothingFound as e:
            return no_result(self.name, strategy, ctx.spec, str(e),
                             time.perf_counter() - t0, trials=e.trials)
        missing = [f for f in kept if f not in scored.scores]
        if missing:
            raise SearchError(f"method {self.name!r} left fields unscored: {missing}")
        order = rank(scored.scores, kept)
        ranking = place_copies(order, copies)
        scores = {f: float(scored.scores[copies.get(f, f)]) for f in ranking}
        curve: EraseCurve | None = None
        skipped: str | None = None
        if cfg.k is not None:
            chosen = in_schema_order(ctx.dataset.schema, order[:cfg.k])
        elif scored.subset is not None:
            chosen = in_schema_order(ctx.dataset.schema,
                                     [f for f in order if f in scored.subset])
        else:
            grid = cfg.k_grid
            if grid is None and cfg.fast:
                grid = [max(1, len(order) // 2), len(order)]
            grid = [k for k in grid if k <= len(order)] if grid is not None else None
            bisect = cfg.erase == "bisect" or (cfg.erase is None and grid is None
                                               and ctx.budget_seconds is not None)
            # a retrain's cost: measured by the caller where it knows it (the pipeline's
            # baselines), else the supernet's epoch time times the epochs
            cost = ctx.options.get("retrain_seconds")
            if cost is None and scored.extra.get("epoch_seconds") is not None:
                cost = float(scored.extra["epoch_seconds"]) * ctx.train.epochs
            left = ctx.remaining()
            if bisect and cost is not None and left is not None and left < float(cost):
                # the budget cannot pay for even the all-fields retrain: keep every field
                # (the ranking is still reported) and leave the time to the next stages
                chosen = in_schema_order(ctx.dataset.schema, order)
                skipped = (f"{left:.1f}s left, a retrain takes about "
                           f"{float(cost):.1f}s: every field kept")
            elif bisect:
                curve = erase_bisect(ctx.dataset, order, ctx.spec, ctx.train,
                                     tolerance=cfg.tolerance, remaining=ctx.remaining,
                                     anchors=gap_cuts([scored.scores[f] for f in order]),
                                     logloss_tolerance=cfg.logloss_tolerance)
            else:
                curve = erase_curve(ctx.dataset, order, ctx.spec, ctx.train, ks=grid or None,
                                    tolerance=cfg.tolerance, stop=ctx.out_of_budget,
                                    logloss_tolerance=cfg.logloss_tolerance)
            if curve is not None:
                chosen = curve.chosen.fields
        seconds = time.perf_counter() - t0
        spec = self.finish_spec(with_fields(ctx.spec, chosen), scored)
        spec.record(self.name, strategy, list(self.decides), seconds, kept=len(chosen),
                    of=len(fields))
        spec.validate(ctx.dataset.schema)
        extra: dict[str, Any] = {"selected": chosen, "redundant": copies}
        if curve is not None:
            extra["erase"] = curve.to_dict()
        if skipped is not None:
            extra["erase_skipped"] = skipped
        extra.update(scored.extra)
        return StageResult(method=self.name, strategy=strategy, spec=spec, ranking=ranking,
                           scores=scores, trials=scored.trials, seconds=seconds, extra=extra)


def search_config(ctx: SearchContext, epochs: int | None = None) -> TrainConfig:
    """The training config of a method's own search: the command's, seeded from
    ``ctx.seed``, for ``search_epochs`` (option) epochs, one epoch when ``fast``."""
    n = 1 if ctx.fast else option(ctx, "search_epochs", epochs or ctx.train.epochs, int)
    if n < 1:
        raise SearchError(f"option search_epochs must be >= 1, got {n}")
    return replace(ctx.train, epochs=n, seed=ctx.seed)


def arch_interval(ctx: SearchContext, config: TrainConfig) -> int:
    """Weight steps between architecture steps of a bi-level search: ``update_every`` (10),
    or fewer when the search has too few weight steps to give ``min_arch_steps`` (100)
    architecture steps. The reference setting assumes millions of rows; on a small table it
    would leave the architecture parameters near their start."""
    every = option(ctx, "update_every", 10, int)
    floor = option(ctx, "min_arch_steps", 100, int)
    if every < 1 or floor < 0:
        raise SearchError("options update_every and min_arch_steps must be >= 1 and >= 0")
    planned = -(-len(ctx.dataset.train) // config.batch_size) * config.epochs
    if floor and planned // every < floor:
        every = max(1, planned // floor)
    return every
