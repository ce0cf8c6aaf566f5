"""DeepLight and UMEC: test AUC against sparsity and inference latency per batch against the
dense model, over seeds (each seed its own split and search seed); AutoIAS: its searched
architecture retrained against the baseline it starts from and a random one of its space.

Per dataset and seed, each method runs its whole curve (DeepLight: sparsities 0.5, 0.8,
0.9 of a DeepFwFM; UMEC: kept fractions 0.5, 0.3, 0.2 of the embedding and MLP parameters
of a DeepFM). Every point's derived spec is then retrained from scratch with the shared
trainer (``experiment.fit_spec``), as a search's final retrain would, next to the dense
spec it started from; the table gives test AUC, the paired difference from the dense
model, parameters, and the forward latency of one batch (the fastest of 30 passes, the
dense and the pruned model in turn: the method's own measurement), with the speed-up.

    python benchmarks/comprehensive.py --data movielens-100k "synthetic?rows=50000&seed=1" \\
        --seeds 3 --epochs 3

AutoIAS (``--methods autoias``) searches from the same DeepFM spec; its derived spec, the
DeepFM and one architecture drawn uniformly from AutoIAS's space are each retrained from
scratch with the shared trainer; the table gives test AUC (paired differences against the
DeepFM), parameters, stored bytes, search and retrain seconds, and on planted data the
planted pairs kept (of 5) and the other pairs kept:

    python benchmarks/comprehensive.py --methods autoias --data movielens-100k synthetic \\
        --seeds 3 --epochs 3
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from _common import machine_line, markdown_table, mean_std, paired_difference
from autodrs.data.dataset import Dataset, load_dataset
from autodrs.experiment import fit_spec
from autodrs.methods.comprehensive.autoias import random_arch_spec
from autodrs.methods.comprehensive.deeplight import fwfm_spec
from autodrs.models.backbones import backbone_spec
from autodrs.models.builder import count_bytes
from autodrs.search.base import SearchContext, get_method
from autodrs.spec import ArchSpec
from autodrs.train.trainer import TrainConfig

CURVES = {"deeplight": "sparsity_curve", "umec": "budget_curve"}


def model_spec(ds: Dataset) -> ArchSpec:
    """DeepFM, with numerical fields bucketed."""
    spec = backbone_spec("deepfm", 8)
    spec.numerical = dict.fromkeys(ds.schema.numerical, "bucket")
    return spec


def run(data: str, seeds: int, methods: list[str], config: TrainConfig) -> dict:
    rows: dict[str, list[dict]] = {m: [] for m in methods}
    for k in range(seeds):
        seed = 2026 + k
        ds = load_dataset(data, seed=seed)
        cfg = replace(config, seed=seed)
        spec = model_spec(ds)
        for name in methods:
            options = ({"sparsities": "0.5,0.8,0.9"} if name == "deeplight"
                       else {"budgets": "0.5,0.3,0.2"})
            t0 = time.perf_counter()
            result = get_method(name).search(SearchContext(ds, spec, cfg, seed=seed,
                                                           options=options))
            seconds = time.perf_counter() - t0
            dense_spec = fwfm_spec(spec, ds.schema) if name == "deeplight" else spec
            dense = fit_spec(ds, dense_spec, cfg)
            points = []
            for point in result.extra[CURVES[name]][1:]:
                level = point["sparsity"] if name == "deeplight" else point["budget"]
                key = "sparsity" if name == "deeplight" else "kept"
                retrained = fit_spec(ds, ArchSpec.from_dict(point["spec"]), cfg)
                points.append({**{f: v for f, v in point.items() if f != "spec"},
                               "level": level,
                               "test_auc": retrained.metrics["test"]["auc"],
                               "retrained_params": retrained.params["total"]})
                print(f"  {data} seed {seed} {name} {key} {level}: test "
                      f"{points[-1]['test_auc']:.4f} (dense {dense.metrics['test']['auc']:.4f}),"
                      f" {point['latency_ms']:.3f} ms vs {point['dense_latency_ms']:.3f} ms",
                      flush=True)
            rows[name].append({"seed": seed, "seconds": seconds,
                               "dense_test": dense.metrics["test"]["auc"],
                               "dense_params": dense.params["total"], "points": points,
                               "chosen": result.spec.provenance[-1]})
    return rows


def table(data: str, out: dict) -> str:
    lines = [f"### compression on {data}"]
    header = ["method", "level", "test AUC (retrained)", "minus dense (paired)",
              "params (dense)", "latency ms per batch (dense)", "speed-up",
              "structured-only speed-up"]
    body = []
    for name, records in out.items():
        if not records:
            continue
        dense = [r["dense_test"] for r in records]
        body.append([f"{name} dense", "-", mean_std(dense), "", int(records[0]["dense_params"]),
                     "", "", ""])
        for i, p in enumerate(records[0]["points"]):
            pts = [r["points"][i] for r in records]
            test = [q["test_auc"] for q in pts]
            label = (f"sparsity {p['level']}" if name == "deeplight"
                     else f"kept {p['level']}")
            structured = ([q["structured_speedup"] for q in pts]
                          if "structured_speedup" in p else None)
            body.append([name, label, mean_std(test), paired_difference(test, dense),
                         f"{int(np.mean([q['params'] for q in pts]))}",
                         f"{np.mean([q['latency_ms'] for q in pts]):.3f} "
                         f"({np.mean([q['dense_latency_ms'] for q in pts]):.3f})",
                         mean_std([q["speedup"] for q in pts]),
                         mean_std(structured) if structured else ""])
    lines.append(markdown_table(header, body))
    return "\n".join(lines)


def run_autoias(data: str, seeds: int, config: TrainConfig, first: int = 2026) -> list[dict]:
    """Per seed (``first`` on): AutoIAS's search, then its spec, the DeepFM and a random spec
    of its space retrained from scratch."""
    records = []
    for k in range(seeds):
        seed = first + k
        ds = load_dataset(data, seed=seed)
        cfg = replace(config, seed=seed)
        spec = model_spec(ds)
        t0 = time.perf_counter()
        result = get_method("autoias").search(SearchContext(ds, spec, cfg, seed=seed))
        search_seconds = time.perf_counter() - t0
        base = result.spec.copy(field_dims={}, interactions=None, mlp=[], fm=False,
                                provenance=[])
        specs = {"deepfm": spec, "autoias": result.spec,
                 "random": random_arch_spec(base, ds.schema, result.extra["space"], seed)}
        record: dict = {"seed": seed, "search_seconds": search_seconds,
                        "supernet_valid_auc": result.extra["supernet_valid_auc"],
                        "chosen_valid_auc": result.extra["chosen_valid_auc"],
                        "mlp": result.spec.mlp, "dims": result.dims,
                        "kept": [i.key for i in result.spec.interactions or []]}
        truth = ds.info.get("truth") or {}
        if truth.get("pairs"):
            planted = {frozenset(p) for p in truth["pairs"]}
            # a redundant field is a relabelled copy: its pairs model a planted pair too
            copy_of = truth.get("redundant") or {}
            for name in ("autoias", "random"):
                kept = {frozenset(i.fields) for i in specs[name].interactions or []}
                record[f"{name}_planted_kept"] = len(planted & kept)
                record[f"{name}_others_kept"] = len(kept - planted)
                record[f"{name}_copies_kept"] = len(
                    [k for k in kept - planted
                     if frozenset(copy_of.get(f, f) for f in k) in planted])
        for name, s in specs.items():
            fit = fit_spec(ds, s, cfg)
            record[name] = {"test_auc": fit.metrics["test"]["auc"],
                            "params": fit.params["total"],
                            "bytes": count_bytes(fit.model)["total"],
                            "seconds": fit.seconds}
        print(f"  {data} seed {seed}: autoias {record['autoias']['test_auc']:.4f}, deepfm "
              f"{record['deepfm']['test_auc']:.4f}, random {record['random']['test_auc']:.4f};"
              f" search {search_seconds:.0f} s, mlp {result.spec.mlp}, "
              f"{len(record['kept'])} pairs kept", flush=True)
        records.append(record)
    return records


def counts(values: list[int]) -> str:
    return f"{np.mean(values):.1f} ± {np.std(values):.1f}"


def autoias_table(data: str, records: list[dict]) -> str:
    header = ["model", "test AUC", "minus DeepFM (paired)", "params", "bytes",
              "search s", "retrain s", "planted pairs kept (of 5)", "other pairs kept",
              "of which copies of a planted pair"]
    deepfm = [r["deepfm"]["test_auc"] for r in records]
    planted = "autoias_planted_kept" in records[0]
    body = []
    for name in ("deepfm", "autoias", "random"):
        test = [r[name]["test_auc"] for r in records]
        body.append([
            name if name != "random" else "random spec of AutoIAS's space", mean_std(test),
            "" if name == "deepfm" else paired_difference(test, deepfm),
            int(np.mean([r[name]["params"] for r in records])),
            int(np.mean([r[name]["bytes"] for r in records])),
            f"{np.mean([r['search_seconds'] for r in records]):.0f}" if name == "autoias"
            else "",
            f"{np.mean([r[name]['seconds'] for r in records]):.0f}",
            counts([r[f"{name}_planted_kept"] for r in records])
            if planted and name != "deepfm" else "",
            counts([r[f"{name}_others_kept"] for r in records])
            if planted and name != "deepfm" else "",
            counts([r.get(f"{name}_copies_kept", 0) for r in records])
            if planted and name != "deepfm" else ""])
    return f"### AutoIAS on {data}\n" + markdown_table(header, body)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", nargs="+", default=["movielens-100k"])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--methods", default="deeplight,umec")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--first-seed", type=int, default=2026,
                        help="the first seed (AutoIAS only; seeds run one by one from it)")
    parser.add_argument("--out", type=Path, default=Path("runs/bench-comprehensive"))
    args = parser.parse_args()
    config = TrainConfig(epochs=args.epochs, batch_size=1024, patience=1, progress=False,
                         threads=args.threads)
    methods = [m for m in args.methods.split(",") if m]
    if "autoias" in methods:
        ias = {data: run_autoias(data, args.seeds, config, args.first_seed)
               for data in args.data}
        print(machine_line())
        print(f"DeepFM (dim 8) and AutoIAS's default space; searches and retrains: "
              f"{args.epochs} epochs, batch 1024, {args.threads} thread(s)")
        for data, records in ias.items():
            print(autoias_table(data, records))
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "autoias.json").write_text(json.dumps(ias, indent=1, default=str))
        methods = [m for m in methods if m != "autoias"]
        if not methods:
            return
    results = {data: run(data, args.seeds, methods, config) for data in args.data}
    print(machine_line())
    print(f"DeepFM (dim 8; DeepLight as DeepFwFM) searches and retrains: {args.epochs} "
          f"epochs, batch 1024; latency on 1,024 validation rows, {args.threads} thread(s)")
    for data, out in results.items():
        print(table(data, out))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "comprehensive.json").write_text(json.dumps(results, indent=1, default=str))


if __name__ == "__main__":
    main()
