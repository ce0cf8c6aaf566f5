"""AutoCross (Luo, Wang, Zhou, Yao, Tu, Chen, Yang, Dai; KDD 2019): cross features found by
beam search, each candidate scored by field-wise LR with successive halving over data.

The current model is an LR over the spec's categorical fields, its bucketed numerical
fields and the crosses it already has (``fieldwise.OffsetModel``). Fields whose ids are a
near-bijection of another's (``selection.redundancy``) are not crossed: their crosses
repeat the other field's; nor is a field crossed with one that determines it (an item with
its release year): that cross is the item again. Each round:

1. candidates: every cross of two features of the current set (a feature may itself be a
   cross, so crosses grow to ``max_order`` fields), not yet in the set;
2. each candidate's field-wise LR, ``sigmoid(o(x) + w_c[id_c(x)])`` with the current
   model's logit ``o`` frozen and only ``w_c`` learned (L2 ``l2``), is fitted on a first
   block of train rows and scored by its validation logloss gain; the better half goes on
   to twice the rows, until ``beam`` (1: greedy, as in the paper's experiments) remain;
3. the best candidate is accepted if its gain exceeds ``min_gain``; its weights, refitted
   on all train rows, join the frozen logit.

The search stops after ``max_crosses`` crosses, when no candidate gains, or at the budget.
Accepted crosses go into ``spec.crosses`` (the model hashes their ids into
``spec.cross_buckets`` buckets). The ranking lists the accepted crosses in order, then the
last round's other candidates by gain; scores are validation logloss gains.
AutoCross also discretises numerical fields at several granularities to cross them; the
spec crosses categorical fields only, so numerical fields enter the LR but no cross.

Options: ``max_crosses`` (10), ``max_order`` (3), ``min_gain`` (5e-4), ``l2`` (5.0),
``beam`` (1), ``min_rows`` (first block, 2,000).
"""

from __future__ import annotations

import time
from itertools import combinations

import torch

from autodrs.methods.crossing.fieldwise import OffsetModel, successive_halving
from autodrs.methods.selection.redundancy import (
    determined_pairs,
    find_redundant,
    redundant_copies,
)
from autodrs.search.base import (
    Method,
    SearchContext,
    SearchError,
    StageResult,
    option,
    register_method,
)
from autodrs.train.trainer import default_threads

Feature = tuple[str, ...]


def base_model(ctx: SearchContext, l2: float) -> tuple[OffsetModel, list[Feature]]:
    """The LR the crosses extend (backfitted) and the crossable features it holds."""
    schema = ctx.dataset.schema
    used = ctx.spec.used_fields(schema)
    categorical = [f for f in used if schema.field(f).kind == "categorical"]
    existing = [tuple(c) for c in ctx.spec.crosses]
    if len(categorical) < 2:
        raise SearchError(f"crossing needs two or more categorical fields; the spec uses "
                          f"{len(categorical)}")
    model = OffsetModel(schema, ctx.dataset.train, ctx.dataset.valid,
                        ctx.spec.cross_buckets, l2)
    numerical = [(f,) for f in used if schema.field(f).kind == "numerical"]
    for feature in [*[(f,) for f in categorical], *numerical, *existing]:
        model.add(feature)
    model.backfit()
    # a copy of a field crosses like the field itself (and with it, into nothing new)
    copies = redundant_copies(categorical, find_redundant(schema, ctx.dataset.train,
                                                          categorical))
    return model, [*[(f,) for f in categorical if f not in copies], *existing]


def degenerate(cross: Feature, determined: set[tuple[str, str]]) -> bool:
    """Whether a field of ``cross`` is a function of another of its fields."""
    return any((a, b) in determined for a in cross for b in cross if a != b)


def merge(a: Feature, b: Feature, order: dict[str, int]) -> Feature:
    return tuple(sorted(set(a) | set(b), key=order.__getitem__))


@register_method
class AutoCross(Method):
    name = "autocross"
    component = "crossing"
    strategies = ("beam",)

    def search(self, ctx: SearchContext) -> StageResult:
        strategy = self.resolve_strategy(ctx)
        t0 = time.perf_counter()
        # many small tensor ops: extra threads only contend (the trainer sets this too)
        torch.set_num_threads(ctx.train.threads or default_threads())
        max_crosses = option(ctx, "max_crosses", 2 if ctx.fast else 10, int)
        max_order = option(ctx, "max_order", 3, int)
        min_gain = option(ctx, "min_gain", 5e-4)
        l2 = option(ctx, "l2", 5.0)
        beam = option(ctx, "beam", 1, int)
        min_rows = option(ctx, "min_rows", 2_000, int)
        if max_crosses < 1 or max_order < 2 or beam < 1 or l2 <= 0 or min_rows < 1:
            raise SearchError("AutoCross needs max_crosses >= 1, max_order >= 2, beam >= 1, "
                              "l2 > 0 and min_rows >= 1")
        order = {n: i for i, n in enumerate(ctx.dataset.schema.field_names)}
        model, pool = base_model(ctx, l2)
        determined = determined_pairs(ctx.dataset.schema, ctx.dataset.train,
                                      [p[0] for p in pool if len(p) == 1])
        start_logloss = model.valid_logloss()
        accepted: list[Feature] = []
        gains: dict[Feature, float] = {}
        evaluated = 0
        rounds_log = []
        for round_no in range(max_crosses):
            if ctx.out_of_budget():
                break
            candidates = sorted({merge(a, b, order) for a, b in combinations(pool, 2)}
                                - set(pool), key=lambda c: (len(c), [order[n] for n in c]))
            candidates = [c for c in candidates
                          if len(c) <= max_order and not degenerate(c, determined)]
            if ctx.trials is not None:
                candidates = candidates[:max(0, ctx.trials - evaluated)]
            if not candidates:
                break
            evaluated += len(candidates)
            scored, survived = successive_halving(model, candidates, ctx.seed + round_no,
                                                  min_rows=min_rows, keep=beam)
            gains.update(scored)
            best = max(candidates, key=lambda c: (survived[c], scored[c], c))
            rounds_log.append({"candidates": len(candidates), "best": "*".join(best),
                               "gain": round(scored[best], 6)})
            if scored[best] <= min_gain:
                break
            model.add(best)
            accepted.append(best)
            pool.append(best)
        rest = sorted((c for c in gains if c not in accepted), key=lambda c: (-gains[c], c))
        ranking = [*accepted, *rest]
        seconds = time.perf_counter() - t0
        spec = ctx.spec.copy(crosses=[*ctx.spec.crosses, *[list(c) for c in accepted]])
        spec.record(self.name, strategy, ["crosses"], seconds, added=len(accepted))
        spec.validate(ctx.dataset.schema)
        return StageResult(
            method=self.name, strategy=strategy, spec=spec,
            ranking=[list(c) for c in ranking],
            scores={"*".join(c): round(float(gains[c]), 6) for c in ranking},
            seconds=seconds,
            extra={"accepted": [list(c) for c in accepted], "rounds": rounds_log,
                   "valid_logloss": {"start": round(start_logloss, 6),
                                     "end": round(model.valid_logloss(), 6)},
                   "candidates_evaluated": evaluated})
