"""Strategy names and the Optuna samplers behind the black-box ones.

``random`` (RandomSampler), ``grid`` (GridSampler over the space's discrete choices),
``tpe`` (Bayesian, TPESampler), ``evolution`` (NSGA-II, single- or multi-objective) and
``rl`` (``ReinforceSampler``) are black-box; ``gradient`` trains a space's supernet.
``beam`` (AutoCross's beam search) and ``importance`` (a ranking read from a fitted model:
Lasso, GBDT, permutation importance) name methods' own algorithms.
"""

from __future__ import annotations

from typing import Any

import optuna

from autodrs.search.base import SearchContext, SearchError, SearchSpace
from autodrs.search.rl import ReinforceSampler

BLACKBOX_STRATEGIES = ("random", "grid", "tpe", "evolution", "rl")
OWN_STRATEGIES = ("beam", "importance")
STRATEGIES = (*BLACKBOX_STRATEGIES, "gradient", *OWN_STRATEGIES)
MULTI_OBJECTIVE = ("random", "tpe", "evolution")


def check_strategy(strategy: str, accepted: tuple[str, ...] = STRATEGIES) -> str:
    if strategy not in STRATEGIES:
        raise SearchError(f"unknown strategy {strategy!r}; choose from {', '.join(STRATEGIES)}")
    if strategy not in accepted:
        raise SearchError(f"strategy {strategy!r} is not available here; use one of "
                          f"{', '.join(accepted)}")
    return strategy


def make_sampler(strategy: str, space: SearchSpace, ctx: SearchContext,
                 n_objectives: int = 1) -> optuna.samplers.BaseSampler:
    """A seeded sampler for a black-box strategy (``ctx.options`` may tune it:
    ``population_size`` for evolution, ``startup_trials`` for TPE, ``rl_lr``)."""
    check_strategy(strategy, BLACKBOX_STRATEGIES)
    if n_objectives > 1 and strategy not in MULTI_OBJECTIVE:
        raise SearchError(f"strategy {strategy!r} optimises one objective; multi-objective "
                          f"searches use {', '.join(MULTI_OBJECTIVE)}")
    seed = ctx.seed
    trials = ctx.trials or 20
    opts = ctx.options
    if strategy == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if strategy == "grid":
        return optuna.samplers.GridSampler(space.grid(ctx), seed=seed)
    if strategy == "tpe":
        startup = int(opts.get("startup_trials", min(10, max(2, trials // 3))))
        return optuna.samplers.TPESampler(seed=seed, n_startup_trials=startup)
    if strategy == "evolution":
        # a population of about a third of the budget gives a few generations
        population = int(opts.get("population_size", min(50, max(2, trials // 3))))
        return optuna.samplers.NSGAIISampler(seed=seed, population_size=population)
    return ReinforceSampler(seed=seed, lr=float(opts.get("rl_lr", 0.5)))


class _GridProbe:
    """Stands in for an ``optuna.Trial`` and records each parameter's discrete choices."""

    def __init__(self) -> None:
        self.grid: dict[str, list[Any]] = {}
        self.params: dict[str, Any] = {}
        self.user_attrs: dict[str, Any] = {}
        self.number = 0

    def _take(self, name: str, values: list[Any]) -> Any:
        self.grid[name] = values
        self.params[name] = values[0]
        return values[0]

    def suggest_categorical(self, name: str, choices: Any) -> Any:
        return self._take(name, list(choices))

    def suggest_int(self, name: str, low: int, high: int, step: int = 1,
                    log: bool = False) -> int:
        return int(self._take(name, list(range(low, high + 1, step))))

    def suggest_float(self, name: str, low: float, high: float, step: float | None = None,
                      log: bool = False) -> float:
        if step is None:
            raise SearchError(f"the grid strategy needs discrete choices, but parameter "
                              f"{name!r} is continuous ({low}..{high}); use random, tpe, "
                              "evolution or rl")
        n = int(round((high - low) / step))
        return float(self._take(name, [low + i * step for i in range(n + 1)]))

    def set_user_attr(self, key: str, value: Any) -> None:
        self.user_attrs[key] = value


def probe_grid(space: SearchSpace, ctx: SearchContext) -> dict[str, list[Any]]:
    probe = _GridProbe()
    space.suggest(probe, ctx)  # type: ignore[arg-type]
    if not probe.grid:
        raise SearchError(f"space {space.name!r} suggested no parameters; nothing to grid over")
    return probe.grid


def make_pruner(name: str | None, epochs: int) -> optuna.pruners.BasePruner:
    """``none``, ``median`` (MedianPruner), ``sha`` (successive halving) or ``hyperband``
    on the per-epoch validation AUC that trials report."""
    name = name or "none"
    if name == "none":
        return optuna.pruners.NopPruner()
    if name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=0)
    if name == "sha":
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=1, reduction_factor=2)
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=max(1, epochs),
                                              reduction_factor=2)
    raise SearchError(f"unknown pruner {name!r}; choose none, median, sha or hyperband")
