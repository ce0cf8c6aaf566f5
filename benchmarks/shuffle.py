"""Test AUC of DeepFM trained with the disk cache's shuffle (shard order plus a shuffle
buffer) against a full shuffle in memory.

The cache is built with small shards (``--shard-rows``, default 2,048 rows) and the disk
reader's buffer is made small (``--shuffle-rows``, default 8,192), so a buffer holds only a
few shards in file order and training batches really differ from a full shuffle (with the
defaults, 1M-row shards and buffer, data this small would be shuffled in full). Both schemes
train from the same cache, the same initial weights and the same seed; only the batch order
differs. ``movielens-100k@time`` is MovieLens-100k with its rows sorted by time (written to
a Parquet file first): logs are often stored in time order, where a shard holds one period,
the hardest case for a partial shuffle (the rows still split at random, so the test split
spans every period). For each dataset and seed it prints both test AUCs; then the mean of each scheme
and the paired difference (shard+buffer minus full) with its standard error, and a markdown
table.

    python benchmarks/shuffle.py [--data movielens-100k,movielens-100k@time,synthetic?rows=100000]
        [--seeds 3]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time


def fit(data: str, scheme: str, seed: int, args: argparse.Namespace) -> dict[str, float]:
    from autodrs.data.dataset import load_dataset
    from autodrs.experiment import fit_spec
    from autodrs.models.backbones import backbone_spec
    from autodrs.train.trainer import TrainConfig

    ds = load_dataset(data, seed=2026, in_memory=scheme == "full")
    if scheme == "shard+buffer":
        for split in (ds.train, ds.valid, ds.test):
            split.shuffle_rows = args.shuffle_rows
    config = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=1e-3, patience=2,
                         progress=False, threads=args.threads, seed=seed, device="cpu")
    t0 = time.perf_counter()
    outcome = fit_spec(ds, backbone_spec("deepfm"), config)
    return {"test_auc": float(outcome.metrics["test"]["auc"]),
            "epochs": float(outcome.fit.best_epoch), "seconds": time.perf_counter() - t0,
            "train_rows": float(len(ds.train)), "shards": float(len(ds.train.pieces))
            if scheme != "full" else 0.0}


def time_ordered(folder: str) -> str:
    """MovieLens-100k sorted by rating time, as a Parquet file in ``folder``."""
    from autodrs.data.sources import load_table

    path = os.path.join(folder, "movielens-100k-by-time.parquet")
    load_table("movielens-100k").df.sort("timestamp").drop("timestamp").write_parquet(path)
    return path


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data",
                   default="movielens-100k,movielens-100k@time,synthetic?rows=100000")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--epochs", type=int, default=6)
    p.add_argument("--batch-size", type=int, default=1024)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--shard-rows", type=int, default=2048)
    p.add_argument("--shuffle-rows", type=int, default=8192)
    args = p.parse_args()
    import torch

    from _common import machine_line, markdown_table, mean_std, paired_difference
    from autodrs.data import cache

    torch.set_num_threads(args.threads)
    print(machine_line() + f"; load {os.getloadavg()[0]:.2f}")
    cache.SHARD_ROWS = args.shard_rows  # read when the cache is built
    rows = []
    with tempfile.TemporaryDirectory(prefix="autodrs-shuffle-") as folder:
        os.environ["AUTODRS_CACHE"] = folder  # a fresh cache with small shards
        for name in args.data.split(","):
            data = time_ordered(folder) if name == "movielens-100k@time" else name
            auc: dict[str, list[float]] = {"full": [], "shard+buffer": []}
            for seed in range(args.seeds):
                for scheme in auc:
                    res = fit(data, scheme, seed, args)
                    auc[scheme].append(res["test_auc"])
                    extra = (f", {int(res['shards'])} train shards" if res["shards"] else "")
                    print(f"{name} seed {seed} {scheme:>12}: test AUC {res['test_auc']:.4f} "
                          f"(best epoch {int(res['epochs'])}, {res['seconds']:.0f} s"
                          f"{extra})", flush=True)
            rows.append([name, mean_std(auc["full"]), mean_std(auc["shard+buffer"]),
                         paired_difference(auc["shard+buffer"], auc["full"])])
    print(f"\nDeepFM, batch {args.batch_size}, up to {args.epochs} epochs (patience 2), "
          f"{args.seeds} seeds; shards of {args.shard_rows:,} rows, shuffle buffer "
          f"{args.shuffle_rows:,} rows; load {os.getloadavg()[0]:.2f}\n")
    print(markdown_table(["data", "full shuffle (in memory)", "shard + buffer (disk)",
                          "paired difference"], rows))


if __name__ == "__main__":
    main()
