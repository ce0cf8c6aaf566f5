"""The ``autodrs`` command line: a thin layer over ``autodrs.api``.

Each command turns its flags (and a ``--config`` YAML file, flags winning) into the
settings object of ``autodrs.config``, calls the API, and prints what came back. Errors
are ordinary exceptions until here: ``user_errors`` turns them into one line and exit code
2. Messages go through the ``autodrs`` logger (``-v`` shows debug detail, ``-q`` warnings
only; every run folder also gets a ``run.log``). Nothing heavy is imported before a command
runs, so ``autodrs --help`` does not load PyTorch; the serving commands are loaded when
invoked (``_LazyCommand``).
"""

from __future__ import annotations

import functools
import importlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import click
import typer
from rich.console import Console
from rich.table import Table as RichTable
from typer.core import TyperGroup

from autodrs.config import (
    BASELINE_SHARE,
    DEFAULT_BASELINES,
    DEFAULT_EPOCHS,
    DEFAULT_SEARCH_ROWS,
    BenchSettings,
    RunSettings,
    SearchSettings,
    TrainSettings,
    load_yaml,
    merge_options,
    parse_set,
)
from autodrs.logs import console_handler

F = TypeVar("F", bound=Callable[..., Any])
S = TypeVar("S", bound=RunSettings)

console = Console(stderr=True, soft_wrap=True)
out = Console()


# ---------------------------------------------------------------- lazily loaded commands
# name -> (module, function, one-line help): registered without importing their modules
LAZY_COMMANDS = {
    "export": ("autodrs.serve.commands", "export_command",
               "Export a model to TorchScript or ONNX, with its encoders beside it as JSON."),
    "predict": ("autodrs.serve.commands", "predict_command",
                "Score a file of raw rows with a saved model."),
    "serve": ("autodrs.serve.commands", "serve_command",
              "Serve a saved model over HTTP."),
    "tune-serving": ("autodrs.serve.commands", "tune_serving_command",
                     "Measure serving settings and choose the fastest that meets a target."),
    "graph": ("autodrs.graph.command", "graph_command",
              "Train or search a graph recommender (leave-last-out, recall@k and NDCG@k)."),
    "transfer": ("autodrs.methods.transfer.command", "transfer_command",
                 "Pre-train on a source domain, transfer to a target by AutoFT, compare."),
}


class _LazyCommand(click.Command):
    """A command whose module is imported only when it runs or shows its own help."""

    def __init__(self, name: str, module: str, function: str, short_help: str) -> None:
        super().__init__(name, short_help=short_help, help=short_help)
        self.module, self.function = module, function
        self._real: click.Command | None = None

    def real(self) -> click.Command:
        if self._real is None:
            fn = getattr(importlib.import_module(self.module), self.function)
            single = typer.Typer(add_completion=False)
            single.command(self.name)(user_errors(fn))
            self._real = typer.main.get_command(single)
        return self._real

    def make_context(self, info_name: str | None, args: list[str],
                     parent: click.Context | None = None, **extra: Any) -> click.Context:
        return self.real().make_context(info_name, args, parent=parent, **extra)

    def invoke(self, ctx: click.Context) -> Any:
        return self.real().invoke(ctx)


class _Group(TyperGroup):
    """The command group, with the lazily loaded commands beside typer's own."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return [*super().list_commands(ctx), *LAZY_COMMANDS]

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in LAZY_COMMANDS:
            module, function, text = LAZY_COMMANDS[cmd_name]
            return _LazyCommand(cmd_name, module, function, text)
        return super().get_command(ctx, cmd_name)


app = typer.Typer(add_completion=False, no_args_is_help=True, cls=_Group,
                  help="Automated design of deep recommender systems for CTR prediction.")


def _version(value: bool) -> None:
    if value:
        from autodrs.provenance import autodrs_version

        out.print(f"autodrs {autodrs_version()}", highlight=False)
        raise typer.Exit()


@app.callback()
def main_options(
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                          help="print the version and exit")] = False,
    verbose: Annotated[int, typer.Option("--verbose", "-v", count=True,
                                         help="more detail (debug messages)")] = 0,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="warnings and errors "
                                                              "only")] = False,
) -> None:
    """Automated design of deep recommender systems for CTR prediction."""
    console_handler(-1 if quiet else verbose)


def user_errors(fn: F) -> F:
    """Turn input errors into one clear line on stderr and exit code 2 (3 for a training
    that diverged)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except (ValueError, FileNotFoundError) as e:  # every autodrs input error is one
            from rich.markup import escape  # an error may quote brackets: print them as-is

            console.print(f"[red]error:[/red] {escape(str(e))}", highlight=False)
            raise typer.Exit(2) from e
        except RuntimeError as e:
            from autodrs.train.trainer import TrainingDiverged

            if not isinstance(e, TrainingDiverged):
                raise
            from rich.markup import escape

            console.print(f"[red]training diverged:[/red] {escape(str(e))}", highlight=False)
            raise typer.Exit(3) from e

    return wrapper  # type: ignore[return-value]


