"""The sequence task: flat DeepFM (the history mean-pooled), DIN-style target attention,
SASRec/BST-style self-attention and the model AMEIR finds, on ``movielens-100k?history=N``.

Per seed, one data split; every model is trained by the same trainer with the same epoch
cap, batch size and learning rate; AMEIR searches from DeepFM on that seed and its spec is
retrained from scratch like the others. Prints test AUC and group AUC (per user, weighted
by impressions) as mean ± spread over seeds, and the paired differences against DeepFM and
against the best hand-made model of each seed.

    python benchmarks/sequence.py --seeds 3 --epochs 15 --jobs 3
"""

from __future__ import annotations

import argparse
import json
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch

from _common import machine_line, markdown_table, mean_std, paired_difference

HAND_MADE = ("deepfm", "din", "sasrec")


def run_seed(args: argparse.Namespace, seed: int) -> dict[str, Any]:
    from autodrs.experiment import shared_fits

    # AMEIR's stand-alone check trains its start (DeepFM) with the same config as the row
    # above, and the found model's retrain is one of its checks: each is trained once
    with shared_fits():
        return _run_seed(args, seed)


def _run_seed(args: argparse.Namespace, seed: int) -> dict[str, Any]:
    from autodrs.data.dataset import load_dataset
    from autodrs.experiment import fit_spec
    from autodrs.models import backbone_spec
    from autodrs.search.base import SearchContext, get_method
    from autodrs.train.trainer import TrainConfig

    torch.set_num_threads(args.threads)
    ds = load_dataset(args.data, seed=seed, rows=args.rows)
    config = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                         patience=args.patience, progress=False, threads=args.threads,
                         seed=seed)
    out: dict[str, Any] = {"seed": seed, "models": {}}
    for name in HAND_MADE:
        fit = fit_spec(ds, backbone_spec(name, args.dim), config)
        out["models"][name] = {**fit.metrics["test"], "seconds": fit.seconds,
                               "best_epoch": fit.fit.best_epoch}
    t0 = time.perf_counter()
    ctx = SearchContext(ds, backbone_spec("deepfm", args.dim), config, seed=seed,
                        options={"search_epochs": args.search_epochs,
                                 "refine_epochs": args.refine_epochs,
                                 "candidates": args.candidates, "check": args.check})
    found = get_method("ameir").search(ctx)
    search_seconds = time.perf_counter() - t0
    fit = fit_spec(ds, found.spec, config)
    out["models"]["ameir"] = {**fit.metrics["test"], "seconds": fit.seconds,
                              "best_epoch": fit.fit.best_epoch,
                              "search_seconds": search_seconds}
    out["architecture"] = found.extra["architecture"]
    out["check"] = found.extra["check"]
    out["check_bounds"] = found.extra.get("check_bounds", {})
    print(f"seed {seed} done: " + ", ".join(f"{n} {m['auc']:.4f}"
                                           for n, m in out["models"].items()), flush=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default="movielens-100k?history=20")
    parser.add_argument("--rows", type=int, default=None,
                        help="the first rows only (histories are built on the whole log)")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--first-seed", type=int, default=0)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=1024)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--dim", type=int, default=16)
    parser.add_argument("--search-epochs", type=int, default=2)
    parser.add_argument("--refine-epochs", type=int, default=1)
    parser.add_argument("--candidates", type=int, default=8)
    parser.add_argument("--check", type=int, default=3,
                        help="AMEIR's stand-alone check: full architectures trained alone "
                             "(1: none)")
    parser.add_argument("--patience", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--jobs", type=int, default=1, help="seeds run at once")
    parser.add_argument("--json", type=Path, default=None, help="write the per-seed figures")
    args = parser.parse_args()
    seeds = list(range(args.first_seed, args.first_seed + args.seeds))
    t0 = time.perf_counter()
    with ProcessPoolExecutor(max_workers=args.jobs) as pool:
        runs = list(pool.map(run_seed, [args] * len(seeds), seeds))
    if args.json:
        args.json.write_text(json.dumps(runs, indent=2))
    print(machine_line())
    print(f"data {args.data}, rows {args.rows or 'all'}; seeds {seeds}; epoch cap {args.epochs}, batch {args.batch_size}, "
          f"patience {args.patience}, lr {args.lr}, dim {args.dim}; AMEIR search_epochs "
          f"{args.search_epochs}, candidates {args.candidates}, check {args.check}; "
          f"{args.jobs} seeds at once; "
          f"wall {time.perf_counter() - t0:.0f} s")
    for run in runs:
        print(f"seed {run['seed']}: AMEIR found {run['architecture']}; best epochs "
              + ", ".join(f"{n} {m['best_epoch']}" for n, m in run["models"].items()))
        print(f"  stand-alone check (valid AUC): {run['check']}")
        print(f"  lower bound of each lead over the start (kept only above 0): "
              f"{run['check_bounds']}")
    names = [*HAND_MADE, "ameir"]

    def values(name: str, key: str) -> list[float]:
        return [run["models"][name][key] for run in runs]

    def best_hand(key: str) -> list[float]:
        return [max(run["models"][n][key] for n in HAND_MADE) for run in runs]

    rows = []
    for name in names:
        rows.append([
            name, mean_std(values(name, "auc")), mean_std(values(name, "gauc")),
            paired_difference(values(name, "auc"), values("deepfm", "auc")),
            paired_difference(values(name, "gauc"), values("deepfm", "gauc")),
            f"{np.mean(values(name, 'seconds')):.0f}"])
    print(markdown_table(["model", "test AUC", "test gAUC", "ΔAUC vs DeepFM",
                          "ΔgAUC vs DeepFM", "fit s"], rows))
    print(f"AMEIR against the best hand-made model of each seed: "
          f"AUC {paired_difference(values('ameir', 'auc'), best_hand('auc'))}, "
          f"gAUC {paired_difference(values('ameir', 'gauc'), best_hand('gauc'))}; "
          f"search {np.mean(values('ameir', 'search_seconds')):.0f} s per seed")


if __name__ == "__main__":
    main()
