"""How well AutoCTR's low-fidelity score ranks DAGs by their full-fit validation AUC.

For ``--dags`` DAGs (random draws of AutoCTR's space and one-token mutants of them), each
trained from scratch at low fidelity (``--epochs`` epochs on ``--subsample`` of the
training rows, patience 1) and in full (the command's training: all rows, epoch cap,
early stopping, ``fit_spec``): Spearman's rank correlation of the full-fit validation AUC
with the low-fidelity validation AUC and with minus the low-fidelity logloss, and how
often the proxy's best is the full fit's best among random pairs.

    python benchmarks/autoctr_fidelity.py --data movielens-100k --dags 24 --seed 0
"""

from __future__ import annotations

import argparse
import json
import os
import random
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from scipy.stats import spearmanr

from autodrs.data.dataset import load_dataset
from autodrs.experiment import fit_spec
from autodrs.methods.blocks.autoctr import (
    AUTOCTR_TYPES,
    DagEncoding,
    base_dag_spec,
    spec_of,
    summary,
)
from autodrs.methods.interaction.common import embedded_names
from autodrs.models import backbone_spec
from autodrs.search.estimation import low_fidelity, subsample, train_candidate
from autodrs.train.trainer import TrainConfig


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="movielens-100k")
    parser.add_argument("--dags", type=int, default=24)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--epochs", default="2,4")
    parser.add_argument("--subsample", type=float, default=0.5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=Path("runs/autoctr-fidelity"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    ds = load_dataset(args.data, seed=args.seed)
    config = TrainConfig(epochs=50, patience=2, batch_size=1024, lr=1e-3, seed=args.seed,
                         progress=False, threads=args.threads)
    base = base_dag_spec(backbone_spec("deepfm", 16))
    enc = DagEncoding(embedded_names(ds.schema, base), 4, AUTOCTR_TYPES)
    rng = random.Random(args.seed)
    archs = [enc.backbone(n) for n in ("deepfm", "fm", "widedeep", "dcnv2", "ipnn")]
    archs = [a for a in archs if a is not None]
    while len(archs) < args.dags:
        parent = rng.choice(archs)
        archs.append(enc.mutate(parent, rng) if rng.random() < 0.5 else enc.random_arch(rng))
    rows = subsample(ds.train, args.subsample, args.seed)
    epochs = [int(e) for e in args.epochs.split(",")]
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"{args.data.split('?')[0]}-{args.seed}.jsonl"
    records = []
    print("load", os.getloadavg(), flush=True)
    for k, arch in enumerate(archs):
        spec = spec_of(base, enc, arch)
        rec = {"k": k, "dag": summary(spec), "linear": spec.linear}
        for e in epochs:
            t0 = time.perf_counter()
            cfg = replace(low_fidelity(config, e), seed=args.seed)
            _, fit = train_candidate(ds, spec, cfg, rows, ds.valid)
            rec[f"low{e}"] = {"auc": fit.valid["auc"], "logloss": fit.valid["logloss"],
                              "s": time.perf_counter() - t0}
        t0 = time.perf_counter()
        out = fit_spec(ds, spec, config)
        rec["full"] = {"auc": out.metrics["valid"]["auc"], "test": out.metrics["test"]["auc"],
                       "s": time.perf_counter() - t0}
        records.append(rec)
        with path.open("a") as f:
            f.write(json.dumps(rec) + "\n")
        print(k, rec, flush=True)
    full = np.array([r["full"]["auc"] for r in records])
    for e in epochs:
        auc = np.array([r[f"low{e}"]["auc"] for r in records])
        ll = np.array([r[f"low{e}"]["logloss"] for r in records])
        print(f"low {e} epochs: spearman AUC {spearmanr(auc, full)[0]:.3f}, "
              f"-logloss {spearmanr(-ll, full)[0]:.3f}; best by AUC is full rank "
              f"{int((full > full[auc.argmax()]).sum())}, by logloss "
              f"{int((full > full[ll.argmin()]).sum())} (0 = best)")
    print("load", os.getloadavg(), flush=True)


if __name__ == "__main__":
    main()
