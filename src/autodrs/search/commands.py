"""``autodrs search``: train hand-crafted baselines, run search stages (on a sample of a
large table), retrain the final spec from scratch on every row, evaluate it on test next to
the baselines, and write the run folder (``result.json`` per DESIGN.md, the model files,
and the Optuna studies).

The command registers itself on ``autodrs.cli.app`` (which imports this module)."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table as RichTable

from autodrs.cli import (
    BatchSize,
    Categorical,
    Data,
    Device,
    EmbedDim,
    Epochs,
    Fmt,
    Group,
    Label,
    Lr,
    MinCount,
    Numerical,
    Overwrite,
    Patience,
    Progress,
    Rows,
    SchemaFile,
    Seed,
    Sequence,
    Split,
    Threads,
    Time,
    _split_list,
    app,
    check_run_flags,
    console,
    dataset_from,
    note_scale,
    out,
    result_skeleton,
    user_errors,
    warn,
    write_report,
)
from autodrs.experiment import (
    epoch_cap_note,
    fit_spec,
    machine_info,
    shared_fits,
    still_improving,
    with_training,
)
from autodrs.models.backbones import BACKBONES, backbone_spec
from autodrs.models.builder import count_bytes
from autodrs.pipeline import (
    BASELINE_SHARE,
    DEFAULT_BASELINES,
    DEFAULT_PIPELINE,
    DEFAULT_SEARCH_ROWS,
    PIPELINE_OPTIONS,
    RETRAIN_SHARE,
    SHRINK_LOGLOSS_TOLERANCE,
    SHRINK_TOLERANCE,
    ValidationGuard,
    fit_baselines,
    inapplicable_stages,
    load_config,
    merge_config,
    sample_rows,
    save_config,
    search_sample,
    stage_weights,
)
from autodrs.runfolder import (
    check_same_data,
    data_identity,
    prepare_run_folder,
    save_data_identity,
    save_model,
    write_json,
)
from autodrs.search.base import METHODS, SearchContext, SearchError, StageResult, parse_budget
from autodrs.search.stages import run_stages
from autodrs.search.strategies import STRATEGIES
from autodrs.train.trainer import TrainConfig

EFFECTIVE_KEYS = (
    "data", "methods", "strategy", "budget", "trials", "backend", "ray_address",
    "cpus_per_trial", "gpus_per_trial", "concurrency", "ray_storage", "model",
    "baselines", "subsample", "trial_epochs", "pruner", "warm_start", "fast", "estimation",
    "objectives", "memory_budget", "label", "fmt", "categorical", "numerical", "sequence", "schema", "group",
    "time_col", "split", "min_count", "seed", "epochs", "batch_size", "lr", "patience",
    "embed_dim", "device", "threads", "names", "guard", "search_rows", "baseline_budget",
)


def duration(seconds: float) -> str:
    """``75`` -> ``1m15s``, ``0.5`` -> ``0.5s``: a budget as a user writes one."""
    if seconds < 60:
        return f"{round(seconds, 1):g}s"
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


def plan_line(names: list[str], baselines: list[str], seconds: float | None,
              baseline_seconds: float | None, search_rows: int | None) -> str:
    """The first line of a search: what will run, in order, and for about how long."""
    rows = f" on at most {search_rows:,} training rows" if search_rows else ""
    parts = []
    if baselines:
        within = f" within {duration(baseline_seconds)}" if baseline_seconds is not None else ""
        parts.append(f"{len(baselines)} baseline(s) ({', '.join(baselines)}){within}")
    parts.append(f"{len(names)} stage(s) ({', '.join(names)}){rows}")
    parts.append("a retrain of the result on all rows")
    when = (f"about {duration(seconds)} in all (--budget; the retrain is not cut short)"
            if seconds is not None else
            "no --budget, so each stage runs its full trials and the time is not bounded")
    return f"search: {', then '.join(parts)}; {when}"


def baseline_line(name: str, outcome: Any) -> str:
    """The console line of a trained baseline."""
    cut = " (cut short by its share of the budget)" if outcome.fit.stopped_by_hook else ""
    return (f"baseline {name}: validation AUC {outcome.metrics['valid']['auc']:.4f} "
            f"({outcome.seconds:.1f}s){cut}")


def stage_line(index: int, total: int, stage: StageResult) -> str:
    """The console line of a finished stage: its time against its share, its ranking's
    head, the candidate it chose among those it retrained, and the guard's verdict (or why
    it failed)."""
    share = stage.extra.get("budget_seconds")
    of = f" of {share:.1f}s" if share is not None else ""
    if stage.extra.get("failed"):
        return (f"stage {index + 1}/{total} {stage.method} ({stage.strategy}) failed after "
                f"{stage.seconds:.1f}s ({stage.extra.get('error')}); the run goes on from "
                "the spec the stage was given")
    line = (f"stage {index + 1}/{total} {stage.method} ({stage.strategy}): "
            f"{stage.seconds:.1f}s{of}; best first: {stage.ranking[:3]}")
    heads = stage.extra.get("heads")
    if isinstance(heads, dict) and heads.get("retrained"):
        tried = heads["retrained"]
        best = max(tried, key=lambda t: t["valid_auc"])
        weights = "gated" if best.get("gates") else "plain"
        line += (f"; chose the {best['backbone']} head, {best.get('pairs', '?')} pairs "
                 f"{weights} (validation {best['valid_auc']:.4f}) of {len(tried)} retrained")
    guard = stage.extra.get("guard")
    if isinstance(guard, dict) and "stage_valid_auc" in guard:
        verdict = "kept" if guard.get("kept") else "rejected"
        line += (f"; guard: {verdict} ({guard['stage_valid_auc']:.4f} against "
                 f"{guard['input_valid_auc']:.4f})")
    elif isinstance(guard, dict) and not guard.get("kept", True):
        line += "; guard: rejected"
    return line


@app.command("search")
def search_command(
    click_ctx: typer.Context,
    data: Data = "movielens-100k",
    out_dir: Annotated[Path, typer.Option("--out", help="run folder")] = Path("runs/search"),
    methods: Annotated[str | None, typer.Option(help="comma-separated search methods, run "
                                                     "as stages in order")] = None,
    strategy: Annotated[str | None, typer.Option(
        help=f"{'|'.join(STRATEGIES)} (default: each method's own)")] = None,
    budget: Annotated[str | None, typer.Option(help="wall time for the whole command (data, "
                                                    "baselines, stages, retrain), e.g. 90s, "
                                                    "10m, 1h")] = None,
    baseline_budget: Annotated[str | None, typer.Option(
        help=f"wall time for the baselines (default: {BASELINE_SHARE:.0%} of --budget)")] = None,
    search_rows: Annotated[int, typer.Option(
        help="training rows the stages search on: a larger training split is sampled by "
             "--seed (the retrain and the baselines use all rows); 0 for all rows")
    ] = DEFAULT_SEARCH_ROWS,
    trials: Annotated[int | None, typer.Option(help="black-box trials per stage")] = None,
    backend: Annotated[str, typer.Option(help="local or ray")] = "local",
    ray_address: Annotated[str | None, typer.Option(help="address of an existing Ray "
                                                         "cluster (default: start one)")] = None,
    cpus_per_trial: Annotated[float, typer.Option(help="CPUs each Ray trial asks for (and "
                                                       "its threads)")] = 1.0,
    gpus_per_trial: Annotated[float, typer.Option(help="GPUs each Ray trial asks for")] = 0.0,
    concurrency: Annotated[int, typer.Option(help="Ray trials at once")] = 2,
    ray_storage: Annotated[str | None, typer.Option(
        help="where Ray keeps trial results: a folder every node reaches, or a URI "
             "(s3://...); default <out>/ray")] = None,
    resume: Annotated[bool, typer.Option(help="continue the search in --out")] = False,
    model: Annotated[str | None, typer.Option(
        help=f"backbone the search starts from: {', '.join(BACKBONES)}, or auto (the "
             "baseline with the best validation AUC; the default for the default pipeline, "
             "deepfm otherwise)")] = None,
    baselines: Annotated[str | None, typer.Option(help="comma-separated backbones to compare with, "
                                                "or 'none' (default: deepfm, and "
                                                f"{DEFAULT_BASELINES} for the default "
                                                "pipeline)")] = None,
    subsample: Annotated[float | None, typer.Option(help="train rows per trial: a fraction "
                                                         "(<= 1) or a count")] = None,
    trial_epochs: Annotated[int | None, typer.Option(help="epochs per trial")] = None,
    pruner: Annotated[str, typer.Option(help="none, median, sha or hyperband")] = "none",
    warm_start: Annotated[bool, typer.Option(help="start trials from the parent's "
                                                  "weights")] = False,
    fast: Annotated[bool, typer.Option(help="the cheapest run of each method "
                                            "(smoke tests)")] = False,
    estimation: Annotated[str, typer.Option(help="train (each trial trains cheaply) or "
                                                 "weight_sharing (one supernet scores all "
                                                 "candidates; methods that have one)")] = "train",
    objectives: Annotated[str, typer.Option(help="auc, or auc,embedding_params for a Pareto "
                                                 "front (evolution, tpe, random)")] = "auc",
    memory_budget: Annotated[str | None, typer.Option(
        help="cap on the stored embedding bytes, e.g. 2MB or 512KiB (rule, nis)")] = None,
    guard: Annotated[bool | None, typer.Option(
        help="retrain each stage's spec and keep it only when it validates at least as well "
             "as the stage's input (default: on for the default pipeline)")] = None,
    label: Label = None, fmt: Fmt = None, categorical: Categorical = None,
    numerical: Numerical = None, sequence: Sequence = None, schema: SchemaFile = None,
    group: Group = None, time_col: Time = None, split: Split = "random", min_count: MinCount = 1,
    seed: Seed = 2026, epochs: Epochs = 10, batch_size: BatchSize = 1024, lr: Lr = 1e-3,
    patience: Patience = 2, embed_dim: EmbedDim = 16, device: Device = "auto",
    threads: Threads = None, progress: Progress = True, overwrite: Overwrite = False,
    rows: Rows = None,
    config: Annotated[Path | None, typer.Option(help="YAML file of settings (keys are option "
                                                     "names); flags win")] = None,
) -> None:
    """Search a recommender's design, retrain it and compare it with baselines.

    Without --methods, runs the default pipeline (feature selection, embedding dims,
    interactions) on the data (movielens-100k by default)."""
    params = {k: v for k, v in locals().items() if k not in ("click_ctx", "config")}
    if config is not None:
        params = user_errors(merge_config)(click_ctx, params, load_config(config))
    run_search(**params)


@user_errors
def run_search(data: str, out_dir: Path, methods: str | None, strategy: str | None,
               budget: str | None, baseline_budget: str | None, search_rows: int,
               trials: int | None, backend: str, ray_address: str | None,
               cpus_per_trial: float, gpus_per_trial: float, concurrency: int,
               ray_storage: str | None,
               resume: bool, model: str | None, baselines: str | None, subsample: float | None,
               trial_epochs: int | None, pruner: str, warm_start: bool, fast: bool,
               estimation: str, objectives: str, memory_budget: str | None,
               guard: bool | None,
               label: str | None, fmt: str | None, categorical: str | None,
               numerical: str | None, sequence: str | None, schema: Path | None,
               group: str | None, time_col: str | None, split: str, min_count: int,
               seed: int, epochs: int, batch_size: int, lr: float, patience: int,
               embed_dim: int, device: str, threads: int | None, progress: bool,
               overwrite: bool = False, rows: int | None = None) -> None:
    import autodrs.methods  # noqa: F401  (fills the registry)

    started = time.monotonic()  # --budget bounds the whole command, from here
    names = _split_list(methods) or list(DEFAULT_PIPELINE)
    if baselines is None:
        baselines = "deepfm" if methods else DEFAULT_BASELINES
    if guard is None:
        guard = not methods
    if model is None:
        model = "deepfm" if methods else "auto"
    unknown = [n for n in names if n not in METHODS]
    if unknown:
        raise SearchError(f"unknown method {unknown[0]!r}; available: "
                          f"{', '.join(sorted(METHODS))}")
    if strategy is not None and strategy not in STRATEGIES:
        raise SearchError(f"unknown strategy {strategy!r}; choose from {', '.join(STRATEGIES)}")
    if backend not in ("local", "ray"):
        raise SearchError(f"unknown backend {backend!r}; use local or ray")
    if trials is not None and trials <= 0:
        raise SearchError(f"--trials must be > 0, got {trials}")
    for name in names:  # a strategy a method does not take, before any work
        accepted = METHODS[name].strategies
        if strategy is not None and strategy not in accepted:
            raise SearchError(f"method {name!r} does not support strategy {strategy!r}; it "
                              f"supports {', '.join(accepted)}")
    if estimation not in ("train", "weight_sharing"):
        raise SearchError(f"unknown estimation {estimation!r}; use train or weight_sharing")
    check_run_flags(out_dir, overwrite, resume=resume, can_resume=True, epochs=epochs,
                    batch_size=batch_size, lr=lr, patience=patience, threads=threads,
                    seed=seed, device=device, embed_dim=embed_dim, min_count=min_count,
                    trial_epochs=trial_epochs, subsample=subsample, search_rows=search_rows)
    seconds = parse_budget(budget)
    baseline_names = [] if baselines == "none" else _split_list(baselines) or []
    baseline_seconds = parse_budget(baseline_budget)
    if seconds is not None and baseline_names:
        if baseline_seconds is None:
            baseline_seconds = BASELINE_SHARE * seconds
        elif baseline_seconds >= seconds:
            raise SearchError(f"--baseline-budget {baseline_budget} leaves nothing of --budget "
                              f"{budget} for the search; give the baselines less")
    console.print(plan_line(names, baseline_names, seconds, baseline_seconds, search_rows),
                  highlight=False)
    if model == "auto" and not baseline_names:
        model = "deepfm"  # no baselines to choose from
    base = backbone_spec("deepfm" if model == "auto" else model, embed_dim)
    base_specs = {n: backbone_spec(n, embed_dim) for n in baseline_names}
    ds = dataset_from(data, label, fmt, categorical, numerical, sequence, schema, group,
                      time_col, split, seed, min_count, rows)
    base.validate(ds.schema)
    identity = data_identity(locals(), ds.info)
    if resume:  # finished stages are reused only on the data they were searched on
        check_same_data(out_dir, identity)
    skipped: list[dict[str, str]] = []
    if not methods:  # the default pipeline leaves out what has nothing to work on here
        for name, reason in inapplicable_stages(names, ds.schema).items():
            console.print(f"skipping {name}: {reason}", highlight=False)
            skipped.append({"method": name, "reason": reason})
        names = [n for n in names if n not in {s["method"] for s in skipped}]
    config = TrainConfig(epochs=epochs, batch_size=batch_size, lr=lr, patience=patience,
                         seed=seed, device=device, threads=threads,
                         progress=progress and sys.stderr.isatty())
    note_scale(ds, base)
    sample = search_sample(ds, search_rows, seed)
    if sample is not ds:
        console.print(f"the stages search on {len(sample.train):,} of {len(ds.train):,} "
                      "training rows (--search-rows); the retrain and the baselines train on "
                      "all of them", highlight=False)
    prepare_run_folder(out_dir, overwrite)
    save_config(out_dir, {k: v for k, v in locals().items() if k in EFFECTIVE_KEYS})
    save_data_identity(out_dir, identity)
    options: dict[str, Any] = {"pruner": pruner, "warm_start": warm_start, "fast": fast,
                               "estimation": estimation,
                               "objectives": tuple(_split_list(objectives) or ["auc"])}
    if subsample is not None:
        options["subsample"] = subsample
    if trial_epochs is not None:
        options["epochs"] = trial_epochs
    if memory_budget is not None:
        options["memory_budget"] = memory_budget
    if backend == "ray":
        from autodrs.search.raytune import check_resources

        check_resources(cpus_per_trial, gpus_per_trial, concurrency)
        options |= {"ray_cpus_per_trial": cpus_per_trial, "ray_gpus_per_trial": gpus_per_trial,
                    "ray_concurrency": concurrency, "ray_storage": ray_storage}
    if guard:  # stages choose as the guard judges: the smallest model within its tolerance
        options["tolerance"] = SHRINK_TOLERANCE
        options["logloss_tolerance"] = SHRINK_LOGLOSS_TOLERANCE
    if not methods:  # the default pipeline's interaction stage chooses its head too
        options.update(PIPELINE_OPTIONS)
    with shared_fits():  # a fit asked for twice (ERASE, guard, retrain, baseline) runs once
        # the baselines train first, on all rows, within their share of the budget
        t_base = time.perf_counter()
        fits = fit_baselines(ds, base_specs, config, baseline_seconds,
                             on_fit=lambda n, o: console.print(baseline_line(n, o),
                                                               highlight=False))
        baseline_time = time.perf_counter() - t_base
        start: dict[str, Any] = {"model": model}
        start_name = model
        if model == "auto":  # the search starts from the baseline that validates best
            valid = {n: o.metrics["valid"]["auc"] for n, o in fits.items()}
            start_name = max(valid, key=lambda n: (valid[n], n == "deepfm"))
            base = base_specs[start_name].copy()
            start = {"model": start_name, "chosen_by": "validation AUC of the baselines",
                     "valid_auc": {n: round(v, 6) for n, v in valid.items()}}
            console.print(f"starting from {start_name} (best validation AUC of the baselines, "
                          f"{valid[start_name]:.4f})", highlight=False)
        known = fits.get(start_name)
        if known is not None and not known.fit.stopped_by_hook:
            # what a retrain of the start costs on the stages' rows: the stages' and the
            # guard's estimate
            options["retrain_seconds"] = round(
                known.seconds * len(sample.train) / len(ds.train), 3)
        left = None if seconds is None else max(0.0, seconds - (time.monotonic() - started))
        ctx = SearchContext(dataset=sample, spec=base, train=config, seed=seed, out_dir=out_dir,
                            budget_seconds=left, trials=trials, strategy=strategy,
                            options=options, resume=resume, backend=backend,
                            ray_address=ray_address)

        def report(index: int, stage: StageResult) -> None:
            console.print(stage_line(index, len(names), stage), highlight=False)

        # what is left of the budget covers the stages and the retrain: the stages stop in
        # time to leave a share of it for the retrain (at least what the start's fit on all
        # rows took, at most half), which is never cut short
        reserve = 0.0
        if left is not None:
            full = known.seconds if known is not None else 0.0
            reserve = max(RETRAIN_SHARE * left, min(full, 0.5 * left))
        t0 = time.perf_counter()
        checker = (ValidationGuard(sample, config, remaining=ctx.remaining, reserve=reserve,
                                   retrain_seconds=options.get("retrain_seconds", 0.0))
                   if guard else None)
        # a stage that fails is recorded and the run goes on from its input spec
        stages = run_stages(ctx, names, on_stage=report, weights=stage_weights(names),
                            reserve=reserve, guard=checker, keep_going=True)
        search_seconds = time.perf_counter() - t0
        spec = stages[-1].spec
        final = fit_spec(ds, spec, config)
    save_model(out_dir, final.model, ds.schema)
    compared: dict[str, Any] = {
        name: {**o.metrics, "params": o.params, "bytes": count_bytes(o.model),
               "seconds": round(o.seconds, 3), "train_rows": len(ds.train),
               "cut_short": o.fit.stopped_by_hook} for name, o in fits.items()}
    stage_rows = len(sample.train)
    result = result_skeleton("search", ds, seed)
    result |= {
        "methods": names, "strategy": strategy, "backend": backend, "model": start["model"],
        "start": start,
        "spec": spec.to_dict(),
        "metrics": final.metrics,
        "baselines": compared,
        "params": final.params,
        "bytes": count_bytes(final.model),
        "cost": {"search_seconds": round(search_seconds, 3),
                 "retrain_seconds": round(final.seconds, 3),
                 "baseline_seconds": round(baseline_time, 3),
                 "total_seconds": round(time.monotonic() - started, 3),
                 "train_samples_per_second": round(final.fit.samples_per_second, 1),
                 "budget_seconds": seconds, "baseline_budget_seconds": baseline_seconds,
                 "trials_per_stage": trials},
        # the rows each part trained on: the stages on a sample of a large table, the
        # retrain and the baselines on all rows
        "rows": {"search_rows": search_rows or None, "stages": sample_rows(sample),
                 "retrain": len(ds.train), "baselines": len(ds.train)},
        "stages": [{**s.to_dict(), "train_rows": stage_rows} for s in stages],
        "skipped_stages": skipped,
        # fits that validated best at their last epoch: the epoch cap stopped them
        "still_improving": still_improving({"searched": final, **fits}),
        "config": {**vars(with_training(config, spec)), "progress": False},
        "history": final.fit.history,
        "machine": machine_info(config),
    }
    write_json(out_dir / "result.json", result)
    write_report(result, out_dir / "report.html")
    table = RichTable("model", "test AUC", "test logloss", "parameters", "embedding params",
                      title=f"searched model against baselines on {ds.info['name']}")
    rows = [("searched", final.metrics, final.params)]
    rows += [(name, {"test": row["test"]}, row["params"]) for name, row in compared.items()]
    for name, metrics, params in rows:
        table.add_row(name, f"{metrics['test']['auc']:.4f}", f"{metrics['test']['logloss']:.4f}",
                      f"{params['total']:,}", f"{params['embedding']:,}")
    out.print(table)
    if result["still_improving"]:
        out.print(epoch_cap_note(result["still_improving"], config.epochs), highlight=False)
    out.print(f"search {search_seconds:.1f}s, retrain {final.seconds:.1f}s; report: "
              f"{out_dir / 'report.html'}", highlight=False)
    cut = [name for name, row in compared.items() if row["cut_short"]]
    if cut:
        warn(f"baseline(s) {', '.join(cut)} were cut short by their share of the budget "
             "(result.json flags them cut_short); a larger --baseline-budget trains them out")
    failed = [s for s in stages if s.extra.get("failed")]
    if failed:
        warn(f"{len(failed)} of {len(stages)} stages failed ("
             + "; ".join(f"{s.method}: {s.extra['error']}" for s in failed)
             + "); the model is the best spec the other stages gave, and result.json records "
             "each failure")
    out.print(f"-> {out_dir / 'result.json'}", highlight=False)
