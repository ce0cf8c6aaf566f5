"""Test AUC and logloss of every backbone on movielens-100k and synthetic, over seeds.

Beside the synthetic rows: the Bayes-optimal AUC (from the true click probabilities) and
the oracle-structure model (the same trainer given only the true fields and pairs).

    python benchmarks/backbones.py [--datasets movielens-100k,synthetic?rows=1000000]
                                   [--seeds 3] [--models all] [--epochs 10]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from _common import machine_line, markdown_table, mean_std
from autodrs.data.dataset import load_dataset
from autodrs.data.synthetic import oracle_spec
from autodrs.experiment import fit_spec
from autodrs.models import BACKBONES, backbone_spec
from autodrs.train.trainer import TrainConfig


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", default="movielens-100k,synthetic?rows=1000000")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--models", default="all")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=1024)
    args = parser.parse_args()
    models = list(BACKBONES) if args.models == "all" else args.models.split(",")
    print(machine_line())
    for data in args.datasets.split(","):
        rows: dict[str, list[tuple[float, float, float]]] = {}
        bayes = []
        for k in range(args.seeds):
            seed = 2026 + k
            ds = load_dataset(data, seed=seed)
            config = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, seed=seed,
                                 progress=False)
            truth = ds.info.get("truth")
            specs = {}
            if truth is not None:  # first, so a headroom problem shows early
                specs["oracle"] = oracle_spec(truth)
                bayes.append(truth["bayes_auc"])
                print(f"  {data} seed {seed} Bayes-optimal test AUC {truth['bayes_auc']:.4f}",
                      flush=True)
            specs.update({m: backbone_spec(m) for m in models})
            for name, spec in specs.items():
                t0 = time.perf_counter()
                out = fit_spec(ds, spec, config)
                t = out.metrics["test"]
                rows.setdefault(name, []).append((t["auc"], t["logloss"],
                                                  time.perf_counter() - t0))
                print(f"  {data} seed {seed} {name:>9}: AUC {t['auc']:.4f} "
                      f"logloss {t['logloss']:.4f} epochs {out.fit.best_epoch}", flush=True)
        print(f"\n## {data} ({args.seeds} seeds, up to {args.epochs} epochs, "
              f"batch {args.batch_size}, Adam 1e-3, embedding 16)\n")
        table = []
        for name, vals in sorted(rows.items(), key=lambda kv: -np.mean([v[0] for v in kv[1]])):
            table.append([name, mean_std([v[0] for v in vals]), mean_std([v[1] for v in vals]),
                          f"{np.mean([v[2] for v in vals]):.1f}"])
        print(markdown_table(["model", "test AUC", "test logloss", "seconds"], table))
        if bayes:
            bayes_auc = float(np.mean(bayes))
            oracle = float(np.mean([v[0] for v in rows["oracle"]]))
            best_name = max(models, key=lambda m: np.mean([v[0] for v in rows[m]]))
            best = float(np.mean([v[0] for v in rows[best_name]]))
            print(f"\nBayes-optimal test AUC: {mean_std(bayes)}")
            print(f"oracle headroom = (AUC - 0.5) / (Bayes - 0.5) = "
                  f"{(oracle - 0.5) / (bayes_auc - 0.5):.3f}")
            print(f"best full backbone {best_name}: gap to oracle {oracle - best:+.4f} AUC")
        print(flush=True)


if __name__ == "__main__":
    main()