# ---------------------------------------------------------------- shared options
Data = Annotated[str, typer.Option("--data", help="built-in name (movielens-100k, synthetic) "
                                                  "or a CSV/TSV/Parquet/Criteo/Avazu file")]
Label = Annotated[str | None, typer.Option(help="label column (0/1)")]
Labels = Annotated[str | None, typer.Option(help="comma-separated 0/1 label columns, one "
                                                 "task each (multi-task)")]
Fmt = Annotated[str | None, typer.Option("--format", help="csv|tsv|parquet|criteo|avazu")]
Categorical = Annotated[str | None, typer.Option(help="comma-separated categorical fields")]
Numerical = Annotated[str | None, typer.Option(help="comma-separated numerical fields")]
Sequence = Annotated[str | None, typer.Option(help="comma-separated multi-valued fields")]
SchemaFile = Annotated[Path | None, typer.Option("--schema", help="YAML file with field kinds")]
Group = Annotated[str | None, typer.Option(help="group column for group AUC")]
Time = Annotated[str | None, typer.Option("--time", help="time column for a time-ordered "
                                                          "split (or the split column)")]
Split = Annotated[str, typer.Option(help="random (80/10/10 by seed), time (by the --time "
                                          "column), or given (the --time column holds each "
                                          "row's split: 0 train, 1 validation, 2 test)")]
MinCount = Annotated[int, typer.Option(help="values rarer than this in train map to OOV")]
Seed = Annotated[int, typer.Option(help="random seed")]
Epochs = Annotated[int, typer.Option(help="maximum epochs")]
BatchSize = Annotated[int, typer.Option(help="training batch size")]
Lr = Annotated[float, typer.Option(help="Adam learning rate")]
Patience = Annotated[int, typer.Option(help="epochs without validation AUC gain before stopping")]
Device = Annotated[str, typer.Option(help="auto, cpu or cuda")]
Threads = Annotated[int | None, typer.Option(help="CPU threads (default: all available)")]
EmbedDim = Annotated[int, typer.Option(help="embedding dim of every field")]
LazyTables = Annotated[bool, typer.Option(
    "--lazy-tables", help="Adam steps only the embedding rows in each batch (their moments and "
                          "weight decay see only the steps they were in): for heavy-tailed "
                          "vocabularies")]
Progress = Annotated[bool, typer.Option(help="show progress bars")]
Overwrite = Annotated[bool, typer.Option(help="replace the run --out already holds")]
Rows = Annotated[int | None, typer.Option(help="read only the first N rows (a quick first look)")]
Track = Annotated[list[str] | None, typer.Option(
    "--track", help="send the finished run to mlflow or tensorboard (KIND, KIND=URI or "
                    "KIND=DIR; repeatable; needs the autodrs[mlflow] or [tensorboard] extra)")]
ConfigFile = Annotated[Path | None, typer.Option("--config", help="YAML file of settings (keys "
                                                                 "are flag names, e.g. a run's "
                                                                 "config.yaml); flags win")]

# a command's parameter names that differ from its setting's name
PARAM_TO_KEY = {"out_dir": "out", "fmt": "format", "time_col": "time", "spec_file": "spec"}
NOT_SETTINGS = ("click_ctx", "config", "set_")


def settings_from(click_ctx: click.Context | None, cls: type[S], params: dict[str, Any],
                  config: Path | None) -> S:
    """The command's settings: the ``--config`` file's values, then every flag given on the
    command line (all of them when there is no click context, as under Ray), with
    ``--out``'s default where neither sets it."""
    values: dict[str, Any] = {}
    where = "the command line"
    if config is not None:
        values = {str(k).replace("-", "_"): v for k, v in load_yaml(config).items()}
        where = str(config)
    for name, value in params.items():
        if name in NOT_SETTINGS:
            continue
        key = PARAM_TO_KEY.get(name, name)
        source = click_ctx.get_parameter_source(name) if click_ctx is not None else None
        given = click_ctx is None or (source is not None and source.name not in (
            "DEFAULT", "DEFAULT_MAP"))
        if given or (key == "out" and "out" not in values):
            values[key] = value
    return cls.from_mapping(values, where=where)


