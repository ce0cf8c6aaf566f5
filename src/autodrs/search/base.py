"""The plug-in points of the search engine: search spaces, methods and their results.

A ``SearchSpace`` owns one part of the ArchSpec and offers two faces: a discrete one for
black-box strategies (``suggest`` a decision from an ``optuna.Trial``, ``apply`` it to a
spec) and a relaxed one for gradient strategies (a ``Supernet`` whose architecture
parameters are trained, and ``derive()`` back to a discrete decision).

A ``Method`` is what ``autodrs search --methods NAME`` runs: a space, a strategy and a
performance-estimation setting, or an algorithm of its own; it reads the spec so far from
the ``SearchContext`` and returns a ``StageResult`` with the refined spec and what it found.
Adding a method means one new module with a ``@register_method`` class.

The method contract (checked for every registered method by ``tests/test_conformance.py``):

1. ``strategies`` lists every strategy the method accepts, the default first; names come
   from ``autodrs.search.strategies.STRATEGIES``. ``resolve_strategy(ctx)`` rejects any other.
2. ``search(ctx)`` starts from ``ctx.spec`` (never edits it in place) and returns a
   ``StageResult`` whose ``spec`` validates against ``ctx.dataset.schema``.
3. The same ``ctx.seed`` and data give the same spec: seed every sampler, generator and
   ``torch`` initialisation from ``ctx.seed`` (``ctx.train.seed`` is the same number).
4. ``ctx.trials`` caps the number of black-box trials (or candidates evaluated) and
   ``ctx.budget_seconds`` the wall time: stop cleanly when either runs out and keep the best
   so far (``ctx.out_of_budget()``). ``run_blackbox`` does both for black-box methods.
5. ``ctx.options["fast"]`` asks for the cheapest run that still exercises the whole method
   (tiny supernets, one epoch, few candidates): the conformance suite and smoke runs set it.
6. Bad arguments raise ``SearchError`` (or ``SpecError``) with a message naming the problem.
7. ``objectives`` lists what ``ctx.options["objectives"]`` may name for the method (validation
   AUC first); ``resolve_strategy`` refuses any other, and more than one under a strategy
   outside ``multi_objective_strategies``. A method that takes several returns the Pareto
   front in ``StageResult.pareto`` (one point per front trial: ``valid_auc``, one key per
   cost objective, ``decision``) and the objective names in ``extra["pareto_objectives"]``.
8. A search that found nothing (every trial cut by the budget) returns ``no_result(...)``:
   its input spec, unchanged, marked ``extra["no_result"]`` with the reason, never a spec
   presented as found; one that cannot work (every trial failed) raises.
"""

from __future__ import annotations

import re
import time
from abc import ABC, abstractmethod
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from torch import nn

from autodrs.data.dataset import Dataset
from autodrs.spec import ArchSpec
from autodrs.train.trainer import TrainConfig

if TYPE_CHECKING:
    import optuna


class SearchError(ValueError):
    """A search was asked for something it cannot do (bad method, strategy or budget)."""


BUDGET_UNITS = {"": 1.0, "s": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0}


def parse_budget(text: str | None) -> float | None:
    """``90s``, ``10m``, ``1.5h`` or plain seconds -> seconds (None stays None)."""
    if text is None or text == "":
        return None
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(s|m|min|h)?\s*", text.lower())
    if not match:
        raise SearchError(f"cannot read budget {text!r}; write it like 90s, 10m or 1h")
    seconds = float(match.group(1)) * BUDGET_UNITS[match.group(2) or ""]
    if seconds <= 0:
        raise SearchError(f"budget must be > 0, got {text!r}")
    return seconds


def option(ctx: SearchContext, key: str, default: Any, kind: type = float) -> Any:
    """``ctx.options[key]`` (``default`` when absent) as ``kind``, with a clear error naming
    a bad value; None stays None (an option left unset)."""
    value = ctx.options.get(key, default)
    if value is None:
        return None
    try:
        return kind(value)
    except (TypeError, ValueError) as e:
        raise SearchError(f"option {key}={value!r} is not a valid {kind.__name__}") from e


# the objectives a search may trade validation AUC against (all minimised): embedding /
# total parameters, stored embedding / total bytes, and forward latency on 1,024 rows
COST_OBJECTIVES = ("embedding_params", "embedding_bytes", "params", "bytes", "latency_ms")
OBJECTIVES = ("auc", *COST_OBJECTIVES)


def requested_objectives(ctx: SearchContext) -> tuple[str, ...]:
    """``ctx.options["objectives"]`` (a tuple or a comma-separated text; default ``auc``),
    checked: validation AUC first, then distinct cost objectives."""
    raw = ctx.options.get("objectives") or ("auc",)
    names = [n.strip() for n in (raw.split(",") if isinstance(raw, str) else raw)
             if str(n).strip()] or ["auc"]
    unknown = [n for n in names if n not in OBJECTIVES]
    if unknown:
        raise SearchError(f"unknown objective {unknown[0]!r}; choose auc, then any of "
                          f"{', '.join(COST_OBJECTIVES)}")
    if names[0] != "auc" or "auc" in names[1:] or len(set(names)) != len(names):
        raise SearchError(f"objectives must be auc followed by distinct cost objectives "
                          f"({', '.join(COST_OBJECTIVES)}); got {','.join(names)}")
    return tuple(names)


