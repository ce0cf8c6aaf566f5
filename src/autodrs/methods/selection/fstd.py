"""FSTD: feature selection as temporal-difference reinforcement learning over subsets (Fard,
Hamzeh, Hashemi; Computers & Mathematics with Applications 2013, "Using reinforcement
learning to find an optimal set of features").

The states are field subsets, an action adds one field, and the reward of a step is the
gain of the evaluator's validation AUC, ``r = AUC(s + f) - AUC(s)`` (``AUC({}) = 0.5``).
Each episode starts from the empty set and adds fields until every field is in (or the
budget ends it). The agent is epsilon-greedy on ``q(s, f) = r(s, f) + gamma V(s + f)``,
where a reward not yet measured is estimated by the field's average of rewards so far
(AOR, every field tried once first); after each step the state value learns by TD(0),
``V(s) <- V(s) + alpha (r + gamma V(s') - V(s))``. A field's score is its AOR: the mean
gain of adding it, over every state the agent added it to. The shared ERASE rule cuts the
ranking; ``extra["best_subset"]`` is the best subset the agent evaluated.

The evaluator is cheap by design, since an episode measures up to one subset per field:
an L2 logistic regression (``evaluator="lr"``) or a 20-round histogram GBDT
(``evaluator="trees"``, sees interactions) on the fields as target-encoded columns
(``tabular.target_encoded``), each distinct subset fitted once. The paper's wrapper
classifiers and its settings of alpha, gamma and epsilon are not reproduced; these are
autodrs's.

Options: ``episodes`` (40; ``--trials`` caps the distinct subsets evaluated), ``epsilon``
(0.2), ``alpha`` (0.5), ``gamma`` (1.0: episodes are short and end), ``evaluator``
(``lr``), ``fstd_rows`` (train rows used, 50,000).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.preprocessing import StandardScaler

from autodrs.methods.selection.common import (
    FieldScores,
    NothingFound,
    SelectionMethod,
    option,
)
from autodrs.methods.selection.tabular import target_encoded
from autodrs.search.base import SearchContext, SearchError, register_method

EVALUATORS = ("lr", "trees")


def subset_evaluator(x: np.ndarray, y: np.ndarray, xv: np.ndarray, yv: np.ndarray,
                     kind: str, seed: int) -> Callable[[tuple[int, ...]], float]:
    """Validation AUC of the evaluator fitted on the columns of a subset."""
    scaler = StandardScaler().fit(x)
    x, xv = scaler.transform(x), scaler.transform(xv)

    def evaluate(cols: tuple[int, ...]) -> float:
        if not cols:
            return 0.5
        index = list(cols)
        if kind == "lr":
            model = LogisticRegression(C=1.0, max_iter=200).fit(x[:, index], y)
        else:
            model = HistGradientBoostingClassifier(
                max_iter=20, max_depth=4, early_stopping=False, random_state=seed
            ).fit(x[:, index], y)
        return float(roc_auc_score(yv, model.predict_proba(xv[:, index])[:, 1]))

    return evaluate


class TDAgent:
    """Tabular TD(0) over subsets with epsilon-greedy additions guided by each field's
    average of rewards."""

    def __init__(self, n: int, evaluate: Callable[[tuple[int, ...]], float], epsilon: float,
                 alpha: float, gamma: float, rng: np.random.Generator) -> None:
        self.n = n
        self.evaluate = evaluate
        self.epsilon, self.alpha, self.gamma = epsilon, alpha, gamma
        self.rng = rng
        self.values: dict[frozenset[int], float] = {}
        self.aucs: dict[frozenset[int], float] = {frozenset(): 0.5}
        self.reward_sum = np.zeros(n)
        self.reward_count = np.zeros(n)

    def auc(self, state: frozenset[int]) -> float:
        if state not in self.aucs:
            self.aucs[state] = self.evaluate(tuple(sorted(state)))
        return self.aucs[state]

    def aor(self, f: int) -> float:
        return self.reward_sum[f] / self.reward_count[f] if self.reward_count[f] else np.inf

    def choose(self, state: frozenset[int]) -> int:
        options = [f for f in range(self.n) if f not in state]
        if self.rng.random() < self.epsilon:
            return int(self.rng.choice(options))

        def q(f: int) -> float:
            nxt = state | {f}
            reward = (self.aucs[nxt] - self.aucs[state]) if nxt in self.aucs else self.aor(f)
            return reward + self.gamma * self.values.get(nxt, 0.0)

        best = max(q(f) for f in options)
        return int(self.rng.choice([f for f in options if q(f) == best]))

    def episode(self, stop: Callable[[], bool]) -> int:
        """One episode from the empty set; returns the steps taken (fewer when ``stop``)."""
        state: frozenset[int] = frozenset()
        steps = 0
        while len(state) < self.n and not stop():
            f = self.choose(state)
            nxt = state | {f}
            reward = self.auc(nxt) - self.auc(state)
            self.reward_sum[f] += reward
            self.reward_count[f] += 1
            v = self.values.get(state, 0.0)
            self.values[state] = v + self.alpha * (reward + self.gamma
                                                   * self.values.get(nxt, 0.0) - v)
            state = nxt
            steps += 1
        return steps


@register_method
class FSTD(SelectionMethod):
    name = "fstd"
    strategies = ("rl",)

    def score_fields(self, ctx: SearchContext, fields: list[str], strategy: str) -> FieldScores:
        episodes = option(ctx, "episodes", 5 if ctx.fast else 40, int)
        epsilon = option(ctx, "epsilon", 0.2)
        alpha = option(ctx, "alpha", 0.5)
        gamma = option(ctx, "gamma", 1.0)
        kind = ctx.options.get("evaluator", "lr")
        rows = option(ctx, "fstd_rows", 5_000 if ctx.fast else 50_000, int)
        if episodes < 1 or not 0 <= epsilon <= 1 or not 0 < alpha <= 1 or not 0 <= gamma <= 1:
            raise SearchError(f"FSTD needs episodes >= 1, epsilon in [0, 1], alpha in (0, 1] "
                              f"and gamma in [0, 1]; got {episodes}, {epsilon}, {alpha}, "
                              f"{gamma}")
        if kind not in EVALUATORS:
            raise SearchError(f"option evaluator must be one of {', '.join(EVALUATORS)}, "
                              f"got {kind!r}")
        x, y, xv, yv = target_encoded(ctx.dataset, fields, "bucket", ctx.seed, rows)
        agent = TDAgent(len(fields), subset_evaluator(x, y, xv, yv, kind, ctx.seed),
                        epsilon, alpha, gamma, np.random.default_rng(ctx.seed))

        def stop() -> bool:
            # the empty set is not a measured subset
            measured = len(agent.aucs) - 1
            return ctx.out_of_budget() or (ctx.trials is not None and measured >= ctx.trials)

        done = 0
        for _ in range(episodes):
            if stop():
                break
            agent.episode(stop)
            done += 1
        if not agent.reward_count.any():
            raise NothingFound("fstd evaluated no subset: the budget or --trials ran out "
                               "first; give it more")
        scores = {f: float(agent.aor(i)) if agent.reward_count[i] else float("-inf")
                  for i, f in enumerate(fields)}
        scores = {f: (v if np.isfinite(v) else min(s for s in scores.values()
                                                   if np.isfinite(s)) - 1.0)
                  for f, v in scores.items()}
        best = max((s for s in agent.aucs if s), key=lambda s: (agent.aucs[s], -len(s)))
        return FieldScores(scores=scores, extra={
            "episodes": done, "subsets_evaluated": len(agent.aucs) - 1,
            "evaluator": kind, "best_subset": [fields[i] for i in sorted(best)],
            "best_subset_valid_auc": agent.aucs[best],
            "state_value_empty": agent.values.get(frozenset(), 0.0)})
