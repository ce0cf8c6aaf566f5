"""Black-box embedding-dim search over ``EmbeddingDimSpace``, through the engine's
``run_blackbox``.

- ``nis`` (NIS-style; Joglekar et al., KDD 2020, "Neural Input Search for Large Scale
  Recommendation Models"): a REINFORCE controller (the engine's ``rl`` strategy) samples one
  dim per field; the reward is ``valid AUC - lambda * bytes / bytes_max`` (``memory_penalty``
  lambda, bytes_max the space's largest spec), so the policy trades accuracy for memory.
- ``rule`` (RULE-style; Chen et al., KDD 2021, "Learning Elastic Embeddings for Customizing
  On-Device Recommenders"): evolutionary search (NSGA-II, the engine's ``evolution``
  strategy) over per-field dims with two objectives, valid AUC up and stored bytes down,
  under a hard ``memory_budget`` (e.g. ``2MB``): every candidate is repaired into the budget
  before it is trained, so the returned spec (the most accurate point of the Pareto front)
  never exceeds it. The Pareto front of AUC against bytes is reported.

Both score a candidate with the engine's cheap estimation (few epochs, optional subsample),
or, with ``estimation=weight_sharing``, with one AutoDim supernet trained once and pinned to
each candidate's dims (no per-candidate training). When no trial finished, both return
``no_result``: the input spec goes on unchanged, never dims that no trial measured.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import optuna

from autodrs.methods.embedding.autodim import AutoDimSpace
from autodrs.methods.embedding.common import (
    arch_every,
    candidate_dims,
    dims_result,
    measure,
    option,
    parse_bytes,
    search_epochs,
    searched_fields,
)
from autodrs.methods.embedding.space import EmbeddingDimSpace
from autodrs.search.base import (
    Method,
    SearchContext,
    SearchError,
    StageResult,
    no_result,
    register_method,
)
from autodrs.search.blackbox import BlackBoxResult, run_blackbox
from autodrs.search.estimation import Estimator, weight_sharing_evaluator
from autodrs.search.gradient import run_gradient
from autodrs.spec import ArchSpec


def auc_estimate(ctx: SearchContext, space: EmbeddingDimSpace,
                 objectives: tuple[str, ...]) -> Callable[[ArchSpec, optuna.Trial], float]:
    """Validation AUC of a candidate: cheap training (the engine's ``Estimator``; a second
    objective keeps it from reporting to a multi-objective trial) or weight sharing."""
    if ctx.options.get("estimation") == "weight_sharing":
        shared = AutoDimSpace(ctx.dataset.schema, ctx.spec, space.fields, space.candidates)
        found = run_gradient(shared, ctx, mode="bilevel", every=arch_every(ctx, 10),
                             epochs=search_epochs(ctx))
        score = weight_sharing_evaluator(found.supernet, ctx.dataset.valid, ctx.train)
        return lambda spec, trial: float(score(spec, trial))  # type: ignore[arg-type]
    estimate = Estimator(ctx, objectives)

    def auc(spec: ArchSpec, trial: optuna.Trial) -> float:
        value = estimate(spec, trial)
        return float(value[0] if isinstance(value, tuple) else value)

    return auc


def make_space(ctx: SearchContext, budget: int | None) -> EmbeddingDimSpace:
    return EmbeddingDimSpace(ctx.dataset.schema, ctx.spec, searched_fields(ctx),
                             candidate_dims(ctx), budget)


def memory_budget(ctx: SearchContext) -> int | None:
    raw = ctx.options.get("memory_budget")
    return None if raw is None else parse_bytes(raw)


def pareto_front(points: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The points no other point beats on both AUC (higher) and bytes (lower), by bytes."""
    front = [p for p in points
             if not any(q["auc"] >= p["auc"] and q["bytes"] <= p["bytes"]
                        and (q["auc"] > p["auc"] or q["bytes"] < p["bytes"]) for q in points)]
    return sorted(front, key=lambda p: (p["bytes"], -p["auc"]))


def trial_points(result: BlackBoxResult) -> list[dict[str, Any]]:
    points = []
    for t in result.study.get_trials(deepcopy=False,
                                     states=(optuna.trial.TrialState.COMPLETE,)):
        if "auc" in t.user_attrs and "bytes" in t.user_attrs:
            points.append({"number": t.number, "auc": round(float(t.user_attrs["auc"]), 6),
                           "bytes": int(t.user_attrs["bytes"]),
                           "dims": t.user_attrs.get("decision")})
    return points


