"""Black-box search of a space's discrete face with an Optuna study.

``run_blackbox`` asks the strategy's sampler for a decision (``space.suggest``), writes it
into the spec (``space.apply``), scores the spec (``evaluate``; by default a cheap training
run, see ``estimation.Estimator``) and tells the study. Trials run one after the other, so
the same seed gives the same trials; they stop at ``ctx.trials`` or ``ctx.budget_seconds``,
whichever comes first, and the best spec so far is kept. A trial that raises or returns NaN
is recorded as failed and the search goes on; when every trial failed the search raises,
and when none finished (the budget ran out first) the result says so (``found`` is False,
``reason`` says why) instead of presenting a spec. With several ``objectives`` (validation
AUC, then costs: ``base.COST_OBJECTIVES``) the samplers search a Pareto front (NSGA-II with
``evolution``). With ``ctx.out_dir`` the study lives in
``out_dir/search.db`` (SQLite) and ``ctx.resume`` continues it; with ``ctx.backend="ray"``
trials run as Ray Tune trials (``search.raytune``).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from autodrs.search.base import SearchContext, SearchError, SearchSpace, option
from autodrs.search.estimation import Estimator
from autodrs.search.strategies import BLACKBOX_STRATEGIES, check_strategy, make_pruner, make_sampler
from autodrs.spec import ArchSpec

DEFAULT_TRIALS = 20
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
Evaluate = Callable[[ArchSpec, optuna.Trial], float | tuple[float, ...]]


@dataclass
class BlackBoxResult:
    """The best spec found, every trial, and the Pareto front of a multi-objective search."""

    best_spec: ArchSpec
    best_value: float | tuple[float, ...] | None
    trials: list[dict[str, Any]]
    pareto: list[dict[str, Any]] | None
    study: optuna.Study
    best_decision: dict[str, Any] | None = None
    objectives: tuple[str, ...] | None = None  # names of the values, when known
    reason: str | None = None  # why nothing was found (``found`` False)

    @property
    def completed(self) -> int:
        return sum(t["state"] == "COMPLETE" for t in self.trials)

    @property
    def found(self) -> bool:
        """Whether a trial finished (``best_spec`` is then its spec, else the input's)."""
        return self.best_decision is not None


def storage_url(out_dir: Path) -> str:
    return f"sqlite:///{Path(out_dir).resolve() / 'search.db'}"


def open_study(ctx: SearchContext, name: str, directions: tuple[str, ...],
               sampler: optuna.samplers.BaseSampler,
               pruner: optuna.pruners.BasePruner) -> optuna.Study:
    """Create the study (in ``ctx.out_dir/search.db`` when there is a run folder). Without
    ``ctx.resume`` an old study of the same name is replaced; with it, the study is
    continued and trials left running by a killed process are marked failed."""
    storage: optuna.storages.BaseStorage | None = None
    if ctx.out_dir is not None:
        Path(ctx.out_dir).mkdir(parents=True, exist_ok=True)
        storage = optuna.storages.RDBStorage(storage_url(ctx.out_dir))
        names = {s.study_name for s in optuna.get_all_study_summaries(storage)}
        if name in names and not ctx.resume:
            optuna.delete_study(study_name=name, storage=storage)
    study = optuna.create_study(storage=storage, study_name=name, sampler=sampler,
                                pruner=pruner, directions=list(directions),
                                load_if_exists=True)
    if [d.name.lower() for d in study.directions] != list(directions):
        raise SearchError(f"the stored study {name!r} optimises {study.directions}, not "
                          f"{list(directions)}; start a new run folder")
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        study._storage.set_trial_user_attr(t._trial_id, "error", "interrupted")
        study._storage.set_trial_state_values(t._trial_id, TrialState.FAIL)
    return study


def directions_of(objectives: tuple[str, ...]) -> tuple[str, ...]:
    """Validation AUC is maximised, logloss and every cost minimised."""
    return tuple("maximize" if o == "auc" else "minimize" for o in objectives)


def run_blackbox(space: SearchSpace, ctx: SearchContext, strategy: str,
                 evaluate: Evaluate | None = None,
                 directions: tuple[str, ...] | None = None, method: str = "",
                 objectives: tuple[str, ...] | None = None) -> BlackBoxResult:
    """Search ``space`` from ``ctx.spec`` with a black-box ``strategy``.

    ``objectives`` names the values (default ``("auc",)``; e.g. ``("auc",
    "embedding_bytes")`` for a Pareto front) and sets the ``directions``; ``evaluate(spec,
    trial)`` returns one value per objective (or direction, for values without names). By
    default it is an ``Estimator`` of the objectives. It may call ``trial.report`` and
    raise ``optuna.TrialPruned``; the trial's decision is in ``trial.user_attrs["decision"]``.
    """
    check_strategy(strategy, BLACKBOX_STRATEGIES)
    if objectives is not None:
        if directions is not None and tuple(directions) != directions_of(objectives):
            raise SearchError(f"directions {directions} do not match objectives {objectives}")
        directions = directions_of(objectives)
    directions = tuple(directions or ("maximize",))
    if any(d not in ("maximize", "minimize") for d in directions):
        raise SearchError(f"directions must be 'maximize' or 'minimize', got {directions}")
    if evaluate is None:
        if objectives is None:
            if len(directions) > 2:
                raise SearchError("name the objectives of a search with more than two "
                                  "directions (objectives=)")
            objectives = ("auc", "embedding_params")[: len(directions)]
        estimator = Estimator(ctx, objectives)
        if ctx.backend == "ray":
            # as many threads as CPUs a trial asks Ray for (--cpus-per-trial, default 1), so
            # concurrent trials share the CPUs instead of fighting
            cpus = option(ctx, "ray_cpus_per_trial", 1.0, float)
            estimator.config = replace(estimator.config, threads=max(1, int(cpus)))
        evaluate = estimator
    name = f"{method or space.name}-{strategy}"
    sampler = make_sampler(strategy, space, ctx, len(directions))
    epochs = option(ctx, "epochs", 1 if ctx.fast else min(ctx.train.epochs, 3), int)
    asked = ctx.options.get("pruner")
    if len(directions) > 1 and asked not in (None, "none"):
        raise SearchError(f"a pruner stops trials on one objective; --pruner {asked} cannot "
                          f"apply to a search over {len(directions)} objectives")
    pruner = make_pruner(asked if len(directions) == 1 else None, epochs)
    study = open_study(ctx, name, directions, sampler, pruner)

    # a trial cut short by a killed process does not use up the trial budget
    done = sum(t.user_attrs.get("error") != "interrupted"
               for t in study.get_trials(deepcopy=False, states=FINISHED))
    if ctx.trials is not None and ctx.trials <= 0:
        raise SearchError(f"trials must be > 0, got {ctx.trials}")
    wanted = ctx.trials if ctx.trials is not None else (
        None if ctx.budget_seconds is not None else DEFAULT_TRIALS)
    remaining = None if wanted is None else max(0, wanted - done)
    extra: dict[int, dict[str, Any]] = {}
    if (remaining is None or remaining > 0) and not ctx.out_of_budget():
        if ctx.backend == "ray":
            from autodrs.search.raytune import run_ray

            extra = run_ray(space, ctx, study, evaluate, directions, remaining)
        elif ctx.backend == "local":
            objective = make_objective(space, ctx, evaluate)
            study.optimize(objective, n_trials=remaining, timeout=ctx.remaining(),
                           catch=(Exception,), show_progress_bar=False,
                           callbacks=[stop_when_exhausted])
        else:
            raise SearchError(f"unknown backend {ctx.backend!r}; use local or ray")
    return summarise(space, ctx, study, extra, objectives)


# a sampler that proposes only already-evaluated points this many times in a row has
# exhausted a small space (or converged); a time-budgeted search stops there instead of
# spinning through cached repeats until the clock runs out
EXHAUSTED_AFTER = 50


def stop_when_exhausted(study: optuna.Study, trial: FrozenTrial) -> None:
    if "repeat_of" not in trial.user_attrs:
        return
    recent = study.get_trials(deepcopy=False)[-EXHAUSTED_AFTER:]
    if len(recent) == EXHAUSTED_AFTER and all("repeat_of" in t.user_attrs for t in recent):
        study.stop()


def make_objective(space: SearchSpace, ctx: SearchContext,
                   evaluate: Evaluate) -> Callable[[optuna.Trial], float | tuple[float, ...]]:
    def objective(trial: optuna.Trial) -> float | tuple[float, ...]:
        try:
            decision = space.suggest(trial, ctx)
            trial.set_user_attr("decision", decision)
            spec = space.apply(ctx.spec, decision)
            spec.validate(ctx.dataset.schema)
            if ctx.options.get("reuse_duplicates", True):
                # samplers revisit points (small spaces, converged populations); a seeded
                # evaluation would repeat the same training, so its values are reused
                for done in trial.study.get_trials(deepcopy=False,
                                                   states=(TrialState.COMPLETE,)):
                    if done.params == trial.params and done.values is not None:
                        trial.set_user_attr("repeat_of", done.number)
                        return done.values[0] if len(done.values) == 1 else tuple(done.values)
            return evaluate(spec, trial)
        except optuna.TrialPruned:
            raise
        except Exception as e:
            trial.set_user_attr("error", f"{type(e).__name__}: {e}")
            raise

    return objective


def trial_record(t: FrozenTrial, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    seconds = ((t.datetime_complete - t.datetime_start).total_seconds()
               if t.datetime_complete and t.datetime_start else None)
    record: dict[str, Any] = {
        "number": t.number, "params": dict(t.params), "values": t.values,
        "state": t.state.name, "seconds": None if seconds is None else round(seconds, 3),
    }
    attrs = {**t.user_attrs, **(extra or {})}
    for key in ("decision", "error", "valid", "model_params", "epochs", "repeat_of"):
        if key in attrs:
            record[key] = attrs[key]
    if t.state == TrialState.PRUNED and t.intermediate_values:
        record["last_value"] = t.intermediate_values[max(t.intermediate_values)]
    return record


def pareto_point(t: FrozenTrial, objectives: tuple[str, ...] | None) -> dict[str, Any]:
    """A front member: its trial number and values, each value under its objective's name
    (``valid_auc`` for AUC), and its decision."""
    point: dict[str, Any] = {"number": t.number, "values": list(t.values)}
    if objectives is not None:
        for name, value in zip(objectives, t.values, strict=True):
            point["valid_auc" if name == "auc" else name] = value
    point["decision"] = t.user_attrs.get("decision")
    point["front"] = True
    return point


def summarise(space: SearchSpace, ctx: SearchContext, study: optuna.Study,
              extra: dict[int, dict[str, Any]],
              objectives: tuple[str, ...] | None = None) -> BlackBoxResult:
    trials = study.get_trials(deepcopy=False)
    records = [trial_record(t, extra.get(t.number)) for t in trials]
    complete = [t for t in trials if t.state == TrialState.COMPLETE and t.values is not None
                and all(math.isfinite(v) for v in t.values)]
    pareto = None
    multi = len(study.directions) > 1
    sign = [1.0 if d == optuna.study.StudyDirection.MAXIMIZE else -1.0 for d in study.directions]
    best: FrozenTrial | None = None
    reason = None
    if complete:
        if multi:
            # the front of the finite trials (a NaN value would otherwise sit on it), each
            # point once (a repeated decision reuses its first trial's values)
            front = [t for t in complete if "repeat_of" not in t.user_attrs and not any(
                all(s * o >= s * v for s, o, v in zip(sign, other.values, t.values,
                                                      strict=True))
                and other.values != t.values for other in complete)]
            # cheapest first (by the objectives after the first), then by trial
            front.sort(key=lambda t: (tuple(-s * v for s, v in zip(sign[1:], t.values[1:],
                                                                  strict=True)), t.number))
            pareto = [pareto_point(t, objectives) for t in front]
            candidates = front
        else:
            candidates = complete
        # best first objective; the earliest trial wins a tie, so the choice is reproducible
        best = max(candidates, key=lambda t: (sign[0] * t.values[0], -t.number))
    else:
        pruned = [t for t in trials if t.state == TrialState.PRUNED and t.intermediate_values
                  and "decision" in t.user_attrs]
        if pruned:
            best = max(pruned, key=lambda t: (
                sign[0] * t.intermediate_values[max(t.intermediate_values)], -t.number))
        else:
            errors = [str(t.user_attrs.get("error") or "returned a value that is not a "
                          "finite number")
                      for t in trials if t.state == TrialState.FAIL
                      and t.user_attrs.get("error") != "interrupted"]
            if errors:
                raise SearchError(f"all {len(errors)} finished trials of {study.study_name} "
                                  f"failed; first error: {errors[0]}")
            reason = (f"no trial of {study.study_name} finished: the budget ran out first "
                      f"({len(trials)} started)" if trials else
                      f"no trial of {study.study_name} ran: the budget ran out first")
    if best is None:
        return BlackBoxResult(ctx.spec.copy(), None, records, pareto, study, None,
                              objectives, reason)
    decision = best.user_attrs["decision"]
    spec = space.apply(ctx.spec, decision)
    value: float | tuple[float, ...] | None
    if best.state == TrialState.COMPLETE:
        value = tuple(best.values) if multi else best.values[0]
    else:
        value = best.intermediate_values[max(best.intermediate_values)]
    return BlackBoxResult(spec, value, records, pareto, study, decision, objectives)
