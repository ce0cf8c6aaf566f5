"""DeepFM training throughput through autodrs's Trainer versus a bare PyTorch loop.

Both train the same model (DeepFM, embedding 16, MLP 256-128) on the same pre-built
movielens-100k tensors, batch 1024, Adam 1e-3, same threads. Each measurement runs in a
fresh worker process (so peak resident memory is per run), alternating autodrs, bare,
autodrs, bare after one warm-up pair. Throughput = rows x epochs / seconds spent in
training steps (validation excluded for autodrs). The last line is
``ratio_to_bare=<autodrs / bare>``.

    python benchmarks/throughput.py [--repeats 3] [--epochs 2]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

import numpy as np


def worker(mode: str, epochs: int, threads: int) -> dict[str, float]:
    import torch

    from autodrs.data.dataset import load_dataset
    from autodrs.models import backbone_spec, build_model
    from autodrs.train.trainer import TrainConfig, Trainer, seed_everything

    torch.set_num_threads(threads)
    ds = load_dataset("movielens-100k", seed=2026)
    seed_everything(0)
    model = build_model(ds.schema, backbone_spec("deepfm"))
    rows = len(ds.train)
    if mode == "autodrs":
        trainer = Trainer(TrainConfig(epochs=epochs, batch_size=1024, patience=epochs + 1,
                                      progress=False, threads=threads, seed=0))
        result = trainer.fit(model, ds.train, ds.valid)
        seconds = result.train_seconds
    else:
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
        loss_fn = torch.nn.BCEWithLogitsLoss()
        generator = torch.Generator().manual_seed(0)
        train = ds.train
        seconds = 0.0
        for _ in range(epochs):
            model.train()
            t0 = time.perf_counter()
            order = torch.randperm(rows, generator=generator)
            for start in range(0, rows, 1024):
                idx = order[start:start + 1024]
                batch = train.batch(idx)
                loss = loss_fn(model(batch), batch.label)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
            seconds += time.perf_counter() - t0
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"samples_per_second": rows * epochs / seconds, "peak_mb": peak_mb}


def run(mode: str, epochs: int, threads: int) -> dict[str, float]:
    out = subprocess.run(
        [sys.executable, __file__, "--worker", mode, "--epochs", str(epochs),
         "--threads", str(threads)], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--worker", choices=["autodrs", "bare"])
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, args.epochs, args.threads)))
        return
    from _common import machine_line

    print(machine_line().replace("threads", "torch default threads") +
          f"; workers use {args.threads} threads")
    run("autodrs", 1, args.threads)  # warm-up pair (caches, page cache)
    run("bare", 1, args.threads)
    results: dict[str, list[dict[str, float]]] = {"autodrs": [], "bare": []}
    for r in range(args.repeats):
        for mode in ("autodrs", "bare"):
            res = run(mode, args.epochs, args.threads)
            results[mode].append(res)
            print(f"repeat {r + 1} {mode:>7}: {res['samples_per_second']:>10,.0f} samples/s, "
                  f"peak {res['peak_mb']:.0f} MB", flush=True)
    med = {m: float(np.median([x["samples_per_second"] for x in v])) for m, v in results.items()}
    spread = {m: float(np.ptp([x["samples_per_second"] for x in v])) for m, v in results.items()}
    mem = {m: float(np.median([x["peak_mb"] for x in v])) for m, v in results.items()}
    print(f"\nDeepFM on movielens-100k, batch 1024, {args.epochs} epochs x {args.repeats} repeats")
    print(f"{'':>8} {'median samples/s':>18} {'range':>10} {'peak MB':>9}")
    for m in ("autodrs", "bare"):
        print(f"{m:>8} {med[m]:>18,.0f} {spread[m]:>10,.0f} {mem[m]:>9.0f}")
    print(f"memory_ratio_to_bare={mem['autodrs'] / mem['bare']:.3f}")
    print(f"ratio_to_bare={med['autodrs'] / med['bare']:.3f}")


if __name__ == "__main__":
    main()