def nothing_found(method: str, strategy: str, ctx: SearchContext, result: BlackBoxResult,
                  t0: float, budget: int | None) -> StageResult:
    """No trial finished: the input spec goes on unchanged (``no_result``), never dims
    no trial measured; the reason says when that input is over the memory budget."""
    reason = f"{method} found no embedding dims: {result.reason}"
    stored = measure(ctx.dataset.schema, ctx.spec)["bytes"]
    if budget is not None and stored > budget:
        reason += (f"; the input spec goes on at {stored:,} bytes, over the memory budget of "
                   f"{budget:,}")
    return no_result(method, strategy, ctx.spec, reason, time.perf_counter() - t0,
                     trials=result.trials)


def stage(method: str, strategy: str, ctx: SearchContext, space: EmbeddingDimSpace,
          result: BlackBoxResult, spec: ArchSpec, t0: float,
          extra: dict[str, Any]) -> StageResult:
    points = trial_points(result)
    dims = {f: spec.dim_of(f) for f in space.fields}
    return dims_result(method, strategy, ctx, spec, dims, time.perf_counter() - t0,
                       trials=result.trials, pareto=pareto_front(points),
                       extra={"completed_trials": result.completed,
                              "candidates": space.candidates, **extra})


@register_method
class NIS(Method):
    """``--methods nis``: options ``candidates`` (2,4,8,16,32,64), ``memory_penalty``
    (lambda, 0.02), ``memory_budget`` (optional hard cap), and the engine's estimation
    options (``epochs``, ``subsample``, ``rl_lr``)."""

    name = "nis"
    component = "embedding"
    # no grid: the product of per-field choices is far too large to enumerate
    strategies = ("rl", "random", "tpe", "evolution")

    def search(self, ctx: SearchContext) -> StageResult:
        strategy = self.resolve_strategy(ctx)
        t0 = time.perf_counter()
        space = make_space(ctx, memory_budget(ctx))
        penalty = option(ctx, "memory_penalty", 0.02)
        if penalty < 0:
            raise SearchError(f"memory_penalty must be >= 0, got {penalty}")
        largest = space.bytes_of(dict.fromkeys(space.fields, space.candidates[-1]))
        estimate = auc_estimate(ctx, space, ("auc",))

        def reward(spec: ArchSpec, trial: optuna.Trial) -> float:
            auc = estimate(spec, trial)
            trial.set_user_attr("auc", auc)
            return auc - penalty * trial.user_attrs["bytes"] / largest

        result = run_blackbox(space, ctx, strategy, reward, method=self.name)
        if not result.found:
            return nothing_found(self.name, strategy, ctx, result, t0, space.budget)
        spec = result.best_spec
        return stage(self.name, strategy, ctx, space, result, spec, t0,
                     {"memory_penalty": penalty, "reward": result.best_value,
                      "memory_budget": space.budget})


@register_method
class RULE(Method):
    """``--methods rule --memory-budget 2MB``: options ``memory_budget`` (default: the
    stored size of the spec so far), ``candidates``, and the engine's estimation and evolution options (``epochs``,
    ``subsample``, ``population_size``)."""

    name = "rule"
    component = "embedding"
    strategies = ("evolution", "random", "tpe")

    def search(self, ctx: SearchContext) -> StageResult:
        strategy = self.resolve_strategy(ctx)
        t0 = time.perf_counter()
        # without --memory-budget the spec so far's stored size is the cap: it may only shrink
        budget = memory_budget(ctx) or measure(ctx.dataset.schema, ctx.spec)["bytes"]
        space = make_space(ctx, budget)
        estimate = auc_estimate(ctx, space, ("auc", "embedding_params"))

        def objectives(spec: ArchSpec, trial: optuna.Trial) -> tuple[float, float]:
            auc = estimate(spec, trial)
            trial.set_user_attr("auc", auc)
            return auc, float(trial.user_attrs["bytes"])

        result = run_blackbox(space, ctx, strategy, objectives,
                              directions=("maximize", "minimize"), method=self.name)
        if not result.found:
            return nothing_found(self.name, strategy, ctx, result, t0, budget)
        spec = result.best_spec
        stored = space.bytes_of({f: spec.dim_of(f) for f in space.fields})
        if stored > budget:
            raise SearchError(f"internal error: rule chose a spec of {stored:,} bytes over the "
                              f"budget of {budget:,}")
        return stage(self.name, strategy, ctx, space, result, spec, t0,
                     {"memory_budget": budget})
