"""Latency-bounded throughput tuning of the serving configuration (DeepRecInfra-style).

DeepRecSys (Gupta et al., ISCA 2020) measures recommendation inference on its DeepRecInfra
harness and schedules it (DeepRecSched) by picking the batch size and parallelism that
maximise throughput while the tail latency stays under a target.

Here: for every batch size ``b`` and thread count ``t``, score random raw rows drawn from the
model's own encoders repeatedly along the server's path (``Predictor.predict_columns``:
encoding + model, no HTTP or JSON) and record per-batch latency percentiles and throughput
``b / mean latency``; the choice is

    argmax_{(b, t): p95(b, t) <= target} throughput(b, t)

(ties go to the smaller batch, then fewer threads). The choice is saved as ``serving.json``
in the model folder, where ``autodrs serve`` reads it: ``b`` becomes the micro-batch size and
``t`` the model's thread count.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import torch

from autodrs.runfolder import ModelFileError, write_json
from autodrs.serve.encoder import Columns
from autodrs.serve.predictor import Predictor, sample_rows

SERVING_FILE = "serving.json"
DEFAULT_BATCH_SIZES = (1, 16, 64, 256, 1024)
WARMUP = 3


@dataclass
class ServingConfig:
    """How ``autodrs serve`` runs a model."""

    batch_size: int = 256  # most rows scored in one model call (micro-batch)
    threads: int = 1  # torch threads of the model call
    max_wait_ms: float = 2.0  # how long an open micro-batch waits for more requests
    max_request_rows: int = 10_000  # rows one request may carry
    p95_ms: float | None = None  # the target the tuning met, when tuned
    source: str = "default"

    def check(self) -> ServingConfig:
        if self.batch_size < 1 or self.threads < 1 or self.max_request_rows < 1:
            raise ValueError("batch_size, threads and max_request_rows must be >= 1")
        if self.max_wait_ms < 0:
            raise ValueError(f"max_wait_ms must be >= 0, got {self.max_wait_ms}")
        return self


@dataclass
class Measurement:
    batch_size: int
    threads: int
    p50_ms: float
    p95_ms: float
    p99_ms: float
    rows_per_second: float
    iterations: int
    meets_target: bool = field(default=False)


class NoSettingMeetsTarget(ValueError):
    """Every measured setting is slower than the latency target."""


def measure(predictor: Predictor, batch_sizes: list[int], threads: list[int],
            seconds: float = 1.0, max_iterations: int = 200, seed: int = 0) -> list[Measurement]:
    """Latency percentiles and throughput of every (batch size, threads) setting. Each
    setting runs ``WARMUP`` untimed batches, then timed batches until ``seconds`` or
    ``max_iterations`` is reached (at least 3)."""
    if not batch_sizes or not threads:
        raise ValueError("give at least one batch size and one thread count")
    if any(b < 1 for b in batch_sizes) or any(t < 1 for t in threads):
        raise ValueError("batch sizes and thread counts must be >= 1")
    before = torch.get_num_threads()
    requests = {b: _columns(sample_rows(predictor.schema, b, seed=seed + b))
                for b in batch_sizes}
    out = []
    try:
        for t in threads:
            torch.set_num_threads(t)
            for b in batch_sizes:
                columns = requests[b]
                for _ in range(WARMUP):
                    predictor.predict_columns(columns)
                latencies: list[float] = []
                start = time.perf_counter()
                while len(latencies) < max(3, max_iterations):
                    t0 = time.perf_counter()
                    predictor.predict_columns(columns)
                    latencies.append(time.perf_counter() - t0)
                    if len(latencies) >= 3 and time.perf_counter() - start >= seconds:
                        break
                ms = np.array(latencies) * 1000.0
                out.append(Measurement(
                    batch_size=b, threads=t,
                    p50_ms=float(np.percentile(ms, 50)), p95_ms=float(np.percentile(ms, 95)),
                    p99_ms=float(np.percentile(ms, 99)),
                    rows_per_second=float(b / np.mean(latencies)), iterations=len(latencies),
                ))
    finally:
        torch.set_num_threads(before)
    return out


def _columns(frame: pl.DataFrame) -> Columns:
    return {name: frame[name].to_list() for name in frame.columns}


def choose(measurements: list[Measurement], p95_ms: float) -> Measurement:
    """The setting with the highest throughput whose p95 latency meets ``p95_ms``; marks
    ``meets_target`` on every measurement."""
    if p95_ms <= 0:
        raise ValueError(f"the p95 target must be > 0 ms, got {p95_ms}")
    if not measurements:
        raise ValueError("no measurements to choose from")
    for m in measurements:
        m.meets_target = m.p95_ms <= p95_ms
    feasible = [m for m in measurements if m.meets_target]
    if not feasible:
        best = min(measurements, key=lambda m: m.p95_ms)
        raise NoSettingMeetsTarget(
            f"no setting meets p95 <= {p95_ms:g} ms; the lowest p95 was {best.p95_ms:.2f} ms "
            f"(batch {best.batch_size}, {best.threads} threads); raise the target or serve a "
            "smaller model"
        )
    return max(feasible, key=lambda m: (m.rows_per_second, -m.batch_size, -m.threads))


def config_from(choice: Measurement, p95_ms: float,
                base: ServingConfig | None = None) -> ServingConfig:
    base = base or ServingConfig()
    return ServingConfig(batch_size=choice.batch_size, threads=choice.threads,
                         max_wait_ms=base.max_wait_ms, max_request_rows=base.max_request_rows,
                         p95_ms=p95_ms, source="tune-serving")


def save_serving_config(folder: str | Path, config: ServingConfig,
                        measurements: list[Measurement] | None = None) -> Path:
    path = Path(folder) / SERVING_FILE
    data: dict[str, Any] = {"config": asdict(config.check())}
    if measurements is not None:
        data["measurements"] = [asdict(m) for m in measurements]
    write_json(path, data)
    return path


def load_serving_config(folder: str | Path) -> ServingConfig:
    """The saved serving configuration of a model folder, or the defaults when none."""
    path = Path(folder) / SERVING_FILE
    if not path.exists():
        return ServingConfig()
    try:
        data = json.loads(path.read_text())
        raw = data["config"]
        known = {f.name for f in fields(ServingConfig)}
        unknown = sorted(set(raw) - known)
        if unknown:
            raise ValueError(f"unknown keys {unknown}")
        config = ServingConfig(**raw)
        int_keys = ("batch_size", "threads", "max_request_rows")
        if not all(isinstance(getattr(config, k), int) for k in int_keys):
            raise ValueError(f"{', '.join(int_keys)} must be integers")
        return config.check()
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError, ValueError) as e:
        raise ModelFileError(f"{path} is not a valid serving configuration ({e}); run "
                             "`autodrs tune-serving` again or delete it") from e
