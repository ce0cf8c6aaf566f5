"""``pairsearch``: the engine's black-box strategies (random, TPE, evolution, REINFORCE)
over ``PairSelectionSpace``, the baseline the gradient methods are measured against.

Each trial trains the FM/DeepFM spec with the sampled pairs at the engine's low fidelity
and scores it by validation AUC; the best trial's pairs are kept. A pair's score is its
marginal effect over the finished trials: the mean validation AUC of the trials that kept
it minus that of the trials that dropped it. With no finished trial it returns
``no_result`` (its input spec), never every pair as if kept.
"""

from __future__ import annotations

import time
from dataclasses import replace
from statistics import mean

from optuna.trial import TrialState

from autodrs.methods.interaction.common import (
    candidate_interactions,
    interaction_result,
    start_search,
)
from autodrs.methods.interaction.space import KEEP, PairSelectionSpace
from autodrs.search.base import (
    Method,
    SearchContext,
    StageResult,
    no_result,
    register_method,
)
from autodrs.search.blackbox import run_blackbox


@register_method
class PairSearch(Method):
    """Black-box keep/drop search over field pairs. Options: ``backbone`` (deepfm | fm) and
    the engine's estimation options (``epochs``, ``subsample``, ``pruner``, ...)."""

    name = "pairsearch"
    component = "interaction"
    strategies = ("random", "tpe", "evolution", "rl")

    def search(self, ctx: SearchContext) -> StageResult:
        strategy, t0, spec, names = start_search(self, ctx)
        pairs = [(names[i], names[j]) for i, j in candidate_interactions(names, 2)]
        space = PairSelectionSpace(pairs)
        result = run_blackbox(space, replace(ctx, spec=spec), strategy, method=self.name)
        if not result.found:
            # nothing is known for or against any pair: the input goes on, marked
            return no_result(self.name, strategy, ctx.spec,
                             f"pairsearch found no interactions: {result.reason}",
                             time.perf_counter() - t0, trials=result.trials)
        done = [t for t in result.study.get_trials(deepcopy=False,
                                                   states=(TrialState.COMPLETE,))
                if t.values is not None]
        scores: dict[tuple[str, ...], float] = {}
        for pair in pairs:
            kept = [t.values[0] for t in done if t.params.get(space.param(pair)) == KEEP]
            dropped = [t.values[0] for t in done if t.params.get(space.param(pair)) != KEEP]
            scores[pair] = mean(kept) - mean(dropped) if kept and dropped else 0.0
        kept_pairs = sorted(space.apply(spec, result.best_decision).interactions or [],
                            key=lambda i: -scores[(i.fields[0], i.fields[1])])
        stage = interaction_result(
            self.name, strategy, spec, scores, kept_pairs, time.perf_counter() - t0,
            extra={"best_value": result.best_value, "completed_trials": result.completed},
        )
        stage.trials = result.trials
        return stage
