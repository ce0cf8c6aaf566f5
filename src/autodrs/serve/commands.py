"""The serving commands of the ``autodrs`` CLI: ``export``, ``predict``, ``serve`` and
``tune-serving``. ``cli.py`` registers each, wrapped in its ``user_errors``. FastAPI and uvicorn
are imported by ``serve`` only."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Annotated

import torch
import typer
from rich.console import Console
from rich.table import Table as RichTable

from autodrs.serve.export import export_model, sidecar_paths
from autodrs.serve.files import predict_file
from autodrs.serve.predictor import Predictor
from autodrs.serve.tuning import (
    Measurement,
    NoSettingMeetsTarget,
    ServingConfig,
    choose,
    config_from,
    load_serving_config,
    measure,
    save_serving_config,
)
from autodrs.train.trainer import default_threads
from autodrs.validation import check_flags, check_out_file

console = Console(stderr=True)
out = Console()

ModelDir = Annotated[Path, typer.Option("--model", help="model folder written by "
                                                        "`autodrs train` or `autodrs search`")]


def export_command(
    model: ModelDir,
    fmt: Annotated[str, typer.Option("--format", help="torchscript or onnx")],
    out_path: Annotated[Path, typer.Option("--out", help="file to write (e.g. model.onnx)")],
) -> None:
    """Export a model to TorchScript or ONNX, with its encoders beside it as JSON."""
    predictor = Predictor.from_folder(model)
    meta = export_model(predictor.model, predictor.schema, out_path, fmt)
    schema_path, meta_path = sidecar_paths(out_path)
    out.print(f"exported {model} to {out_path} ({fmt}; inputs {', '.join(meta['inputs'])}; "
              f"max |difference| to PyTorch {meta['max_abs_diff']:.1e}); encoders: "
              f"{schema_path}, metadata: {meta_path}", highlight=False)


def predict_command(
    model: ModelDir,
    data: Annotated[Path, typer.Option("--data", help="CSV, TSV, Parquet, Criteo or Avazu "
                                                      "file of raw rows (text may be .gz)")],
    out_path: Annotated[Path, typer.Option("--out", help="CSV, TSV or Parquet file to write")],
    fmt: Annotated[str | None, typer.Option("--format", help="csv|tsv|parquet|criteo|avazu "
                                                             "(default: guessed)")] = None,
    keep: Annotated[str | None, typer.Option(help="comma-separated input columns to copy "
                                                  "into the output (e.g. an id)")] = None,
    chunk_rows: Annotated[int, typer.Option(help="rows read and scored at a time")] = 65_536,
    threads: Annotated[int | None, typer.Option(help="CPU threads (default: all)")] = None,
) -> None:
    """Score every row of a file: raw rows in, click probabilities out, in bounded memory."""
    check_flags(threads=threads, chunk_rows=chunk_rows)
    check_out_file(out_path)
    torch.set_num_threads(threads or default_threads())
    predictor = Predictor.from_folder(model)
    columns = [c.strip() for c in keep.split(",") if c.strip()] if keep else []
    rows = predict_file(predictor, data, out_path, fmt=fmt, keep=columns, chunk_rows=chunk_rows)
    out.print(f"scored {rows:,} rows -> {out_path}", highlight=False)


def serve_command(
    model: ModelDir,
    host: Annotated[str, typer.Option(help="address to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="port to listen on")] = 8000,
    batch_size: Annotated[int | None, typer.Option(
        help="most rows per model call (default: serving.json, else 256)")] = None,
    threads: Annotated[int | None, typer.Option(
        help="model threads (default: serving.json, else 1)")] = None,
    max_wait_ms: Annotated[float | None, typer.Option(
        help="how long a micro-batch waits for more requests")] = None,
    max_rows: Annotated[int | None, typer.Option(help="most rows in one request")] = None,
    api_key_file: Annotated[Path | None, typer.Option(
        help="file holding an API key that every request must send, as 'Authorization: "
             "Bearer <key>' or 'X-API-Key: <key>' (default: $AUTODRS_API_KEY, else none)")
    ] = None,
    docs: Annotated[bool, typer.Option(help="serve /docs and /openapi.json")] = True,
) -> None:
    """Serve a model over HTTP: POST /predict with JSON rows, GET /health."""
    check_flags(port=port, threads=threads, batch_size=batch_size)
    import uvicorn

    from autodrs.serve.app import create_app, read_api_key

    api_key = read_api_key(api_key_file)
    predictor = Predictor.from_folder(model)
    config = _override(load_serving_config(model), batch_size, threads, max_wait_ms, max_rows)
    app = create_app(predictor, config, api_key=api_key, docs=docs)
    if host not in ("127.0.0.1", "localhost", "::1") and api_key is None:
        console.print(f"[yellow]warning:[/yellow] listening on {host} exposes the endpoint "
                      "beyond this machine; it has no authentication (--api-key-file)",
                      highlight=False)
    console.print(f"serving {model} on http://{host}:{port} (batch {config.batch_size}, "
                  f"{config.threads} threads, from {config.source}; "
                  f"{'API key required' if api_key else 'no API key'}); POST /predict, "
                  "GET /health", highlight=False)
    uvicorn.run(app, host=host, port=port, log_level="warning")


def _override(config: ServingConfig, batch_size: int | None, threads: int | None,
              max_wait_ms: float | None, max_rows: int | None) -> ServingConfig:
    changes = {k: v for k, v in (("batch_size", batch_size), ("threads", threads),
                                 ("max_wait_ms", max_wait_ms), ("max_request_rows", max_rows))
               if v is not None}
    if not changes:
        return config
    return replace(config, **changes, source=f"{config.source} + options").check()


def tune_serving_command(
    model: ModelDir,
    p95_ms: Annotated[float, typer.Option("--p95-ms", help="p95 latency target per batch")] = 10.0,
    batch_sizes: Annotated[str, typer.Option(help="comma-separated batch sizes")] =
        "1,16,64,256,1024",
    threads: Annotated[str | None, typer.Option(
        help="comma-separated thread counts (default: 1, 2, 4, ... up to the cores)")] = None,
    seconds: Annotated[float, typer.Option(help="time budget of each setting")] = 1.0,
    max_iterations: Annotated[int, typer.Option(help="most timed batches per setting")] = 200,
    seed: Annotated[int, typer.Option(help="seed of the random rows")] = 0,
) -> None:
    """Pick the batch size and threads with the most throughput whose p95 meets a target.

    Measures latency and throughput of every setting, prints the table and saves the choice
    in the model folder (serving.json), where `autodrs serve` reads it."""
    sizes = _int_list(batch_sizes, "--batch-sizes")
    counts = _int_list(threads, "--threads") if threads else _thread_counts(default_threads())
    predictor = Predictor.from_folder(model)
    current = load_serving_config(model)
    results = measure(predictor, sizes, counts, seconds=seconds, max_iterations=max_iterations,
                      seed=seed)
    try:
        choice = choose(results, p95_ms)
    except NoSettingMeetsTarget:
        _print_table(results, None)
        raise
    _print_table(results, choice)
    path = save_serving_config(model, config_from(choice, p95_ms, current), results)
    out.print(f"chose batch {choice.batch_size}, {choice.threads} threads: "
              f"{choice.rows_per_second:,.0f} rows/s at p95 {choice.p95_ms:.2f} ms "
              f"(target {p95_ms:g} ms) -> {path}", highlight=False)


def _int_list(text: str, option: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError as e:
        raise ValueError(f"{option} takes comma-separated integers, got {text!r}") from e
    if not values or any(v < 1 for v in values):
        raise ValueError(f"{option} takes integers >= 1, got {text!r}")
    return values


def _thread_counts(cores: int) -> list[int]:
    counts, t = [], 1
    while t < cores:
        counts.append(t)
        t *= 2
    return [*counts, cores]


def _print_table(results: list[Measurement], choice: Measurement | None) -> None:
    table = RichTable("batch", "threads", "p50 ms", "p95 ms", "p99 ms", "rows/s", "meets p95",
                      title="serving latency (encode + model, per batch)")
    for m in results:
        mark = "chosen" if m is choice else ("yes" if m.meets_target else "no")
        table.add_row(str(m.batch_size), str(m.threads), f"{m.p50_ms:.2f}", f"{m.p95_ms:.2f}",
                      f"{m.p99_ms:.2f}", f"{m.rows_per_second:,.0f}", mark)
    out.print(table)
