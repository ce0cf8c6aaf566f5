"""A REINFORCE controller written as an Optuna sampler (the RL strategy).

The policy holds one vector of logits per parameter (one logit per categorical choice or
integer value), as in the NAS controllers of Zoph & Le (ICLR 2017), reduced to independent
per-choice policies. After each finished trial with reward R (the objective, negated when
minimising), the baseline b and the reward scale s are exponential moving averages, and

    z_p <- z_p + lr * ((R - b) / s * (onehot(a_p) - softmax(z_p)) + beta * dH/dz_p)

for every parameter p the trial chose ``a_p``; ``H`` is the policy entropy, whose gradient
``-pi * (log pi + H)`` keeps the controller exploring.

The policy is rebuilt from the study's finished trials (replayed in trial order, cached),
and the draw of trial ``n`` uses a generator seeded by ``(seed, n, parameter)``: a resumed
study samples exactly as an uninterrupted one would.
"""

from __future__ import annotations

import math
import zlib
from typing import Any

import numpy as np
import optuna
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    IntDistribution,
)
from optuna.samplers import BaseSampler, RandomSampler
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, TrialState

MAX_INT_CHOICES = 1024


class ReinforceSampler(BaseSampler):
    """REINFORCE over categorical and integer parameters; continuous ones are drawn uniformly."""

    def __init__(self, seed: int = 0, lr: float = 0.5, baseline_decay: float = 0.8,
                 entropy: float = 0.01) -> None:
        if lr <= 0:
            raise ValueError(f"RL learning rate must be > 0, got {lr}")
        if not 0.0 <= baseline_decay < 1.0:
            raise ValueError(f"baseline decay must be in [0, 1), got {baseline_decay}")
        self.seed = seed
        self.lr = lr
        self.decay = baseline_decay
        self.entropy = entropy
        self._logits: dict[str, np.ndarray] = {}
        self._seen: list[int] = []
        self._baseline: float | None = None
        self._scale = 1.0

    # ------------------------------------------------------------------ policy
    @staticmethod
    def choices(distribution: BaseDistribution) -> list[Any] | None:
        """The discrete choices of a distribution, or None when it is continuous."""
        if isinstance(distribution, CategoricalDistribution):
            return list(distribution.choices)
        if isinstance(distribution, IntDistribution) and not distribution.log:
            values = list(range(distribution.low, distribution.high + 1, distribution.step))
            if len(values) > MAX_INT_CHOICES:
                raise ValueError(f"integer parameter with {len(values)} values is too large for "
                                 f"the RL policy (at most {MAX_INT_CHOICES})")
            return values
        return None

    def probabilities(self, name: str, n: int) -> np.ndarray:
        logits = self._logits.get(name)
        if logits is None or len(logits) != n:
            return np.full(n, 1.0 / n)
        e = np.exp(logits - logits.max())
        return e / e.sum()

    def _reward(self, study: optuna.Study, trial: FrozenTrial) -> float | None:
        if trial.state == TrialState.COMPLETE and trial.values:
            value = trial.values[0]
        elif trial.state == TrialState.PRUNED and trial.intermediate_values:
            value = trial.intermediate_values[max(trial.intermediate_values)]
        else:
            return None
        if not math.isfinite(value):
            return None
        return -value if study.directions[0] == StudyDirection.MINIMIZE else value

    def _update(self, study: optuna.Study) -> None:
        finished = [t for t in study.get_trials(deepcopy=False)
                    if t.state in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)]
        numbers = sorted(t.number for t in finished)
        if numbers[: len(self._seen)] != self._seen:
            # the history changed under us (another process); replay it from the start
            self._logits, self._seen, self._baseline, self._scale = {}, [], None, 1.0
        by_number = {t.number: t for t in finished}
        for number in numbers[len(self._seen):]:
            self._learn(study, by_number[number])
            self._seen.append(number)

    def _learn(self, study: optuna.Study, trial: FrozenTrial) -> None:
        reward = self._reward(study, trial)
        if reward is None:
            return
        if self._baseline is None:
            self._baseline = reward
            return
        advantage = (reward - self._baseline) / self._scale
        self._baseline = self.decay * self._baseline + (1 - self.decay) * reward
        deviation = abs(reward - self._baseline)
        self._scale = max(1e-4, self.decay * self._scale + (1 - self.decay) * deviation)
        for name, dist in trial.distributions.items():
            options = self.choices(dist)
            if options is None or name not in trial.params:
                continue
            n = len(options)
            logits = self._logits.setdefault(name, np.zeros(n))
            if len(logits) != n:
                logits = self._logits[name] = np.zeros(n)
            pi = self.probabilities(name, n)
            onehot = np.zeros(n)
            onehot[options.index(trial.params[name])] = 1.0
            log_pi = np.log(pi + 1e-12)
            entropy_grad = -pi * (log_pi + float(-(pi * log_pi).sum()))
            logits += self.lr * (advantage * (onehot - pi) + self.entropy * entropy_grad)

    # ------------------------------------------------------------- sampler API
    def infer_relative_search_space(self, study: optuna.Study,
                                    trial: FrozenTrial) -> dict[str, BaseDistribution]:
        return {}

    def sample_relative(self, study: optuna.Study, trial: FrozenTrial,
                        search_space: dict[str, BaseDistribution]) -> dict[str, Any]:
        return {}

    def before_trial(self, study: optuna.Study, trial: FrozenTrial) -> None:
        if len(study.directions) != 1:
            raise ValueError("the RL strategy optimises one objective; use 'evolution' "
                             "for multi-objective searches")
        self._update(study)

    def sample_independent(self, study: optuna.Study, trial: FrozenTrial, param_name: str,
                           param_distribution: BaseDistribution) -> Any:
        rng = np.random.default_rng([self.seed, trial.number, zlib.crc32(param_name.encode())])
        options = self.choices(param_distribution)
        if options is None:
            uniform = RandomSampler(seed=int(rng.integers(2**31)))
            return uniform.sample_independent(study, trial, param_name, param_distribution)
        pi = self.probabilities(param_name, len(options))
        return options[int(rng.choice(len(options), p=pi))]

    def policy(self) -> dict[str, list[float]]:
        """The current choice probabilities per parameter (for reports and tests)."""
        return {name: self.probabilities(name, len(z)).round(4).tolist()
                for name, z in self._logits.items()}
