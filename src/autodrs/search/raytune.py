"""Black-box trials as Ray Tune trials, with Optuna as the search algorithm.

``OptunaSearch`` asks the study (the same sampler and SQLite storage as the local backend)
for each trial's decision through a define-by-run function; Ray runs up to
``ctx.options["ray_concurrency"]`` (default 2) trials at once, each in a worker process
that applies the decision to the spec and calls ``evaluate``. Each trial asks Ray for
``ray_cpus_per_trial`` CPUs (default 1) and ``ray_gpus_per_trial`` GPUs (default 0), so Ray
places it where those are free. Ray's trial results go to ``ray_storage`` (a folder, or a
URI such as ``s3://bucket/path`` that every node of a cluster can reach; default
``<out>/ray``); the study itself lives in the driver's Optuna storage, which ``--resume``
continues. Ray is started locally with ``ctx.options["ray_cpus"]`` CPUs (default: enough
for the concurrent trials) unless ``ctx.ray_address`` names an existing cluster.

Pruning (``--pruner``) works as on the local backend: each per-epoch value a worker reports
reaches the driver as a Ray result, where ``PrunerScheduler`` (a Ray Tune scheduler) hands it
to the Optuna trial and asks the study's pruner (median, successive halving, Hyperband);
when the pruner says so, Ray stops the trial and the study records it as pruned.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna

from autodrs.search.base import SearchContext, SearchError, SearchSpace, option
from autodrs.search.blackbox import Evaluate

try:  # Ray Tune is an optional dependency: run_ray names it when missing
    from ray.tune.schedulers import FIFOScheduler, TrialScheduler
    from ray.tune.search.optuna import OptunaSearch
except ImportError:  # pragma: no cover - exercised only without the ray extra
    FIFOScheduler = OptunaSearch = object  # type: ignore[assignment,misc]
    TrialScheduler = None  # type: ignore[assignment,misc]

METRIC = "objective"
STEP = "step"  # present only in the per-epoch (intermediate) results


class TuneTrial:
    """What ``evaluate`` sees of its trial inside a Ray worker: intermediate values go to
    Ray Tune as results, user attributes come back with the final result."""

    def __init__(self, number: int, params: dict[str, Any], decision: dict[str, Any]) -> None:
        self.number = number
        self.params = params
        self.user_attrs: dict[str, Any] = {"decision": decision}

    def report(self, value: float, step: int) -> None:
        from ray import tune

        tune.report({METRIC: float(value), STEP: step})

    def should_prune(self) -> bool:
        """Always False here: the pruner runs in the driver (``PrunerScheduler``), and Ray
        stops a pruned trial's worker itself."""
        return False

    def set_user_attr(self, key: str, value: Any) -> None:
        self.user_attrs[key] = value


class StudySearch(OptunaSearch):  # type: ignore[misc,valid-type]
    """Ray's Optuna searcher, with intermediate values left to ``PrunerScheduler`` (which
    reports them at the worker's own step) and a trial the scheduler stopped told to the
    study as pruned, not as complete at its last intermediate value."""

    def __init__(self, *args: Any, pruner: optuna.pruners.BasePruner, **kwargs: Any) -> None:
        self.pruner = pruner  # the study's; Ray's own study would get a NopPruner
        self.pruned: set[str] = set()
        super().__init__(*args, **kwargs)

    def _setup_study(self, mode: Any) -> None:
        super()._setup_study(mode)
        self._ot_study.pruner = self.pruner

    def on_trial_result(self, trial_id: str, result: dict[str, Any]) -> None:
        return None

    def on_trial_complete(self, trial_id: str, result: dict[str, Any] | None = None,
                          error: bool = False) -> None:
        if trial_id in self.pruned and trial_id not in self._completed_trials:
            from optuna.trial import TrialState

            self._ot_study.tell(self._ot_trials[trial_id], None, state=TrialState.PRUNED)
            self._completed_trials.add(trial_id)
            return
        super().on_trial_complete(trial_id, result, error)


class PrunerScheduler(FIFOScheduler):  # type: ignore[misc,valid-type]
    """First in, first out, but each intermediate result goes to the trial's Optuna trial
    and the study's pruner decides whether Ray stops it."""

    def __init__(self, searcher: StudySearch) -> None:
        super().__init__()
        self.searcher = searcher

    def on_trial_result(self, tune_controller: Any, trial: Any, result: dict[str, Any]) -> str:
        ot_trial = self.searcher._ot_trials.get(trial.trial_id)
        if STEP not in result or METRIC not in result or ot_trial is None:
            return TrialScheduler.CONTINUE  # the final result, or a trial Optuna never saw
        ot_trial.report(float(result[METRIC]), int(result[STEP]))
        if ot_trial.should_prune():
            self.searcher.pruned.add(trial.trial_id)
            return TrialScheduler.STOP
        return TrialScheduler.CONTINUE


class DefineByRun:
    """The searcher's define-by-run function: the space suggests a decision through the
    Optuna trial. Ray pickles the searcher for its own checkpoints; the study already lives
    in Optuna's storage, so the context (and its data) is left out of that pickle."""

    def __init__(self, space: SearchSpace, ctx: SearchContext | None) -> None:
        self.space = space
        self.ctx = ctx

    def __call__(self, trial: optuna.Trial) -> dict[str, Any]:
        if self.ctx is None:
            raise SearchError("a restored Ray searcher cannot suggest; resume with --resume")
        decision = self.space.suggest(trial, self.ctx)
        trial.set_user_attr("decision", decision)
        return {"__decision__": decision, "__number__": trial.number}

    def __getstate__(self) -> dict[str, Any]:
        return {"space": self.space, "ctx": None}


