"""AutoFeature (Khawar, Hang, Ren, Liu, Li, Zhang; CIKM 2020, "AutoFeature: Searching for
Feature Interactions and Their Architectures for CTR Prediction"): for every field pair,
whether it interacts and through which function.

Space: per pair one of ``plus`` (add), ``multiply`` (Hadamard product, read out),
``concat``, ``generalised`` (a bilinear kernel product) and ``none``
(``PairFunctionSpace``). Strategy: a black-box search over the space through the engine's
``run_blackbox``: evolution (NSGA-II: tournament selection, uniform crossover and per-gene
mutation of the function genes, default), random, TPE or the REINFORCE controller. The
paper partitions the space with a tree of Naive Bayes classifiers and samples promising
subspaces more often; an evolutionary search plays that role here (no official code was
published). Each candidate is scored by the engine's cheap estimation (a few epochs,
optionally on a subsample); the best candidate's spec is returned. With ``--objectives
auc,<cost>`` (random, TPE, evolution) the search is over the Pareto front of validation AUC
against the costs (``base.COST_OBJECTIVES``), returned with the most accurate point. When no
trial finishes inside the budget the stage reports that it found nothing.

A pair's score is the mean validation AUC of the finished trials that modelled it minus that
of the trials that dropped it (its marginal effect across the search).
"""

from __future__ import annotations

import time
from typing import Any

from autodrs.methods.blocks.common import NONE, function_result
from autodrs.methods.blocks.sif import candidate_functions
from autodrs.methods.blocks.space import PairFunctionSpace
from autodrs.methods.interaction.common import interaction_key
from autodrs.search.base import (
    OBJECTIVES,
    Method,
    SearchContext,
    StageResult,
    no_result,
    register_method,
)
from autodrs.search.blackbox import run_blackbox

AUTOFEATURE_FUNCTIONS = ("plus", "multiply", "concat", "generalised", NONE)


def marginal_scores(space: PairFunctionSpace,
                    trials: list[dict[str, Any]]) -> dict[tuple[str, str], float]:
    """Per pair: mean value of the complete trials modelling it minus that of the others."""
    done = [(float(t["values"][0]), t["decision"]) for t in trials
            if t.get("state") == "COMPLETE" and t.get("values")
            and isinstance(t.get("decision"), dict)]
    scores: dict[tuple[str, str], float] = {}
    for pair, key in zip(space.pairs, space.keys(), strict=True):
        kept = [v for v, d in done if d.get(key, NONE) != NONE]
        dropped = [v for v, d in done if d.get(key, NONE) == NONE]
        scores[pair] = (sum(kept) / len(kept) - sum(dropped) / len(dropped)
                        if kept and dropped else 0.0)
    return scores


@register_method
class AutoFeature(Method):
    """AutoFeature: a function (or none) per pair, by evolution or another black-box strategy.

    Options: ``functions`` (comma-separated candidates, default plus, multiply, concat,
    generalised, none), ``backbone`` (deepfm, default: the pair terms beside an MLP; or fm),
    and the engine's estimation options (``epochs``, ``subsample``, ``population_size``,
    ``pruner``).
    """

    name = "autofeature"
    component = "interaction_function"
    strategies = ("evolution", "random", "tpe", "rl")
    objectives = OBJECTIVES

    def search(self, ctx: SearchContext) -> StageResult:
        strategy = self.resolve_strategy(ctx)
        t0 = time.perf_counter()
        choices = candidate_functions(ctx, AUTOFEATURE_FUNCTIONS)
        backbone = str(ctx.options.get("backbone", "deepfm")).lower()
        space = PairFunctionSpace(ctx.dataset.schema, ctx.spec, choices, backbone)
        objectives = self.resolve_objectives(ctx, strategy)
        result = run_blackbox(space, ctx, strategy, method=self.name, objectives=objectives)
        if not result.found:
            return no_result(self.name, strategy, ctx.spec, str(result.reason),
                             time.perf_counter() - t0, trials=result.trials)
        decision = dict(result.best_decision or {})
        spec = space.apply(ctx.spec, decision)
        scores = marginal_scores(space, result.trials)
        functions = {interaction_key(p): decision[k] for p, k in zip(space.pairs, space.keys(),
                                                                      strict=True)}
        extra: dict[str, Any] = {"best_value": result.best_value,
                                 "completed_trials": result.completed}
        if result.pareto is not None:
            extra["pareto_objectives"] = list(objectives)
        stage = function_result(self.name, strategy, spec, scores, functions,
                                time.perf_counter() - t0, trials=result.trials, extra=extra)
        stage.pareto = result.pareto
        return stage
