"""Field selection by black-box search over the keep/drop space (``FieldSelectionSpace``).

``marlfs``: MARLFS-style multi-agent RL (Liu, Fu, Wang, et al.; KDD 2019, TKDE 2021). One
agent per field chooses keep or drop; all act together; the joint subset's reward is its
validation AUC under cheap estimation (the engine's ``Estimator``: a subsample of train,
few epochs). The agents are the engine's RL strategy, one REINFORCE policy per field,
``z_f <- z_f + lr * ((R - b) / s * (onehot(a_f) - softmax(z_f)) + entropy term)``: every
agent learns from the shared reward against a moving baseline, where MARLFS's DQN agents
credit the reward to the selecting agents only.

``fieldsearch``: the same space searched by random, TPE, evolution (NSGA-II) or RL.

Both report, per field, the mean reward of the trials that kept it minus that of the
trials that dropped it (0 when a field was never, or always, kept): the agents' estimate
of what selecting the field is worth. The chosen subset is the best trial's. A search in
which no trial finished (the budget ran out first) found no subset: the stage returns
``no_result`` with that reason and its input spec (result.json, the report and the console
say so) rather than ranking every field at zero and choosing a subset by ERASE.
"""

from __future__ import annotations

import math

from autodrs.methods.selection.common import FieldScores, NothingFound, SelectionMethod
from autodrs.methods.selection.space import FieldSelectionSpace
from autodrs.search.base import SearchContext, register_method
from autodrs.search.blackbox import run_blackbox
from autodrs.search.strategies import BLACKBOX_STRATEGIES


def marginal_rewards(fields: list[str], trials: list[dict]) -> dict[str, float]:
    """Per field: mean value of complete trials keeping it minus mean of those dropping it."""
    done = [t for t in trials if t["state"] == "COMPLETE" and t.get("values")
            and math.isfinite(t["values"][0]) and "decision" in t]
    out = {}
    for f in fields:
        kept = [t["values"][0] for t in done if f in t["decision"]["keep"]]
        dropped = [t["values"][0] for t in done if f not in t["decision"]["keep"]]
        out[f] = (sum(kept) / len(kept) - sum(dropped) / len(dropped)
                  if kept and dropped else 0.0)
    return out


class BlackBoxSelection(SelectionMethod):
    retrains_its_choice = False  # its subset is the best trial's, not a full retrain

    def score_fields(self, ctx: SearchContext, fields: list[str], strategy: str) -> FieldScores:
        result = run_blackbox(FieldSelectionSpace(fields), ctx, strategy, method=self.name)
        if result.best_decision is None:
            why = getattr(result, "reason", None) or "no trial finished"
            raise NothingFound(f"{self.name} found no field subset: {why}; give it more "
                               "--budget", result.trials)
        subset = result.best_decision["keep"]
        extra = {"trials_completed": result.completed, "best_value": result.best_value}
        policy = getattr(result.study.sampler, "policy", None)
        if policy is not None:
            extra["policy"] = {k.removeprefix("keep:"): v[0] for k, v in policy().items()}
        return FieldScores(scores=marginal_rewards(fields, result.trials), subset=subset,
                           extra=extra, trials=result.trials)


@register_method
class MARLFS(BlackBoxSelection):
    name = "marlfs"
    strategies = ("rl",)


@register_method
class FieldSearch(BlackBoxSelection):
    name = "fieldsearch"
    strategies = ("tpe", *[s for s in BLACKBOX_STRATEGIES if s != "tpe"])
