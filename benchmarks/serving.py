"""HTTP serving under load: requests per second and p50/p95/p99 latency on loopback.

Starts `autodrs serve` twice in subprocesses on 127.0.0.1 (no micro-batching: batch 1; and
micro-batching: batch --batch-size, waiting up to --max-wait-ms), and loads both from this
process with --concurrency clients, alternating the servers round by round after a warm-up.
Every level is bounded in requests (--requests, split over --rounds) and in time
(--round-seconds per round). Traffic stays on loopback.

    python benchmarks/serving.py [--model DIR] [--concurrency 1,8,32] [--requests 900]
                                 [--rounds 3] [--rows-per-request 1] [--batch-size 64]

Without --model, a DeepFM is trained for one epoch on synthetic?rows=20000 first.
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from _common import machine_line, markdown_table
from autodrs.data.dataset import load_dataset
from autodrs.data.sources import load_table
from autodrs.experiment import fit_spec
from autodrs.models import backbone_spec
from autodrs.runfolder import save_model
from autodrs.train.trainer import TrainConfig

HOST = "127.0.0.1"
WARMUP_REQUESTS = 50
# the `autodrs` entry point, run by this interpreter
SERVE_MAIN = "from autodrs.cli import main; main()"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=None)
    parser.add_argument("--concurrency", default="1,8,32")
    parser.add_argument("--requests", type=int, default=900,
                        help="requests per server and concurrency level, over all rounds")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--round-seconds", type=float, default=20.0)
    parser.add_argument("--rows-per-request", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--max-wait-ms", type=float, default=2.0)
    parser.add_argument("--threads", type=int, default=1, help="model threads of each server")
    args = parser.parse_args()
    levels = [int(c) for c in args.concurrency.split(",")]

    with tempfile.TemporaryDirectory() as tmp:
        model = args.model or train_model(Path(tmp) / "model")
        rows = load_table("synthetic?rows=20000&seed=0").df.head(2000).to_dicts()
        servers = {
            "batch 1": start_server(model, 1, 0.0, args.threads),
            f"batch {args.batch_size}": start_server(model, args.batch_size, args.max_wait_ms,
                                                     args.threads),
        }
        try:
            results = asyncio.run(load_all(servers, rows, levels, args))
        finally:
            for proc, _ in servers.values():
                proc.terminate()
                proc.wait(timeout=30)
    print(machine_line())
    print(f"model: {model if args.model else 'deepfm, 1 epoch on synthetic?rows=20000'}; "
          f"{args.rows_per_request} row(s) per request; server threads {args.threads}; "
          f"{args.rounds} alternating rounds of {args.requests // args.rounds} requests per "
          f"server and level (at most {args.round_seconds:g} s each)")
    header = ["server", "clients", "requests", "errors", "req/s (median round)",
              "req/s min-max", "p50 ms", "p95 ms", "p99 ms", "model calls"]
    print(markdown_table(header, results))


def train_model(folder: Path) -> Path:
    ds = load_dataset("synthetic?rows=20000&seed=0", seed=0)
    config = TrainConfig(epochs=1, batch_size=256, progress=False, threads=1, seed=0)
    save_model(folder, fit_spec(ds, backbone_spec("deepfm", 16), config).model, ds.schema)
    return folder


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def start_server(model: Path, batch: int, wait_ms: float,
                 threads: int) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-c", SERVE_MAIN, "serve", "--model", str(model), "--host", HOST,
         "--port", str(port), "--batch-size", str(batch), "--max-wait-ms", str(wait_ms),
         "--threads", str(threads)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://{HOST}:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            httpx.get(f"{url}/health", timeout=2).raise_for_status()
            return proc, url
        except httpx.TransportError:
            time.sleep(0.2)
    proc.terminate()
    raise RuntimeError("server did not start in 120 s")


async def load_all(servers: dict[str, tuple[subprocess.Popen[bytes], str]],
                   rows: list[dict[str, Any]], levels: list[int],
                   args: argparse.Namespace) -> list[list[object]]:
    per_round = max(1, args.requests // args.rounds)
    table = []
    async with httpx.AsyncClient(timeout=30, limits=httpx.Limits(max_connections=256)) as client:
        for _, url in servers.values():
            await run_round(client, url, rows, 4, WARMUP_REQUESTS, 60, args.rows_per_request)
        for clients in levels:
            stats: dict[str, dict[str, list[Any]]] = {
                name: {"latency": [], "rps": [], "errors": [], "calls": []} for name in servers}
            for _ in range(args.rounds):
                for name, (_, url) in servers.items():  # alternate A, B, A, B
                    before = (await client.get(f"{url}/health")).json()["served"]["model_calls"]
                    latency, errors, seconds = await run_round(
                        client, url, rows, clients, per_round, args.round_seconds,
                        args.rows_per_request)
                    after = (await client.get(f"{url}/health")).json()["served"]["model_calls"]
                    s = stats[name]
                    s["latency"] += latency
                    s["rps"].append(len(latency) / seconds)
                    s["errors"].append(errors)
                    s["calls"].append(after - before)
            for name, s in stats.items():
                ms = np.array(s["latency"]) * 1000
                table.append([
                    name, clients, len(ms), sum(s["errors"]), f"{np.median(s['rps']):.0f}",
                    f"{min(s['rps']):.0f}-{max(s['rps']):.0f}",
                    *(f"{np.percentile(ms, q):.2f}" for q in (50, 95, 99)), sum(s["calls"]),
                ])
    return table


async def run_round(client: httpx.AsyncClient, url: str, rows: list[dict[str, Any]],
                    clients: int, requests: int, seconds: float,
                    rows_per_request: int) -> tuple[list[float], int, float]:
    """``clients`` concurrent loops posting until ``requests`` are sent or ``seconds`` pass.
    Returns the latencies of successful requests, the error count and the wall time."""
    latencies: list[float] = []
    errors = 0
    sent = 0
    start = time.perf_counter()
    deadline = start + seconds

    async def worker() -> None:
        nonlocal sent, errors
        while sent < requests and time.perf_counter() < deadline:
            i = sent
            sent += 1
            body = [rows[(i * rows_per_request + k) % len(rows)] for k in range(rows_per_request)]
            t0 = time.perf_counter()
            try:
                response = await client.post(f"{url}/predict", json=body)
                ok = response.status_code == 200
            except httpx.HTTPError:
                ok = False
            if ok:
                latencies.append(time.perf_counter() - t0)
            else:
                errors += 1

    await asyncio.gather(*(worker() for _ in range(clients)))
    return latencies, errors, time.perf_counter() - start


if __name__ == "__main__":
    main()