def validates_alike(auc: float, logloss: float, ref_auc: float, ref_logloss: float,
                    tolerance: float, logloss_tolerance: float | None = None) -> bool:
    """Whether a model validates alike a reference (the best one measured): its validation
    AUC within ``tolerance`` below the reference's and, given ``logloss_tolerance``, its
    validation logloss within that above the reference's. The rules that prefer the smaller
    of two models that validate alike (ERASE's k, frequency pruning's threshold, the
    pipeline's guard) use it. AUC alone is a coarse judge on validation sets of ~10k rows:
    on movielens-100k, dropping two fields moved validation AUC by 0.0009 and validation
    logloss by 0.005, and test AUC fell 0.007."""
    if auc < ref_auc - tolerance:
        return False
    return logloss_tolerance is None or logloss <= ref_logloss + logloss_tolerance


@dataclass
class SearchContext:
    """Everything a stage needs: data, the spec so far, the training config, the budget.

    ``out_dir`` is the stage's folder (its Optuna storage lives there); ``resume`` continues
    a study found there; ``backend`` is ``local`` or ``ray`` (``ray_address`` joins an
    existing cluster). ``options`` holds estimation settings shared by methods: ``fast``,
    ``subsample`` (fraction or row count of train used per trial), ``epochs`` (per trial),
    ``pruner`` (none, median, sha, hyperband), ``warm_start``, ``estimation``.
    """

    dataset: Dataset
    spec: ArchSpec
    train: TrainConfig
    seed: int = 2026
    out_dir: Path | None = None
    budget_seconds: float | None = None
    trials: int | None = None
    strategy: str | None = None
    options: dict[str, Any] = field(default_factory=dict)
    started: float = field(default_factory=time.monotonic)
    resume: bool = False
    backend: str = "local"
    ray_address: str | None = None

    def remaining(self) -> float | None:
        if self.budget_seconds is None:
            return None
        return self.budget_seconds - (time.monotonic() - self.started)

    def out_of_budget(self) -> bool:
        left = self.remaining()
        return left is not None and left <= 0

    @property
    def fast(self) -> bool:
        return bool(self.options.get("fast", False))


@dataclass
class StageResult:
    """What one search stage found. ``ranking`` is best first; see DESIGN.md for the shape
    per component (field names, crosses as lists of names, interactions as lists of names)."""

    method: str
    strategy: str
    spec: ArchSpec
    ranking: list[Any] = field(default_factory=list)
    scores: dict[str, float] = field(default_factory=dict)
    dims: dict[str, float] | None = None
    bytes: int | None = None
    dag: dict[str, Any] | None = None
    pareto: list[dict[str, Any]] | None = None
    trials: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def no_result(self) -> str | None:
        """Why the stage found nothing (its spec is then its input), or None."""
        reason = self.extra.get("no_result")
        return None if reason is None else str(reason)

    def to_dict(self) -> dict[str, Any]:
        entry: dict[str, Any] = {
            "method": self.method, "strategy": self.strategy,
            "ranking": self.ranking, "scores": self.scores, "seconds": round(self.seconds, 3),
        }
        for key in ("dims", "bytes", "dag", "pareto"):
            value = getattr(self, key)
            if value is not None:
                entry[key] = value
        if self.trials:
            entry["trials"] = self.trials
        entry.update(self.extra)
        return entry


def no_result(method: str, strategy: str, spec: ArchSpec, reason: str, seconds: float,
              trials: list[dict[str, Any]] | None = None,
              extra: dict[str, Any] | None = None) -> StageResult:
    """The result of a search that found nothing: ``spec`` (its input) goes on unchanged,
    with the reason in ``extra["no_result"]`` for result.json, the report and the console."""
    return StageResult(method=method, strategy=strategy, spec=spec.copy(), seconds=seconds,
                       trials=trials or [], extra={**(extra or {}), "no_result": reason})


