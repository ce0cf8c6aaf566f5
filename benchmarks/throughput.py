"""DeepFM training throughput: autodrs from the on-disk cache, autodrs in memory, and a bare
PyTorch loop over the same tensors.

All three train the same model (DeepFM, embedding 16, MLP 256-128) from the same encoded
cache, batch 1024, Adam 1e-3, same threads:
- ``disk``: ``load_dataset(in_memory=False)``, the Trainer reading ``DiskData`` batches
  (shard order plus a shuffle buffer, read ahead on a background thread);
- ``memory``: ``load_dataset(in_memory=True)``, the Trainer over in-memory tensors;
- ``bare``: the in-memory tensors, a hand-written loop (randperm, index, forward, backward,
  Adam step) with no validation, hooks or checks.

The cache is built once in a temporary folder (``--shard-rows`` / ``--shuffle-rows`` make
shards and the shuffle buffer smaller, so the disk path reads several buffers per epoch).
Each measurement runs in a fresh process (peak resident memory is per run), interleaved
disk, memory, bare, ... after one warm-up round. Throughput = train rows x epochs / seconds
spent in training steps (validation excluded), and per CPU-second of the process (all its
threads; steadier than wall time on a shared machine). The last lines are the ratios of
medians.

    python benchmarks/throughput.py [--data synthetic?rows=1000000] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

import numpy as np

MODES = ("disk", "memory", "bare")


def worker(mode: str, data: str, epochs: int, threads: int, batch_size: int,
           shard_rows: int | None, shuffle_rows: int | None) -> dict[str, float]:
    import torch

    from autodrs.data import cache
    from autodrs.data.dataset import load_dataset
    from autodrs.models import backbone_spec, build_model
    from autodrs.train.trainer import TrainConfig, Trainer, seed_everything

    torch.set_num_threads(threads)
    if shard_rows:
        cache.SHARD_ROWS = shard_rows  # read at build time (the first, warm-up run)
    ds = load_dataset(data, seed=2026, in_memory=mode != "disk")
    if mode == "disk" and shuffle_rows:
        ds.train.shuffle_rows = shuffle_rows
    seed_everything(0)
    model = build_model(ds.schema, backbone_spec("deepfm"))
    rows = len(ds.train)
    if mode in ("disk", "memory"):
        trainer = Trainer(TrainConfig(epochs=epochs, batch_size=batch_size,
                                      patience=epochs + 1, progress=False, threads=threads,
                                      seed=0, device="cpu"))
        # first-use costs out of the CPU timing, as the bare loop has them before its clock
        # starts: metrics' imports, and the first Adam's import of torch._dynamo (~1 s)
        trainer.evaluate(model, ds.valid)
        torch.optim.Adam(model.parameters())
        c0 = time.process_time()
        result = trainer.fit(model, ds.train, ds.valid)
        cpu = time.process_time() - c0
        seconds = result.train_seconds
        c0 = time.process_time()  # one validation pass, to take out of the fit's CPU time
        trainer.evaluate(model, ds.valid)
        cpu -= len(result.history) * (time.process_time() - c0)
    else:
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
        loss_fn = torch.nn.BCEWithLogitsLoss()
        generator = torch.Generator().manual_seed(0)
        train = ds.train
        seconds, cpu = 0.0, 0.0
        for _ in range(epochs):
            model.train()
            t0, c0 = time.perf_counter(), time.process_time()
            order = torch.randperm(rows, generator=generator)
            for start in range(0, rows, batch_size):
                batch = train.batch(order[start:start + batch_size])
                loss = loss_fn(model(batch), batch.label)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
            seconds += time.perf_counter() - t0
            cpu += time.process_time() - c0
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"samples_per_second": rows * epochs / seconds,
            "samples_per_cpu_second": rows * epochs / cpu, "peak_mb": peak_mb,
            "rows": rows, "cache_bytes": ds.info["cache"]["bytes"],
            "in_memory": ds.info["cache"]["in_memory"]}


def run(mode: str, args: argparse.Namespace, epochs: int) -> dict[str, float]:
    cmd = [sys.executable, __file__, "--worker", mode, "--data", args.data, "--epochs",
           str(epochs), "--threads", str(args.threads), "--batch-size", str(args.batch_size)]
    for flag in ("shard_rows", "shuffle_rows"):
        if getattr(args, flag):
            cmd += [f"--{flag.replace('_', '-')}", str(getattr(args, flag))]
    out = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if out.returncode:
        sys.exit(f"{mode} run failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="synthetic?rows=1000000")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=1024)
    parser.add_argument("--shard-rows", type=int, help="rows per cache shard")
    parser.add_argument("--shuffle-rows", type=int, help="rows of the disk shuffle buffer")
    parser.add_argument("--worker", choices=MODES)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, args.data, args.epochs, args.threads,
                                args.batch_size, args.shard_rows, args.shuffle_rows)))
        return
    from _common import machine_line

    print(machine_line().replace("threads", "torch default threads") +
          f"; workers use {args.threads} threads; load {os.getloadavg()[0]:.2f}")
    with tempfile.TemporaryDirectory(prefix="autodrs-throughput-") as folder:
        os.environ["AUTODRS_CACHE"] = folder  # a fresh cache, built by the warm-up round
        for mode in MODES:
            run(mode, args, 1)
        results: dict[str, list[dict[str, float]]] = {m: [] for m in MODES}
        for r in range(args.repeats):
            for mode in MODES:
                res = run(mode, args, args.epochs)
                results[mode].append(res)
                print(f"repeat {r + 1} {mode:>6}: {res['samples_per_second']:>10,.0f} "
                      f"samples/s, {res['samples_per_cpu_second']:>10,.0f} samples/CPU-s, "
                      f"peak {res['peak_mb']:.0f} MB", flush=True)

    def median(key: str) -> dict[str, float]:
        return {m: float(np.median([x[key] for x in v])) for m, v in results.items()}

    med, cpu, mem = median("samples_per_second"), median("samples_per_cpu_second"), \
        median("peak_mb")
    spread = {m: float(np.ptp([x["samples_per_second"] for x in v])) for m, v in results.items()}
    first = results["disk"][0]
    print(f"\nDeepFM on {args.data}: {first['rows']:,} train rows, cache "
          f"{first['cache_bytes'] / 1e6:.0f} MB, batch {args.batch_size}, {args.epochs} "
          f"epoch(s) x {args.repeats} repeats; load {os.getloadavg()[0]:.2f}")
    print(f"{'':>8} {'median samples/s':>18} {'range':>10} {'samples/CPU-s':>14} "
          f"{'peak MB':>9}")
    for m in MODES:
        print(f"{m:>8} {med[m]:>18,.0f} {spread[m]:>10,.0f} {cpu[m]:>14,.0f} {mem[m]:>9.0f}")
    for a, b in (("disk", "memory"), ("disk", "bare"), ("memory", "bare")):
        target = " (target >= 0.9)" if a == "disk" else ""
        print(f"{a}_to_{b}={med[a] / med[b]:.3f}; per CPU-second "
              f"{cpu[a] / cpu[b]:.3f}{target}")


if __name__ == "__main__":
    main()
