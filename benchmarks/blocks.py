"""Interaction-function and block-architecture search against the hand-crafted backbones.

For every dataset and seed: the backbones are trained (same trainer, split and config);
each method searches from DeepFM, and its spec is retrained from scratch with the same
config. Printed per dataset: test AUC and logloss (mean ± spread over seeds), parameters,
latency per 1,000 predictions (median of repeated forward passes, one thread) and search
seconds; on ``synthetic`` also the Bayes-optimal AUC, the oracle-structure model and the
function each function method gave the planted pairs. The best block DAG found is drawn
to ``--out``.

    python benchmarks/blocks.py [--datasets movielens-100k,synthetic?rows=200000]
        [--seeds 3] [--first-seed 2026] [--methods autoctr,autopi,sif,autofeature,aim]
        [--baselines deepfm,ipnn,dcnv2,autoint] [--budget 1200] [--epochs 10]
        [--out runs/bench-blocks] [--reuse]
"""

from __future__ import annotations

import argparse
import json
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import torch

from _common import machine_line, markdown_table, mean_std
from autodrs.data.dataset import Dataset, load_dataset
from autodrs.data.synthetic import oracle_spec
from autodrs.experiment import fit_spec
from autodrs.methods.blocks.autoctr import summary
from autodrs.models import backbone_spec
from autodrs.report import plots
from autodrs.search.base import SearchContext, get_method
from autodrs.search.estimation import latency_ms
from autodrs.spec import ArchSpec
from autodrs.train.trainer import TrainConfig

BUDGETED = ("autoctr", "autofeature")  # black-box searches run for --budget seconds


def latency_per_1000(model: torch.nn.Module, ds: Dataset) -> float:
    latency_ms(model, ds.test, rows=1000, repeats=2)  # warm-up
    return latency_ms(model, ds.test, rows=1000, repeats=7)


def measure(ds: Dataset, spec: ArchSpec, config: TrainConfig) -> dict[str, Any]:
    out = fit_spec(ds, spec, config)
    return {"auc": out.metrics["test"]["auc"], "logloss": out.metrics["test"]["logloss"],
            "params": out.params["total"], "latency": latency_per_1000(out.model, ds),
            "retrain": out.seconds}


def planted_functions(ds: Dataset, functions: dict[str, str]) -> str:
    truth = ds.info.get("truth")
    if not truth:
        return ""
    keys = ["*".join(p) for p in truth["pairs"]]
    return ", ".join(f"{k}={functions.get(k, 'none')}" for k in keys)


def saved(path: Path, reuse: bool) -> dict[str, Any] | None:
    """A finished measurement written by an earlier run, when ``--reuse`` asks for it."""
    return json.loads(path.read_text()) if reuse and path.exists() else None