class Method(ABC):
    """A named search method (a preset of space, strategy and estimation, or an algorithm)."""

    name: ClassVar[str]
    component: ClassVar[str]
    strategies: ClassVar[tuple[str, ...]]  # accepted strategies; the first is the default
    # what ``--objectives`` may name (validation AUC first; more than one only under
    # ``multi_objective_strategies``): the method then searches a Pareto front
    objectives: ClassVar[tuple[str, ...]] = ("auc",)
    multi_objective_strategies: ClassVar[tuple[str, ...]] = ("random", "tpe", "evolution")
    # the spec it returns is one it retrained itself with the run's trainer (an ERASE point,
    # a frequency threshold, an encoder), so a validation guard judges it without a retrain
    retrains_its_choice: ClassVar[bool] = False
    # the spec it returns (or, finding nothing, its input) is one it fitted through
    # ``fit_spec`` on the stage's rows with the command's training config at the command's
    # seed, so inside ``shared_fits`` the command's retrain of it on those rows is that fit
    # (AutoCTR's full fits): a command whose only stage it is keeps no time for a retrain
    fits_its_choice: ClassVar[bool] = False
    # a method that needs more than one dataset runs through its own command (e.g. AutoFT
    # through ``autodrs transfer``); ``search`` refuses it before any work
    command: ClassVar[str | None] = None

    def retrains_choice(self, options: dict[str, Any]) -> bool:
        """Whether, under these options, the returned spec is one the method retrained itself
        (``retrains_its_choice`` unless a method's options decide it)."""
        return self.retrains_its_choice

    @abstractmethod
    def search(self, ctx: SearchContext) -> StageResult:
        """Search from ``ctx.spec`` and return the refined spec with what was found."""

    def resolve_strategy(self, ctx: SearchContext) -> str:
        strategy = ctx.strategy or self.strategies[0]
        if strategy not in self.strategies:
            raise SearchError(f"method {self.name!r} does not support strategy {strategy!r}; "
                              f"it supports {', '.join(self.strategies)}")
        self.resolve_objectives(ctx, strategy)
        return strategy

    def resolve_objectives(self, ctx: SearchContext, strategy: str) -> tuple[str, ...]:
        """The objectives asked for, refused with a clear error where this method (under
        ``strategy``) cannot honour them."""
        wanted = requested_objectives(ctx)
        if len(wanted) == 1:
            return wanted
        if len(self.objectives) > 1 and strategy not in self.multi_objective_strategies:
            raise SearchError(
                f"method {self.name!r} searches a Pareto front only with strategy "
                f"{' or '.join(self.multi_objective_strategies)}, not {strategy!r}; drop "
                f"--objectives {','.join(wanted)} or change the strategy")
        refused = [o for o in wanted if o not in self.objectives]
        if refused:
            takers = sorted(n for n, m in METHODS.items() if len(m.objectives) > 1)
            what = (f"optimises {', '.join(self.objectives)}" if len(self.objectives) > 1
                    else "optimises its own criterion only")
            raise SearchError(f"method {self.name!r} {what}; it cannot take --objectives "
                              f"{','.join(wanted)} (multi-objective search: "
                              f"{', '.join(takers) or 'none'})")
        return wanted


METHODS: dict[str, type[Method]] = {}


def register_method(cls: type[Method]) -> type[Method]:
    if cls.name in METHODS:
        raise ValueError(f"method {cls.name!r} registered twice")
    METHODS[cls.name] = cls
    return cls


def get_method(name: str) -> Method:
    import autodrs.methods  # noqa: F401  (fills the registry)

    if name not in METHODS:
        raise SearchError(f"unknown method {name!r}; available: {', '.join(sorted(METHODS))}")
    return METHODS[name]()


class Supernet(nn.Module, ABC):
    """The relaxed face of a space: a model with architecture parameters."""

    @abstractmethod
    def arch_parameters(self) -> list[nn.Parameter]:
        """The architecture parameters (trained by the strategy's own optimiser)."""

    def weight_parameters(self) -> list[nn.Parameter]:
        arch = {id(p) for p in self.arch_parameters()}
        return [p for p in self.parameters() if id(p) not in arch]

    @abstractmethod
    def derive(self) -> dict[str, Any]:
        """Turn the architecture parameters back into a discrete decision."""

    def fixed(self, decision: dict[str, Any]) -> AbstractContextManager[Supernet]:
        """A context in which the supernet computes only the subnet of ``decision`` (weight
        sharing: evaluate a candidate with the supernet's weights, no retraining).
        Supernets that can express a single subnet override this."""
        raise SearchError(f"{type(self).__name__} cannot pin a single subnet for weight sharing")


class SearchSpace(ABC):
    """One part of the ArchSpec, searchable by black-box and (where relaxable) gradient."""

    name: ClassVar[str]

    @abstractmethod
    def suggest(self, trial: optuna.Trial, ctx: SearchContext) -> dict[str, Any]:
        """Sample a discrete decision through an Optuna trial."""

    @abstractmethod
    def apply(self, spec: ArchSpec, decision: dict[str, Any]) -> ArchSpec:
        """Return a copy of ``spec`` with ``decision`` written into it."""

    def supernet(self, ctx: SearchContext) -> Supernet:
        raise SearchError(f"space {self.name!r} has no relaxed face; use a black-box strategy")

    def grid(self, ctx: SearchContext) -> dict[str, list[Any]]:
        """The discrete choices of every parameter, for the grid strategy. By default they are
        read by running ``suggest`` once on a probe trial (conditional parameters of other
        branches are not seen; such spaces override this)."""
        from autodrs.search.strategies import probe_grid

        return probe_grid(self, ctx)
