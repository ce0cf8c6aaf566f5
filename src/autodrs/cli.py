"""The ``autodrs`` command line (see DESIGN.md for the contract)."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import numpy as np
import typer
from rich.console import Console
from rich.table import Table as RichTable

from autodrs.data.dataset import Dataset, load_dataset
from autodrs.data.errors import DataError
from autodrs.data.sources import BUILTINS
from autodrs.experiment import epoch_cap_note, fit_spec, machine_info, scale_warning
from autodrs.models.backbones import BACKBONES, backbone_spec
from autodrs.models.builder import count_bytes
from autodrs.report.html import build_report
from autodrs.runfolder import (
    ModelFileError,
    check_run_folder,
    prepare_run_folder,
    save_model,
    write_json,
)
from autodrs.serve.commands import (
    export_command,
    predict_command,
    serve_command,
    tune_serving_command,
)
from autodrs.spec import ArchSpec, SpecError
from autodrs.train import distributed
from autodrs.train.trainer import TrainConfig, TrainingDiverged
from autodrs.validation import check_flags, check_out_folder

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Automated design of deep recommender systems for CTR prediction.")
console = Console(stderr=True, soft_wrap=True)
out = Console()

F = TypeVar("F", bound=Callable[..., Any])

# ---------------------------------------------------------------- shared options
Data = Annotated[str, typer.Option("--data", help="built-in name (movielens-100k, synthetic) "
                                                  "or a CSV/TSV/Parquet/Criteo/Avazu file")]
Label = Annotated[str | None, typer.Option(help="label column (0/1)")]
Fmt = Annotated[str | None, typer.Option("--format", help="csv|tsv|parquet|criteo|avazu")]
Categorical = Annotated[str | None, typer.Option(help="comma-separated categorical fields")]
Numerical = Annotated[str | None, typer.Option(help="comma-separated numerical fields")]
Sequence = Annotated[str | None, typer.Option(help="comma-separated multi-valued fields")]
SchemaFile = Annotated[Path | None, typer.Option("--schema", help="YAML file with field kinds")]
Group = Annotated[str | None, typer.Option(help="group column for group AUC")]
Time = Annotated[str | None, typer.Option("--time", help="time column for a time-ordered split")]
Split = Annotated[str, typer.Option(help="random (80/10/10 by seed) or time")]
MinCount = Annotated[int, typer.Option(help="values rarer than this in train map to OOV")]
Seed = Annotated[int, typer.Option(help="random seed")]
Epochs = Annotated[int, typer.Option(help="maximum epochs")]
BatchSize = Annotated[int, typer.Option(help="training batch size")]
Lr = Annotated[float, typer.Option(help="Adam learning rate")]
Patience = Annotated[int, typer.Option(help="epochs without validation AUC gain before stopping")]
Device = Annotated[str, typer.Option(help="auto, cpu or cuda")]
Threads = Annotated[int | None, typer.Option(help="CPU threads (default: all available)")]
EmbedDim = Annotated[int, typer.Option(help="embedding dim of every field")]
Progress = Annotated[bool, typer.Option(help="show progress bars")]
Overwrite = Annotated[bool, typer.Option(help="replace the run --out already holds")]
Rows = Annotated[int | None, typer.Option(help="read only the first N rows (a quick first look)")]


def _split_list(value: str | None) -> list[str] | None:
    return [v.strip() for v in value.split(",") if v.strip()] if value else None


def dataset_from(data: str, label: str | None, fmt: str | None, categorical: str | None,
                 numerical: str | None, sequence: str | None, schema: Path | None,
                 group: str | None, time: str | None, split: str, seed: int,
                 min_count: int, rows: int | None = None) -> Dataset:
    if rows is not None and rows < 10:
        raise DataError(f"--rows must be at least 10 (to split 80/10/10), got {rows}")
    return load_dataset(
        data, label=label, fmt=fmt, categorical=_split_list(categorical),
        numerical=_split_list(numerical), sequence=_split_list(sequence), schema_file=schema,
        group=group, time=time, split=split, seed=seed, min_count=min_count, rows=rows,
        progress=True,
    )


def user_errors(fn: F) -> F:
    """Turn input errors into one clear line on stderr and exit code 2."""
    import functools

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except (DataError, SpecError, ModelFileError, FileNotFoundError) as e:
            console.print(f"[red]error:[/red] {e}", highlight=False)
            raise typer.Exit(2) from e
        except TrainingDiverged as e:
            console.print(f"[red]training diverged:[/red] {e}", highlight=False)
            raise typer.Exit(3) from e
        except ValueError as e:
            console.print(f"[red]error:[/red] {e}", highlight=False)
            raise typer.Exit(2) from e

    return wrapper  # type: ignore[return-value]


def check_run_flags(out_dir: Path, overwrite: bool, resume: bool = False,
                    can_resume: bool = False, **flags: Any) -> None:
    """The checks every command that writes a run folder makes before any work: each flag's
    value (``validation.check_flags``), that ``out_dir`` can be written, and that it holds
    no run this command would replace unasked."""
    check_flags(**flags)
    check_out_folder(out_dir)
    check_run_folder(out_dir, resume=resume, overwrite=overwrite, can_resume=can_resume)


def warn(text: str) -> None:
    console.print(f"[yellow]warning:[/yellow] {text}", highlight=False)


def note_scale(ds: Dataset, spec: ArchSpec) -> None:
    """Say so before training when the model this data implies is unreasonable for it."""
    text = scale_warning(ds, spec)
    if text is not None:
        warn(text)


def write_report(result: dict[str, Any], path: Path) -> bool:
    """Build the report; a failure costs only the report (result.json and the model are
    written before it) and is said in one line."""
    try:
        build_report(result, path)
    except Exception as e:  # the run's work is saved: never end it with a traceback here
        first = str(e).strip().splitlines()
        warn(f"{path.name} could not be built ({type(e).__name__}: "
             f"{first[0] if first else 'no message'}); result.json and the model are saved, "
             f"and `autodrs report {path.parent}` tries again")
        return False
    return True


def result_skeleton(command: str, ds: Dataset, seed: int) -> dict[str, Any]:
    return {
        "command": command,
        "data": dict(ds.info),
        "seed": seed,
        "spec": None,
        "metrics": {},
        "baselines": {},
        "params": {},
        "cost": {},
        "stages": [],
    }


# ---------------------------------------------------------------- commands
@app.command()
def datasets() -> None:
    """List the built-in datasets."""
    table = RichTable("name", "description")
    for name, text in BUILTINS.items():
        table.add_row(name, text)
    out.print(table)


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
    model: Annotated[str, typer.Option(help=f"backbone: {', '.join(BACKBONES)}")] = "deepfm",
    spec_file: Annotated[Path | None, typer.Option("--spec", help="train this ArchSpec JSON "
                                                           "instead of a backbone")] = None,
    label: Label = None, fmt: Fmt = None, categorical: Categorical = None,
    numerical: Numerical = None, sequence: Sequence = None, schema: SchemaFile = None,
    group: Group = None, time_col: Time = None, split: Split = "random", min_count: MinCount = 1,
    seed: Seed = 2026, epochs: Epochs = 10, batch_size: BatchSize = 1024, lr: Lr = 1e-3,
    patience: Patience = 2, embed_dim: EmbedDim = 16, device: Device = "auto",
    threads: Threads = None, progress: Progress = True, overwrite: Overwrite = False,
    rows: Rows = None,
    bf16: Annotated[bool, typer.Option("--bf16", help="train under bfloat16 autocast")] = False,
    nproc: Annotated[int, typer.Option(help="data-parallel processes on this machine "
                                            "(launched through torchrun)")] = 1,
    backend: Annotated[str, typer.Option(help="local, or ray (Ray Train workers)")] = "local",
    workers: Annotated[int, typer.Option(help="Ray Train workers (--backend ray)")] = 2,
    gpus_per_worker: Annotated[float, typer.Option(help="GPUs per Ray Train worker")] = 0.0,
) -> None:
    """Train one model and write DIR/result.json and the model files.

    With --nproc N (or under torchrun) or --backend ray the model trains data-parallel;
    --batch-size is then the global batch, split between the ranks."""
    check_run_flags(out_dir, overwrite, epochs=epochs, batch_size=batch_size, lr=lr,
                    patience=patience, threads=threads, seed=seed, device=device,
                    embed_dim=embed_dim, min_count=min_count)
    if distributed.launch_train(train, click_ctx, dict(locals()), nproc, backend, workers,
                                gpus_per_worker):
        return  # trained by torchrun's or Ray's workers
    rank = distributed.init_from_env(device)
    spec = ArchSpec.from_json(spec_file) if spec_file else backbone_spec(model, embed_dim)
    ds = dataset_from(data, label, fmt, categorical, numerical, sequence, schema, group,
                      time_col, split, seed, min_count, rows)
    spec.validate(ds.schema)
    config = TrainConfig(epochs=epochs, batch_size=batch_size, lr=lr, patience=patience,
                         seed=seed, device=device, threads=threads,
                         progress=progress and sys.stderr.isatty(),
                         precision="bf16" if bf16 else "fp32")
    if rank.main:
        note_scale(ds, spec)
        prepare_run_folder(out_dir, overwrite)
    outcome = fit_spec(ds, spec, config)
    if not rank.main:  # rank 0 writes the run folder
        return distributed.finish()
    save_model(out_dir, outcome.model, ds.schema)
    result = result_skeleton("train", ds, seed)
    result |= {
        "model": model if spec_file is None else str(spec_file),
        "spec": spec.to_dict(),
        "metrics": outcome.metrics,
        "params": outcome.params,
        "bytes": count_bytes(outcome.model),
        "cost": {"train_seconds": round(outcome.seconds, 3),
                 "train_samples_per_second": round(outcome.fit.samples_per_second, 1)},
        "history": outcome.fit.history,
        "still_improving": outcome.fit.still_improving,
        "config": {"epochs": epochs, "batch_size": batch_size, "lr": lr, "patience": patience,
                   "precision": config.precision, "world_size": rank.size},
        "machine": machine_info(config),
    }
    write_json(out_dir / "result.json", result)
    write_report(result, out_dir / "report.html")
    distributed.finish()
    t = outcome.metrics["test"]
    out.print(f"{model}: test AUC {t['auc']:.4f}  logloss {t['logloss']:.4f}  "
              f"({outcome.params['total']:,} parameters, best epoch {outcome.fit.best_epoch}) "
              f"-> {out_dir / 'result.json'}")
    if outcome.fit.still_improving:
        out.print(epoch_cap_note([model], epochs), highlight=False)


@app.command()
@user_errors
def bench(
    data: Data = "movielens-100k",
    out_dir: Annotated[Path, typer.Option("--out", help="run folder")] = Path("runs/bench"),
    baselines: Annotated[str, typer.Option(help="comma-separated backbones, or 'all'")] = "all",
    seeds: Annotated[int, typer.Option(help="number of seeds")] = 3,
    label: Label = None, fmt: Fmt = None, categorical: Categorical = None,
    numerical: Numerical = None, sequence: Sequence = None, schema: SchemaFile = None,
    group: Group = None, time_col: Time = None, split: Split = "random", min_count: MinCount = 1,
    seed: Seed = 2026, epochs: Epochs = 10, batch_size: BatchSize = 1024, lr: Lr = 1e-3,
    patience: Patience = 2, embed_dim: EmbedDim = 16, device: Device = "auto",
    threads: Threads = None, overwrite: Overwrite = False, rows: Rows = None,
) -> None:
    """A leaderboard of backbones over seeds on one dataset (Markdown and JSON)."""
    check_run_flags(out_dir, overwrite, seeds=seeds, epochs=epochs, batch_size=batch_size,
                    lr=lr, patience=patience, threads=threads, seed=seed, device=device,
                    embed_dim=embed_dim, min_count=min_count)
    names = list(BACKBONES) if baselines == "all" else _split_list(baselines) or []
    specs = {n: backbone_spec(n, embed_dim) for n in names}
    prepare_run_folder(out_dir, overwrite)
    runs: dict[str, list[dict[str, Any]]] = {n: [] for n in names}
    t0 = time.perf_counter()
    first: Dataset | None = None
    for k in range(seeds):
        s = seed + k
        ds = dataset_from(data, label, fmt, categorical, numerical, sequence, schema, group,
                          time_col, split, s, min_count, rows)
        first = first or ds
        config = TrainConfig(epochs=epochs, batch_size=batch_size, lr=lr, patience=patience,
                             seed=s, device=device, threads=threads, progress=False)
        for name, spec in specs.items():
            outcome = fit_spec(ds, spec, config)
            runs[name].append(outcome.summary())
            t = outcome.metrics["test"]
            console.print(f"seed {s} {name:>9}: test AUC {t['auc']:.4f} "
                          f"logloss {t['logloss']:.4f} ({outcome.seconds:.1f}s)", highlight=False)
    assert first is not None
    board = leaderboard(runs)
    result = result_skeleton("bench", first, seed)
    result |= {"seeds": [seed + k for k in range(seeds)], "baselines": board,
               "runs": runs, "cost": {"seconds": round(time.perf_counter() - t0, 2)},
               "machine": machine_info()}
    write_json(out_dir / "result.json", result)
    markdown = leaderboard_markdown(board, first.info["name"])
    (out_dir / "leaderboard.md").write_text(markdown)
    write_report(result, out_dir / "leaderboard.html")
    print_leaderboard(board)
    out.print(f"leaderboard -> {out_dir / 'leaderboard.md'}")


@app.command()
@user_errors
def report(run_dir: Annotated[Path, typer.Argument(help="a run folder with result.json")]) -> None:
    """Render DIR/report.html from DIR/result.json."""
    path = run_dir / "result.json"
    if not path.exists():
        raise FileNotFoundError(f"{path} not found; is {run_dir} a run folder?")
    names = build_report(json.loads(path.read_text()), run_dir / "report.html")
    out.print(f"{len(names)} plots -> {run_dir / 'report.html'}")


def leaderboard(runs: dict[str, list[dict[str, Any]]]) -> dict[str, dict[str, Any]]:
    board = {}
    for name, items in runs.items():
        aucs = np.array([r["metrics"]["test"]["auc"] for r in items])
        lls = np.array([r["metrics"]["test"]["logloss"] for r in items])
        board[name] = {
            "test": {"auc": float(aucs.mean()), "logloss": float(lls.mean())},
            "spread": {"auc_std": float(aucs.std()), "logloss_std": float(lls.std())},
            "params": items[0]["params"],
            "seconds": float(np.mean([r["seconds"] for r in items])),
        }
    return dict(sorted(board.items(), key=lambda kv: -kv[1]["test"]["auc"]))


def leaderboard_markdown(board: dict[str, dict[str, Any]], data_name: str) -> str:
    lines = [f"# Leaderboard: {data_name}", "",
             "| model | test AUC | ± | test logloss | ± | parameters | embedding | seconds |",
             "|---|---|---|---|---|---|---|---|"]
    for name, row in board.items():
        lines.append(
            f"| {name} | {row['test']['auc']:.4f} | {row['spread']['auc_std']:.4f} | "
            f"{row['test']['logloss']:.4f} | {row['spread']['logloss_std']:.4f} | "
            f"{row['params']['total']:,} | {row['params']['embedding']:,} | {row['seconds']:.1f} |")
    return "\n".join(lines) + "\n"


def print_leaderboard(board: dict[str, dict[str, Any]]) -> None:
    table = RichTable("model", "test AUC", "± std", "test logloss", "parameters", "seconds")
    for name, row in board.items():
        table.add_row(name, f"{row['test']['auc']:.4f}", f"{row['spread']['auc_std']:.4f}",
                      f"{row['test']['logloss']:.4f}", f"{row['params']['total']:,}",
                      f"{row['seconds']:.1f}")
    out.print(table)


import autodrs.search.commands  # noqa: E402, F401  (registers `search`; uses the options above)

app.command("export")(user_errors(export_command))
app.command("predict")(user_errors(predict_command))
app.command("serve")(user_errors(serve_command))
app.command("tune-serving")(user_errors(tune_serving_command))


def main() -> None:
    app()