def autoctr_line(stage: dict[str, Any]) -> str:
    """What AutoCTR trained and whether it returned a seed backbone or an evolved DAG."""
    if "candidates" not in stage:
        return ""
    chose = stage["best_number"]
    kind = "a seed backbone" if chose in stage.get("seed_numbers", []) else "an evolved DAG"
    return (f", {stage['candidates']} candidates at {stage.get('fidelity')} fidelity, "
            f"chose #{chose}: {kind}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", default="movielens-100k,synthetic?rows=200000")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--first-seed", type=int, default=2026,
                        help="seeds are first-seed, first-seed + 1, ...")
    parser.add_argument("--methods", default="autoctr,autopi,sif,autofeature,aim")
    parser.add_argument("--baselines", default="deepfm,ipnn,dcnv2,autoint")
    parser.add_argument("--budget", type=float, default=1200.0,
                        help="wall seconds for autoctr and autofeature")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=1024)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--out", type=Path, default=Path("runs/bench-blocks"))
    parser.add_argument("--reuse", action="store_true",
                        help="read back the measurements a run with the same --out already "
                             "wrote (per model, dataset and seed) instead of repeating them, "
                             "so seeds run apart can be tabled together")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    methods = [m for m in args.methods.split(",") if m]
    baselines = [b for b in args.baselines.split(",") if b]
    args.out.mkdir(parents=True, exist_ok=True)
    print(machine_line())
    best_dag: tuple[float, str, dict[str, Any]] | None = None
    for data in args.datasets.split(","):
        rows: dict[str, list[dict[str, Any]]] = {}
        planted: dict[str, list[str]] = {}
        bayes = []
        for k in range(args.seeds):
            seed = args.first_seed + k
            ds = load_dataset(data, seed=seed)
            config = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, seed=seed,
                                 progress=False, threads=args.threads)
            specs = {b: backbone_spec(b) for b in baselines}
            truth = ds.info.get("truth")
            if truth is not None:
                specs["oracle"] = oracle_spec(truth)
                bayes.append(truth["bayes_auc"])
            tag = data.split("?")[0]
            for name, spec in specs.items():
                path = args.out / f"{name}-{tag}-{seed}.json"
                record = saved(path, args.reuse)
                if record is None:
                    record = {"test": measure(ds, spec, config) | {"search": 0.0}}
                    path.write_text(json.dumps(record, indent=1))
                row = record["test"]
                rows.setdefault(name, []).append(row)
                print(f"  {data} seed {seed} {name:>11}: AUC {row['auc']:.4f}", flush=True)
            for method in methods:
                path = args.out / f"{method}-{tag}-{seed}.json"
                record = saved(path, args.reuse)
                if record is None:
                    ctx = SearchContext(ds, backbone_spec("deepfm"), config, seed=seed,
                                        budget_seconds=args.budget if method in BUDGETED
                                        else None)
                    t0 = time.perf_counter()
                    found = get_method(method).search(ctx)
                    search = time.perf_counter() - t0
                    row = measure(ds, found.spec, config) | {"search": search}
                    record = {"spec": found.spec.to_dict(), "test": row, "stage": found.to_dict()}
                    path.write_text(json.dumps(record, indent=1, default=str))
                row, stage = record["test"], record["stage"]
                rows.setdefault(method, []).append(row)
                if "functions" in stage:
                    planted.setdefault(method, []).append(
                        planted_functions(ds, stage["functions"]))
                dag = stage.get("dag")
                if dag is not None and (best_dag is None or row["auc"] > best_dag[0]):
                    best_dag = (row["auc"], f"{method} on {data}, seed {seed}", dag)
                print(f"  {data} seed {seed} {method:>11}: AUC {row['auc']:.4f} "
                      f"(search {row['search']:.0f}s{autoctr_line(stage)})"
                      + (f": {summary(ArchSpec.from_dict(record['spec']))}"
                         if record["spec"].get("dag") else ""), flush=True)
        print(f"\n## {data} ({args.seeds} seeds, up to {args.epochs} epochs, batch "
              f"{args.batch_size}, Adam 1e-3, embedding 16; searches start from DeepFM)\n")
        table = []
        for name, vals in sorted(rows.items(), key=lambda kv: -np.mean([v["auc"] for v in
                                                                          kv[1]])):
            table.append([name, mean_std([v["auc"] for v in vals]),
                          mean_std([v["logloss"] for v in vals]),
                          f"{np.mean([v['params'] for v in vals]):,.0f}",
                          f"{np.median([v['latency'] for v in vals]):.2f}",
                          f"{np.mean([v['search'] for v in vals]):.0f}",
                          f"{np.mean([v['retrain'] for v in vals]):.0f}"])
        print(markdown_table(["model", "test AUC", "test logloss", "parameters",
                              "ms / 1k predictions", "search s", "retrain s"], table))
        if bayes:
            print(f"\nBayes-optimal test AUC: {mean_std(bayes)}")
        for method, texts in planted.items():
            if texts and texts[0]:
                counts = Counter(part.split("=")[1] for t in texts for part in t.split(", "))
                print(f"planted pairs, {method}: {dict(counts)}; per seed: {texts}")
        print(flush=True)
    if best_dag is not None:
        auc, where, dag = best_dag
        path = args.out / "best-dag.png"
        path.write_bytes(plots.dag(dag["nodes"], f"best DAG: {where}, test AUC {auc:.4f}"))
        print(f"best block DAG ({where}, test AUC {auc:.4f}) drawn to {path}")
        print(json.dumps(dag))


if __name__ == "__main__":
    main()
