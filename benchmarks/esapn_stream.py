"""ESAPN on a time-split stream: AUC per block against a fixed-dim model, then the retrain.

For each seed: MovieLens-100k split by time (``--split time``: the earliest 80% of ratings
train, the next 10% validate, the last 10% test), ESAPN searched from DeepFM-16 over the
training split as a stream of ``--blocks`` blocks (each block scored by the model before it
trains on it, beside a DeepFM whose searched fields stay at the largest size, trained on
the same stream), then the found spec retrained with the shared ``fit_spec`` next to
DeepFM-16 on the same split. Prints the per-block AUCs (mean over seeds), the validation
split as the stream's next block, and the retrained models' test AUC (paired per seed),
embedding parameters and seconds.

    python benchmarks/esapn_stream.py --seeds 3
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from _common import machine_line, markdown_table, mean_std, paired_difference
from autodrs.data.dataset import load_dataset
from autodrs.experiment import fit_spec
from autodrs.models.backbones import backbone_spec
from autodrs.search.base import SearchContext, get_method
from autodrs.train.trainer import TrainConfig


def run(data: str, seeds: int, epochs: int, blocks: int, threads: int) -> dict[str, Any]:
    out: dict[str, Any] = {"seeds": []}
    for k in range(seeds):
        seed = 2026 + k
        ds = load_dataset(data, seed=seed, split="time")
        config = TrainConfig(epochs=epochs, batch_size=1024, patience=2, seed=seed,
                             progress=False, threads=threads)
        spec = backbone_spec("deepfm", 16)
        t0 = time.perf_counter()
        stage = get_method("esapn").search(SearchContext(ds, spec, config, seed=seed,
                                                         options={"blocks": blocks}))
        search = time.perf_counter() - t0
        found = fit_spec(ds, stage.spec, config)
        base = fit_spec(ds, spec, config)
        entry = {"seed": seed, "stream": stage.extra["stream"],
                 "next_block": stage.extra["next_block"],
                 "mean_block_auc": stage.extra["mean_block_auc"],
                 "mean_block_fixed_auc": stage.extra["mean_block_fixed_auc"],
                 "dims": stage.extra["occurrence_weighted_dim"],
                 "esapn_test_auc": found.metrics["test"]["auc"],
                 "deepfm_test_auc": base.metrics["test"]["auc"],
                 "esapn_params": found.params["embedding"],
                 "deepfm_params": base.params["embedding"],
                 "search_seconds": search, "retrain_seconds": found.seconds}
        out["seeds"].append(entry)
        print(f"  seed {seed}: mean block AUC {entry['mean_block_auc']} (fixed-dim "
              f"{entry['mean_block_fixed_auc']}), next block {entry['next_block']}, test AUC "
              f"{entry['esapn_test_auc']:.4f} vs DeepFM-16 {entry['deepfm_test_auc']:.4f}, "
              f"{entry['esapn_params']:,} vs {entry['deepfm_params']:,} embedding params, "
              f"search {search:.0f}s", flush=True)
    return out


def summarise(found: dict[str, Any]) -> str:
    runs = found["seeds"]
    n = len(runs[0]["stream"])
    rows = []
    for b in range(n):
        ours = [r["stream"][b]["auc"] for r in runs if b < len(r["stream"])]
        fixed = [r["stream"][b]["fixed_auc"] for r in runs if b < len(r["stream"])]
        rows.append([str(b), f"{runs[0]['stream'][b]['rows']:,}", mean_std(ours),
                     mean_std(fixed), paired_difference(ours, fixed)])
    rows.append(["valid (next)", "", mean_std([r["next_block"]["auc"] for r in runs]),
                 mean_std([r["next_block"]["fixed_auc"] for r in runs]),
                 paired_difference([r["next_block"]["auc"] for r in runs],
                                   [r["next_block"]["fixed_auc"] for r in runs])])
    ours = [r["esapn_test_auc"] for r in runs]
    base = [r["deepfm_test_auc"] for r in runs]
    dims = {f: np.mean([r["dims"][f] for r in runs]) for f in runs[0]["dims"]}
    return "\n".join([
        f"## ESAPN stream, MovieLens-100k, time split ({len(runs)} seeds)", "",
        markdown_table(["block", "rows", "ESAPN AUC", "fixed-dim AUC", "ESAPN - fixed"],
                       rows), "",
        markdown_table(["retrained", "test AUC", "vs DeepFM-16 per seed", "emb. params"],
                       [["DeepFM-16", mean_std(base), "", f"{np.mean([r['deepfm_params'] for r in runs]):,.0f}"],
                        ["ESAPN", mean_std(ours), paired_difference(ours, base),
                         f"{np.mean([r['esapn_params'] for r in runs]):,.0f}"]]), "",
        "occurrence-weighted dim per field: "
        + ", ".join(f"{f} {d:.1f}" for f, d in sorted(dims.items(), key=lambda kv: -kv[1])),
    ])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default="movielens-100k")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=20, help="epochs of the retrains")
    parser.add_argument("--blocks", type=int, default=10)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=Path("runs/bench-esapn"))
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(args.threads)
    print(machine_line())
    found = run(args.data, args.seeds, args.epochs, args.blocks, args.threads)
    print(summarise(found), flush=True)
    (args.out / "esapn_stream.json").write_text(json.dumps(found, indent=2, default=float))


if __name__ == "__main__":
    main()
