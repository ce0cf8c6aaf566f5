"""HTTP serving under load: requests per second and p50/p95/p99 latency on loopback.

Starts `autodrs serve` twice in subprocesses on 127.0.0.1 (no micro-batching: batch 1; and
micro-batching: batch --batch-size, waiting up to --max-wait-ms), and loads both from this
process with --concurrency clients, alternating the servers round by round after a warm-up.
Every level is bounded in requests (--requests, split over --rounds) and in time
(--round-seconds per round). Traffic stays on loopback.

    python benchmarks/serving.py [--model DIR] [--concurrency 1,8,32] [--requests 900]
                                 [--rounds 3] [--rows-per-request 1] [--batch-size 64]

Without --model, a DeepFM is trained for one epoch on synthetic?rows=20000 first.

--load-check runs the robustness check instead: one server (micro-batching, API key
required) takes --load-requests requests from --load-clients concurrent clients, a mix of
valid rows and invalid ones (bad JSON, deep nesting, a missing field, a wrong type, a
too-long value, too many rows, a wrong key), and the check reports p50/p95/p99 latency,
responses by status, whether the server stayed up and its resident memory before and after.

    python benchmarks/serving.py --load-check [--load-requests 10000] [--load-clients 32]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
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
    parser.add_argument("--load-check", action="store_true",
                        help="run the mixed valid/invalid load check instead")
    parser.add_argument("--load-requests", type=int, default=10_000)
    parser.add_argument("--load-clients", type=int, default=32)
    parser.add_argument("--invalid-share", type=float, default=0.3)
    args = parser.parse_args()
    if args.load_check:
        load_check(args)
        return
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


def start_server(model: Path, batch: int, wait_ms: float, threads: int,
                 key_file: Path | None = None) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    extra = ["--api-key-file", str(key_file)] if key_file else []
    proc = subprocess.Popen(
        [sys.executable, "-c", SERVE_MAIN, "serve", "--model", str(model), "--host", HOST,
         "--port", str(port), "--batch-size", str(batch), "--max-wait-ms", str(wait_ms),
         "--threads", str(threads), *extra],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://{HOST}:{port}"
    headers = {"X-API-Key": key_file.read_text().strip()} if key_file else {}
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            httpx.get(f"{url}/health", headers=headers, timeout=2).raise_for_status()
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


# ---------------------------------------------------------------- the load check
LOAD_KEY = "load-check-key-0123456789"


def invalid_bodies(row: dict[str, Any]) -> list[tuple[str, bytes, dict[str, str]]]:
    """Requests the server must refuse with a 4xx, each named."""
    field = next(k for k, v in row.items() if isinstance(v, int) and not isinstance(v, bool))
    good = {"X-API-Key": LOAD_KEY}
    return [
        ("bad json", b"[{", good),
        ("deep nesting", b"[" * 100_000, good),
        ("missing field", json.dumps([{k: v for k, v in row.items() if k != field}]).encode(),
         good),
        ("wrong type", json.dumps([row | {field: {"a": 1}}]).encode(), good),
        ("float for an integer field", json.dumps([row | {field: 1234567.5}]).encode(), good),
        ("long value", json.dumps([row | {field: "x" * 10_000}]).encode(), good),
        ("too many rows", json.dumps([row] * 10_001).encode(), good),
        ("wrong key", json.dumps([row]).encode(), {"X-API-Key": "wrong"}),
    ]


def resident_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def load_check(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        model = args.model or train_model(Path(tmp) / "model")
        key_file = Path(tmp) / "key"
        key_file.write_text(LOAD_KEY)
        rows = load_table("synthetic?rows=20000&seed=0").df.head(2000).drop(
            "label", "_p_true").to_dicts()
        proc, url = start_server(model, args.batch_size, args.max_wait_ms, args.threads,
                                 key_file)
        try:
            before = resident_mb(proc.pid)
            result = asyncio.run(load_run(url, rows, args))
            after = resident_mb(proc.pid)
            alive = proc.poll() is None
            health = httpx.get(f"{url}/health", headers={"X-API-Key": LOAD_KEY},
                               timeout=10).status_code
        finally:
            proc.terminate()
            proc.wait(timeout=30)
    latencies, statuses, seconds = result
    print(machine_line())
    print(f"load check: {args.load_requests:,} requests from {args.load_clients} clients on "
          f"{HOST}, {args.invalid_share:.0%} invalid; server batch {args.batch_size}, "
          f"{args.threads} thread(s), API key required; {seconds:.1f} s")
    header = ["kind", "requests", "p50 ms", "p95 ms", "p99 ms"]
    table = []
    for kind, values in sorted(latencies.items()):
        ms = np.array(values) * 1000
        table.append([kind, len(ms), *(f"{np.percentile(ms, q):.2f}" for q in (50, 95, 99))])
    print(markdown_table(header, table))
    print(markdown_table(["kind", "status", "responses"],
                         [[k, s, n] for (k, s), n in sorted(statuses.items())]))
    print(f"server process alive after the run: {alive}; /health after: {health}; "
          f"resident memory before {before:.0f} MB, after {after:.0f} MB")


async def load_run(url: str, rows: list[dict[str, Any]], args: argparse.Namespace
                   ) -> tuple[dict[str, list[float]], dict[tuple[str, object], int], float]:
    """Send the mix; returns latencies by kind, responses by (kind, status) and wall time."""
    rng = random.Random(0)
    bad = invalid_bodies(rows[0])
    good = {"X-API-Key": LOAD_KEY, "content-type": "application/json"}
    plan = []
    for i in range(args.load_requests):
        if rng.random() < args.invalid_share:
            plan.append(bad[i % len(bad)])
        else:
            plan.append(("valid", json.dumps([rows[i % len(rows)]]).encode(), good))
    latencies: dict[str, list[float]] = {}
    statuses: dict[tuple[str, object], int] = {}
    position = 0

    async def worker(client: httpx.AsyncClient) -> None:
        nonlocal position
        while position < len(plan):
            kind, body, headers = plan[position]
            position += 1
            t0 = time.perf_counter()
            try:
                response = await client.post(f"{url}/predict", content=body, headers=headers)
                status: object = response.status_code
            except httpx.HTTPError as e:
                status = type(e).__name__
            group = "valid" if kind == "valid" else "invalid"
            latencies.setdefault(group, []).append(time.perf_counter() - t0)
            statuses[(kind, status)] = statuses.get((kind, status), 0) + 1

    start = time.perf_counter()
    limits = httpx.Limits(max_connections=args.load_clients)
    async with httpx.AsyncClient(timeout=60, limits=limits) as client:
        await asyncio.gather(*(worker(client) for _ in range(args.load_clients)))
    return latencies, statuses, time.perf_counter() - start


if __name__ == "__main__":
    main()