def typer_params(settings: RunSettings) -> dict[str, Any]:
    """The settings as the command function's parameters (for a launcher re-running it)."""
    names = {v: k for k, v in PARAM_TO_KEY.items()}
    return {names.get(k, k): v for k, v in settings.to_dict().items()}


# ---------------------------------------------------------------- commands
@app.command()
def datasets() -> None:
    """List the built-in datasets."""
    from autodrs.data.sources import BUILTINS

    table = RichTable("name", "description")
    for name, text in BUILTINS.items():
        table.add_row(name, text)
    out.print(table)


@app.command()
def methods() -> None:
    """List the search methods: component, strategies (the default first) and options."""
    import inspect

    import autodrs.methods  # noqa: F401  (fills the registry)
    from autodrs.config import options_read
    from autodrs.models.backbones import BACKBONES, SEQUENCE_BACKBONES
    from autodrs.search.base import METHODS
    from autodrs.search.strategies import STRATEGIES

    table = RichTable("method", "component", "strategies", "options (default)")
    for name in sorted(METHODS, key=lambda n: (METHODS[n].component, n)):
        cls = METHODS[name]
        source = inspect.getsourcefile(cls)
        opts = options_read(Path(source)) if source else {}
        table.add_row(name, cls.component, ", ".join(cls.strategies),
                      ", ".join(f"{k}={v}" for k, v in sorted(opts.items())) or "-")
    out.print(table)
    out.print(f"strategies: {', '.join(STRATEGIES)}", highlight=False)
    out.print(f"backbones (--model, --baselines): {', '.join(BACKBONES)}; on a sequence "
              f"task also {', '.join(SEQUENCE_BACKBONES)}", highlight=False)
    out.print("set an option with --set METHOD.OPTION=VALUE or `options: {METHOD: {OPTION: "
              "VALUE}}` in a --config file", highlight=False)


@app.command("make-synthetic")
@user_errors
def make_synthetic(
    out_path: Annotated[Path, typer.Option("--out", help="file to write (.gz: gzip'd text)")],
    rows: Annotated[int, typer.Option(help="number of rows")] = 1_000_000,
    seed: Seed = 0,
    fmt: Annotated[str, typer.Option("--format", help="parquet (planted-structure table), "
                                                      "or the criteo or avazu file layout")
                   ] = "parquet",
) -> None:
    """Write a synthetic dataset (any size, bounded memory) and its truth as JSON."""
    from autodrs.data.synthetic import write_synthetic

    if fmt != "parquet":
        from autodrs.data.criteo_gen import write_layout

        info = write_layout(fmt, out_path, rows=rows, seed=seed)
        out.print(f"wrote {rows} rows in the {fmt} layout to {out_path} (click rate "
                  f"{info['click_rate']:.3f}; truth: {out_path}.truth.json)", highlight=False)
        return
    truth = write_synthetic(out_path, rows=rows, seed=seed)
    out.print(f"wrote {rows} rows to {out_path} (truth: {out_path}.truth.json; "
              f"relevant fields {truth['relevant']})")