def _trainable(config: dict[str, Any], space: SearchSpace, base: Any, evaluate: Evaluate,
               schema: Any, n_objectives: int) -> None:
    from ray import tune

    decision = config["__decision__"]
    trial = TuneTrial(config["__number__"], {k: v for k, v in config.items()
                                             if not k.startswith("__")}, decision)
    t0 = time.perf_counter()
    spec = space.apply(base, decision)
    spec.validate(schema)
    value = evaluate(spec, trial)  # type: ignore[arg-type]
    values = value if isinstance(value, tuple) else (value,)
    if len(values) != n_objectives:
        raise SearchError(f"evaluate returned {len(values)} values for {n_objectives} objectives")
    metrics = {f"{METRIC}_{i}": float(v) for i, v in enumerate(values)}
    metrics[METRIC] = float(values[0])
    tune.report(metrics | {"user_attrs": trial.user_attrs,
                           "trial_seconds": time.perf_counter() - t0})


@dataclass(frozen=True)
class TuneSettings:
    """What a Ray search asks of the cluster."""

    cpus_per_trial: float
    gpus_per_trial: float
    concurrency: int
    storage: str | None
    local_cpus: int  # CPUs of a Ray started here

    @property
    def resources(self) -> dict[str, float]:
        return {"cpu": self.cpus_per_trial} | (
            {"gpu": self.gpus_per_trial} if self.gpus_per_trial else {})


def check_resources(cpus_per_trial: float, gpus_per_trial: float, concurrency: int) -> None:
    """A clear error for trial resources Ray could never grant."""
    if cpus_per_trial <= 0:
        raise SearchError(f"--cpus-per-trial must be > 0, got {cpus_per_trial}")
    if gpus_per_trial < 0:
        raise SearchError(f"--gpus-per-trial must be >= 0, got {gpus_per_trial}")
    if concurrency < 1:
        raise SearchError(f"--concurrency must be >= 1, got {concurrency}")


def tune_settings(ctx: SearchContext) -> TuneSettings:
    """The trial resources, concurrency and storage of ``ctx``'s options, checked."""
    cpus = option(ctx, "ray_cpus_per_trial", 1.0, float)
    gpus = option(ctx, "ray_gpus_per_trial", 0.0, float)
    concurrency = option(ctx, "ray_concurrency", 2, int)
    check_resources(cpus, gpus, concurrency)
    storage = ctx.options.get("ray_storage")
    if storage is None:
        storage = str(Path(ctx.out_dir).resolve() / "ray") if ctx.out_dir else None
    elif "://" not in str(storage):  # a folder (a shared mount on a cluster)
        storage = str(Path(storage).expanduser().resolve())
    local = option(ctx, "ray_cpus", max(2, int(-(-concurrency * cpus // 1))), int)
    return TuneSettings(cpus, gpus, concurrency, storage, local)


def run_ray(space: SearchSpace, ctx: SearchContext, study: optuna.Study, evaluate: Evaluate,
            directions: tuple[str, ...], remaining: int | None) -> dict[int, dict[str, Any]]:
    """Run up to ``remaining`` trials of ``study`` on Ray Tune; return the user attributes
    the workers set, by trial number (Ray's searcher does not store them in the study)."""
    try:
        import ray
        from ray import tune
    except ImportError as e:
        raise SearchError("--backend ray needs Ray Tune: pip install 'autodrs[ray]'") from e
    if remaining is None and ctx.budget_seconds is None:
        raise SearchError("a Ray search needs --trials or --budget")

    multi = len(directions) > 1
    metric: str | list[str] = [f"{METRIC}_{i}" for i in range(len(directions))] if multi \
        else METRIC
    modes = ["max" if d == "maximize" else "min" for d in directions]
    searcher = StudySearch(space=DefineByRun(space, ctx), metric=metric,
                           mode=modes if multi else modes[0], sampler=study.sampler,
                           storage=study._storage, study_name=study.study_name,
                           pruner=study.pruner)
    # a multi-objective study has no pruner (Optuna's prune one objective)
    scheduler = None if multi else PrunerScheduler(searcher)
    settings = tune_settings(ctx)
    started_here = not ray.is_initialized()
    if started_here:
        ray.init(address=ctx.ray_address, include_dashboard=False, log_to_driver=False,
                 num_cpus=None if ctx.ray_address else settings.local_cpus,
                 configure_logging=False)
    try:
        trainable = tune.with_parameters(_trainable, space=space, base=ctx.spec,
                                         evaluate=evaluate, schema=ctx.dataset.schema,
                                         n_objectives=len(directions))
        tuner = tune.Tuner(
            tune.with_resources(trainable, settings.resources),
            tune_config=tune.TuneConfig(
                search_alg=searcher, scheduler=scheduler,
                num_samples=remaining if remaining is not None else -1,
                max_concurrent_trials=settings.concurrency, reuse_actors=True,
                time_budget_s=ctx.remaining()),
            run_config=tune.RunConfig(
                name=study.study_name, verbose=0, storage_path=settings.storage),
        )
        grid = tuner.fit()
    finally:
        if started_here:
            ray.shutdown()
    extra: dict[int, dict[str, Any]] = {}
    for result in grid:
        number = result.config.get("__number__") if result.config else None
        if number is None:
            continue
        attrs = dict((result.metrics or {}).get("user_attrs") or {})
        if result.error is not None:
            attrs["error"] = f"{type(result.error).__name__}: {result.error}"
        extra[int(number)] = attrs
    return extra
