"""AutoFT against fine-tune-all, freeze-embeddings and scratch on a target domain.

For each seed the backbone is pre-trained on the source domain once (the split's seed and
the training seed both set to it), then AutoFT and each baseline train on the same target
split with the same trainer, epoch cap and early-stopping rule; test AUC is reported as
mean ± spread over the seeds and as paired differences (AutoFT minus each, per seed, mean ±
standard error). On the planted ``synthetic`` domains the table adds the Bayes-optimal AUC
of the target's test split and how well AutoFT's fine-tune rates rank the fields whose
effect changed (1 perfect, 0.5 chance).

    python benchmarks/transfer.py --data movielens --seeds 3
    python benchmarks/transfer.py --data synthetic --seeds 3
"""

from __future__ import annotations

import argparse
import time
from datetime import UTC, datetime

import numpy as np
import torch

from _common import machine_line, markdown_table, mean_std, paired_difference
from autodrs.data.dataset import load_dataset
from autodrs.methods.transfer.autoft import pretrain, rate_auc, run_autoft
from autodrs.methods.transfer.baselines import TRANSFER_BASELINES, run_baseline
from autodrs.models.backbones import backbone_spec
from autodrs.train.trainer import TrainConfig

PAIRS = {
    "movielens": ("movielens-100k?domain=source", "movielens-100k?domain=target"),
    "synthetic": ("synthetic?domain=source&rows=100000&seed=1",
                  "synthetic?domain=target&rows=20000&seed=1"),
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", choices=sorted(PAIRS), default="movielens")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--model", default="deepfm")
    ap.add_argument("--embed-dim", type=int, default=16)
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--policy-data", default="valid", choices=["valid", "train"])
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    source_name, target_name = PAIRS[args.data]
    names = ["autoft", *TRANSFER_BASELINES]
    auc: dict[str, list[float]] = {n: [] for n in names}
    seconds: dict[str, list[float]] = {n: [] for n in names}
    recovery, tuned, pre_auc, bayes = [], [], [], []
    started = time.perf_counter()
    for seed in range(args.seeds):
        source = load_dataset(source_name, seed=seed)
        target = load_dataset(target_name, seed=seed)
        config = TrainConfig(epochs=args.epochs, batch_size=1024, lr=args.lr, patience=2,
                             progress=False, threads=args.threads, seed=seed)
        pre = pretrain(source, backbone_spec(args.model, args.embed_dim), config)
        pre_auc.append(pre.metrics["test"]["auc"])
        run = run_autoft(pre, target, config, policy_data=args.policy_data)
        auc["autoft"].append(run.metrics["test"]["auc"])
        seconds["autoft"].append(run.seconds)
        tuned.append([u for u, r in run.rates.items() if r >= 0.5])
        truth = target.info.get("truth")
        if truth is not None:
            changed = truth["transfer"]["changed"]
            fields = [f for f in run.model.fields
                      if f in changed + truth["transfer"]["unchanged"]]
            recovery.append(rate_auc(run.rates, changed, fields))
            bayes.append(truth["bayes_auc"])
        for name in TRANSFER_BASELINES:
            o = run_baseline(name, pre, target, config)
            auc[name].append(o.metrics["test"]["auc"])
            seconds[name].append(o.seconds)
        print(f"seed {seed}: " + ", ".join(f"{n} {auc[n][-1]:.4f}" for n in names)
              + f"; autoft fine-tunes {', '.join(tuned[-1]) or 'nothing'}"
              + (f"; changed-field ranking {recovery[-1]:.3f}" if recovery else ""),
              flush=True)
    rows = [[n, mean_std(auc[n]),
             "-" if n == "autoft" else paired_difference(auc["autoft"], auc[n]),
             f"{np.mean(seconds[n]):.0f}"] for n in names]
    print()
    print(f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC; {machine_line()}; load average "
          f"{', '.join(f'{x:.1f}' for x in __import__('os').getloadavg())}")
    print(f"source {source_name} ({len(source.train):,} train rows), target {target_name} "
          f"({len(target.train):,} train rows); {args.model}-{args.embed_dim}, "
          f"{args.seeds} seeds, epoch cap {args.epochs}, patience 2, lr {args.lr}, policy on "
          f"{args.policy_data}; source model's test AUC on the source "
          f"{mean_std(pre_auc)}")
    print(markdown_table(["model", "target test AUC", "AutoFT minus it (paired)",
                          "seconds (mean)"], rows))
    if recovery:
        print(f"changed-field ranking by AutoFT's fine-tune rate: {mean_std(recovery)} "
              f"(0.5 chance); Bayes-optimal test AUC {mean_std(bayes)}")
    print(f"total {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