@app.command()
@user_errors
def train(
    click_ctx: typer.Context,
    data: Data = "movielens-100k",
    out_dir: Annotated[Path, typer.Option("--out", help="run folder")] = Path("runs/train"),
    model: Annotated[str, typer.Option(help="backbone (`autodrs methods` lists them)")
                     ] = "deepfm",
    spec_file: Annotated[Path | None, typer.Option("--spec", help="train this ArchSpec JSON "
                                                           "instead of a backbone")] = None,
    label: Label = None, labels: Labels = None, fmt: Fmt = None, categorical: Categorical = None,
    numerical: Numerical = None, sequence: Sequence = None, schema: SchemaFile = None,
    group: Group = None, time_col: Time = None, split: Split = "random", min_count: MinCount = 1,
    seed: Seed = 2026, epochs: Epochs = DEFAULT_EPOCHS, batch_size: BatchSize = 1024, lr: Lr = 1e-3,
    patience: Patience = 2, embed_dim: EmbedDim = 16, lazy_tables: LazyTables = False,
    device: Device = "auto",
    threads: Threads = None, progress: Progress = True, overwrite: Overwrite = False,
    rows: Rows = None, track: Track = None,
    bf16: Annotated[bool, typer.Option("--bf16", help="train under bfloat16 autocast")] = False,
    nproc: Annotated[int, typer.Option(help="data-parallel processes on this machine "
                                            "(launched through torchrun)")] = 1,
    backend: Annotated[str, typer.Option(help="local, or ray (Ray Train workers)")] = "local",
    workers: Annotated[int, typer.Option(help="Ray Train workers (--backend ray)")] = 2,
    gpus_per_worker: Annotated[float, typer.Option(help="GPUs per Ray Train worker")] = 0.0,
    config: ConfigFile = None,
) -> None:
    """Train one model and write DIR/result.json and the model files.

    With --nproc N (or under torchrun) or --backend ray the model trains data-parallel;
    --batch-size is then the global batch, split between the ranks."""
    params = dict(locals())  # the flags, before any name below joins them
    from autodrs.api import run_train
    from autodrs.train import distributed

    settings = settings_from(click_ctx, TrainSettings, params, config)
    if distributed.launch_train(train, click_ctx,
                                {**typer_params(settings), "click_ctx": click_ctx},
                                settings.nproc, settings.backend, settings.workers,
                                settings.gpus_per_worker):
        return  # trained by torchrun's or Ray's workers
    done = run_train(settings)
    if done is None:
        return  # a data-parallel rank other than 0
    t = done.metrics["test"]
    folder = done.folder
    out.print(f"{done.result['model']}: test AUC {t['auc']:.4f}  logloss {t['logloss']:.4f}  "
              f"({done.result['params']['total']:,} parameters, best epoch "
              f"{done.result['best_epoch']}) -> {folder / 'result.json'}")
    if tasks := task_line(t):
        out.print(tasks, highlight=False)
    if done.result["still_improving"]:
        from autodrs.experiment import epoch_cap_note

        out.print(epoch_cap_note([done.result["model"]], settings.epochs), highlight=False)


def task_line(metrics: dict[str, float]) -> str:
    """Each task's test AUC and logloss of a multi-task model (``auc:<task>`` keys; the
    line's ``test AUC`` is their mean); empty for one label."""
    tasks = [k[4:] for k in metrics if k.startswith("auc:")]
    return "per task: " + "; ".join(
        f"{k} AUC {metrics['auc:' + k]:.4f} logloss {metrics['logloss:' + k]:.4f}"
        for k in tasks) if tasks else ""


@app.command()
@user_errors
def bench(
    click_ctx: typer.Context,
    data: Data = "movielens-100k",
    out_dir: Annotated[Path, typer.Option("--out", help="run folder")] = Path("runs/bench"),
    baselines: Annotated[str, typer.Option(help="comma-separated backbones, or 'all'")] = "all",
    seeds: Annotated[int, typer.Option(help="number of seeds")] = 3,
    label: Label = None, labels: Labels = None, fmt: Fmt = None, categorical: Categorical = None,
    numerical: Numerical = None, sequence: Sequence = None, schema: SchemaFile = None,
    group: Group = None, time_col: Time = None, split: Split = "random", min_count: MinCount = 1,
    seed: Seed = 2026, epochs: Epochs = DEFAULT_EPOCHS, batch_size: BatchSize = 1024, lr: Lr = 1e-3,
    patience: Patience = 2, embed_dim: EmbedDim = 16, lazy_tables: LazyTables = False,
    device: Device = "auto",
    threads: Threads = None, overwrite: Overwrite = False, rows: Rows = None,
    config: ConfigFile = None,
) -> None:
    """A leaderboard of backbones over seeds on one dataset (Markdown and JSON)."""
    params = dict(locals())  # the flags, before any name below joins them
    from autodrs.api import run_bench

    settings = settings_from(click_ctx, BenchSettings, params, config)
    result = run_bench(settings)
    print_leaderboard(result["baselines"])
    out.print(f"leaderboard -> {Path(settings.out or 'runs/bench') / 'leaderboard.md'}")


@app.command()
@user_errors
def report(run_dir: Annotated[Path, typer.Argument(help="a run folder with result.json")]) -> None:
    """Render DIR/report.html from DIR/result.json."""
    from autodrs.report.html import build_report

    path = run_dir / "result.json"
    if not path.exists():
        raise FileNotFoundError(f"{path} not found; is {run_dir} a run folder?")
    names = build_report(json.loads(path.read_text()), run_dir / "report.html")
    out.print(f"{len(names)} plots -> {run_dir / 'report.html'}")


@app.command()
@user_errors
def track(
    run_dir: Annotated[Path, typer.Argument(help="a run folder with result.json")],
    to: Annotated[list[str], typer.Option(
        "--to", help="mlflow, mlflow=URI, tensorboard or tensorboard=DIR (repeatable)")],
    experiment: Annotated[str, typer.Option(help="MLflow experiment name")] = "autodrs",
    artifacts: Annotated[bool, typer.Option(help="upload the run's files to MLflow")] = True,
) -> None:
    """Send a finished run (settings, metrics, curves, files) to MLflow or TensorBoard."""
    from autodrs.tracking import export_run, parse_targets

    for line in export_run(run_dir, parse_targets(to), experiment=experiment,
                           artifacts=artifacts):
        out.print(line, highlight=False, soft_wrap=True)


@app.command()
@user_errors
def studies(run_dir: Annotated[Path, typer.Argument(help="a run folder")]) -> None:
    """List the Optuna studies a run's stages stored, to open in Optuna Dashboard."""
    from autodrs.tracking import study_urls

    if not run_dir.is_dir():
        raise FileNotFoundError(f"{run_dir} is not a folder")
    found = study_urls(run_dir)
    if not found:
        out.print(f"{run_dir}: no stage stored an Optuna study (only black-box stages do)",
                  highlight=False, soft_wrap=True)
        return
    for stage, url in found:
        out.print(f"{stage}: {url}", highlight=False, soft_wrap=True)
    out.print(f"open one with: pip install optuna-dashboard && optuna-dashboard {found[0][1]}",
              highlight=False, soft_wrap=True)


def print_leaderboard(board: dict[str, dict[str, Any]]) -> None:
    table = RichTable("model", "test AUC", "± std", "test logloss", "parameters", "seconds")
    for name, row in board.items():
        table.add_row(name, f"{row['test']['auc']:.4f}", f"{row['spread']['auc_std']:.4f}",
                      f"{row['test']['logloss']:.4f}", f"{row['params']['total']:,}",
                      f"{row['seconds']:.1f}")
    out.print(table)


@app.command("search")
@user_errors
def search_command(
    click_ctx: typer.Context,
    data: Data = "movielens-100k",
    out_dir: Annotated[Path, typer.Option("--out", help="run folder")] = Path("runs/search"),
    methods: Annotated[str | None, typer.Option(help="comma-separated search methods, run "
                                                     "as stages in order (`autodrs methods` "
                                                     "lists them)")] = None,
    strategy: Annotated[str | None, typer.Option(
        help="search strategy (default: each method's own; `autodrs methods`)")] = None,
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
        help="backbone the search starts from, or auto (the baseline with the best "
             "validation AUC; the default for the default pipeline, deepfm otherwise)")] = None,
    baselines: Annotated[str | None, typer.Option(help="comma-separated backbones to compare with, "
                                                "or 'none' (default: deepfm, and "
                                                f"{DEFAULT_BASELINES} for the default "
                                                "pipeline)")] = None,
    subsample: Annotated[float | None, typer.Option(help="train rows per trial: a fraction "
                                                         "(<= 1) or a count")] = None,
    trial_epochs: Annotated[int | None, typer.Option(help="epochs per trial")] = None,
    pruner: Annotated[str, typer.Option(help="none, median, sha or hyperband")] = "none",
    warm_start: Annotated[bool | None, typer.Option(
        help="start trials from the parent's weights (default: each method's own; AutoCTR "
             "warm-starts at low fidelity)")] = None,
    fast: Annotated[bool, typer.Option(help="the cheapest run of each method "
                                            "(smoke tests)")] = False,
    estimation: Annotated[str, typer.Option(help="train (each trial trains cheaply) or "
                                                 "weight_sharing (one supernet scores all "
                                                 "candidates; methods that have one)")] = "train",
    objectives: Annotated[str, typer.Option(
        help="auc, or auc then costs for a Pareto front: embedding_params, params, "
             "embedding_bytes, bytes, latency_ms (hparams, autofeature, autopi; see "
             "autodrs methods)")] = "auc",
    memory_budget: Annotated[str | None, typer.Option(
        help="cap on the stored embedding bytes, e.g. 2MB or 512KiB (rule, nis)")] = None,
    guard: Annotated[bool | None, typer.Option(
        help="retrain each stage's spec and keep it only when it validates at least as well "
             "as the stage's input (default: on for the default pipeline)")] = None,
    tune_baselines: Annotated[bool, typer.Option(
        help="give each baseline the searched model's training search (the optim stage's "
             "learning rates, when the pipeline has one) and report it untuned and tuned; "
             "--no-tune-baselines is quicker, and the table then says the baselines were "
             "not tuned")] = True,
    label: Label = None, labels: Labels = None, fmt: Fmt = None, categorical: Categorical = None,
    numerical: Numerical = None, sequence: Sequence = None, schema: SchemaFile = None,
    group: Group = None, time_col: Time = None, split: Split = "random", min_count: MinCount = 1,
    seed: Seed = 2026, epochs: Epochs = DEFAULT_EPOCHS, batch_size: BatchSize = 1024, lr: Lr = 1e-3,
    patience: Patience = 2, embed_dim: EmbedDim = 16, lazy_tables: LazyTables = False,
    device: Device = "auto",
    threads: Threads = None, progress: Progress = True, overwrite: Overwrite = False,
    rows: Rows = None, track: Track = None,
    config: ConfigFile = None,
    set_: Annotated[list[str] | None, typer.Option(
        "--set", help="a method's option, METHOD.OPTION=VALUE (repeatable; `autodrs methods` "
                      "lists them)")] = None,
) -> None:
    """Search a recommender's design, retrain it and compare it with baselines.

    Without --methods, runs the default pipeline (feature selection, embedding dims,
    interactions) on the data (movielens-100k by default)."""
    params = dict(locals())  # the flags, before any name below joins them
    from autodrs.api import run_search

    settings = settings_from(click_ctx, SearchSettings, params, config)
    if set_:
        settings = settings.replace(options=merge_options(settings.options, parse_set(set_)))
    done = run_search(settings)
    print_search(done.result, settings)


def board_rows(result: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    """The search's models as (name, how it trained, entry): the searched model, then each
    baseline as the command's --lr trains it and, where tuned, after the optim stage's
    search of its learning rate."""
    lr = (result.get("config") or {}).get("lr")
    how = "searched" if "optim" in result.get("methods", []) else "not searched"
    rows = [("searched", f"{how}, lr {lr:g}" if lr else how,
             {**result["metrics"], "params": result["params"]})]
    tuned = result.get("tuned_baselines") or {}
    for name, row in result["baselines"].items():
        lr = row.get("lr")
        rows.append((name, f"untuned, lr {lr:g}" if lr else "untuned", row))
        if name in tuned:
            rows.append((f"{name} (tuned)", tuned_label(tuned[name]), tuned[name]))
    return rows


def tuned_label(entry: dict[str, Any]) -> str:
    """How a tuned baseline trained: its chosen lr, and how many of the candidates the
    budget let its search try when it did not try them all."""
    tried = len(entry.get("candidates") or {})
    of = tried + int(entry.get("untried") or 0)
    return f"tuned, lr {entry['lr']:g}" + (f" ({tried} of {of} tried)" if tried < of else "")


def print_search(result: dict[str, Any], settings: SearchSettings) -> None:
    """The searched model against the baselines, and where the run folder is."""
    from autodrs.experiment import epoch_cap_note

    folder = Path(settings.out or "runs/search")
    table = RichTable("model", "training", "test AUC", "test logloss", "parameters",
                      "embedding params",
                      title=f"searched model against baselines on {result['data']['name']}")
    for name, training, row in board_rows(result):
        table.add_row(name, training, f"{row['test']['auc']:.4f}",
                      f"{row['test']['logloss']:.4f}", f"{row['params']['total']:,}",
                      f"{row['params']['embedding']:,}")
    out.print(table)
    tuning = result.get("baseline_tuning") or {}
    if result["baselines"] and not tuning.get("tuned", False):
        out.print(f"baselines not tuned: {tuning.get('reason', 'no tuning recorded')}",
                  highlight=False)
    for name, reason in (tuning.get("not_tuned") or {}).items():
        out.print(f"baseline {name} not tuned: {reason}", highlight=False)
    if tasks := task_line(result["metrics"]["test"]):
        out.print(f"searched {tasks}", highlight=False)
    if result["still_improving"]:
        out.print(epoch_cap_note(result["still_improving"], settings.epochs), highlight=False)
    cost = result["cost"]
    out.print(f"search {cost['search_seconds']:.1f}s, retrain {cost['retrain_seconds']:.1f}s; "
              f"report: {folder / 'report.html'}", highlight=False)
    out.print(f"-> {folder / 'result.json'}", highlight=False)


def main() -> None:
    app()
