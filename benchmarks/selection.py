"""Feature selection and generated crosses: every method on synthetic (planted truth) and
movielens-100k, over several seeds (each seed its own split and search seed).

Selection. Each method ranks the fields (its own search, timed). The ERASE protocol then
retrains the same DeepFM on the top-k fields of every ranking for one grid of k shared by
all methods (a field set already measured in that seed is reused, so methods that agree
share points), giving test AUC against k, the area under that curve (the mean test AUC
over the grid), the k the pipeline picks (smallest k within 0.002 validation AUC of the
best) and its test AUC next to all fields. On synthetic it also reports the Bayes-optimal
AUC, the oracle subset (exactly the planted relevant fields), top-|R| precision, whether
every relevant field outranks every noise field, and whether the redundant copy sits next
to its original.

Crossing. AutoCross and GLIDER on each dataset and seed: planted pairs among the first 10
crosses (synthetic), and the test AUC of an LR alone, with the method's crosses and (on
synthetic) with the planted pairs.

Delivered models (``--delivered``). AdaFS's output is a model (its controller selects
fields per example), which the ERASE curve of its ranking does not measure: per dataset and
seed, the test AUC of the model AdaFS delivers (its spec's fit, which trains the controller
by AdaFS's schedule), of its input spec (no controller), and of the same controller trained
jointly on the training loss (what the final retrain did before the schedule was in the
spec), with paired differences.

    python benchmarks/selection.py --data "synthetic?rows=200000&seed=1" movielens-100k \\
        --seeds 3
    python benchmarks/selection.py --delivered --methods "" --cross-methods "" --seeds 3
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path

import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from _common import machine_line, markdown_table, mean_std, paired_difference  # noqa: E402
from autodrs.data.dataset import Dataset, load_dataset  # noqa: E402
from autodrs.experiment import fit_spec  # noqa: E402
from autodrs.methods.selection.erase import ErasePoint, erase_curve  # noqa: E402
from autodrs.methods.selection.subset import with_fields  # noqa: E402
from autodrs.methods.selection.truth import planted_recovery  # noqa: E402
from autodrs.models.backbones import backbone_spec  # noqa: E402
from autodrs.search.base import SearchContext, get_method  # noqa: E402
from autodrs.spec import ArchSpec  # noqa: E402
from autodrs.train.trainer import TrainConfig  # noqa: E402

SELECTION = ("autofield", "adafs", "marlfs", "fieldsearch", "lasso", "gbdt", "rf", "xgb",
             "permutation", "sfs", "shark", "lpfs", "optfs", "mvfs", "fstd")
# the rows of ERASE's selection table (Jia et al., KDD 2024), in its order (``--methods erase``)
ERASE_ROWS = ("lasso", "gbdt", "rf", "xgb", "permutation", "sfs", "shark", "lpfs", "autofield",
              "adafs", "optfs", "mvfs")
RANDOM = "random ranking"
CROSSING = ("autocross", "glider")
BLACKBOX = ("marlfs", "fieldsearch")


def model_spec(ds: Dataset) -> ArchSpec:
    """DeepFM, with numerical fields bucketed so a non-monotone effect is learnable."""
    spec = backbone_spec("deepfm", 8)
    spec.numerical = dict.fromkeys(ds.schema.numerical, "bucket")
    return spec


def grid_for(n: int, grid: str | None) -> list[int]:
    if grid:
        return sorted({min(n, int(k)) for k in grid.split(",")})
    return sorted({k for k in (1, 2, 4, 6, 8) if k < n} | {n})


def run_selection(data: str, seeds: int, methods: list[str], config: TrainConfig,
                  trials: int, grid: str | None) -> dict:
    """Every method's ranking through one ERASE curve per seed, then a seeded random ranking
    of the same fields (the reference the paired column compares against)."""
    runs: dict[str, list[dict]] = {m: [] for m in [*methods, RANDOM]}
    extra: dict[str, list[float]] = {"bayes": [], "oracle": []}
    for k in range(seeds):
        seed = 2026 + k
        ds = load_dataset(data, seed=seed)
        cfg = replace(config, seed=seed)
        spec = model_spec(ds)
        cache: dict[frozenset[str], ErasePoint] = {}
        truth = ds.info.get("truth")
        if truth is not None:
            extra["bayes"].append(truth["bayes_auc"])
            oracle = fit_spec(ds, with_fields(spec, truth["relevant"]), cfg)
            extra["oracle"].append(oracle.metrics["test"]["auc"])
        for name in methods:
            options: dict = {"k": len(ds.schema.field_names)}
            if name in BLACKBOX:
                # MARLFS's cheap estimation: a quarter of train, one epoch per trial
                options |= {"subsample": 0.25, "epochs": 1}
            ctx = SearchContext(ds, spec, cfg, seed=seed, options=options,
                                trials=trials if name in BLACKBOX else None)
            t0 = time.perf_counter()
            result = get_method(name).search(ctx)
            search_seconds = time.perf_counter() - t0
            order = [f for f in result.ranking if f not in result.extra["redundant"]]
            t1 = time.perf_counter()
            curve = erase_curve(ds, order, spec, cfg, ks=grid_for(len(order), grid),
                                cache=cache)
            record = {"seed": seed, "ranking": result.ranking,
                      "search_seconds": search_seconds,
                      "erase_seconds": time.perf_counter() - t1,
                      "curve": curve.to_dict(), "chosen_test": curve.chosen.test_auc,
                      "all_test": curve.points[-1].test_auc}
            if truth is not None:
                record["truth"] = planted_recovery(result.ranking, truth,
                                                   curve.chosen.fields)
            runs[name].append(record)
            print(f"  {data} seed {seed} {name}: {search_seconds:.1f}s, area "
                  f"{curve.area:.4f}, k={curve.chosen.k}, {result.ranking[:6]}", flush=True)
        # the same fields (copies left out as the methods leave them) in a seeded random order
        rng = np.random.default_rng(seed)
        order = [str(f) for f in rng.permutation(sorted(order))]
        curve = erase_curve(ds, order, spec, cfg, ks=grid_for(len(order), grid), cache=cache)
        record = {"seed": seed, "ranking": order, "search_seconds": 0.0, "erase_seconds": 0.0,
                  "curve": curve.to_dict(), "chosen_test": curve.chosen.test_auc,
                  "all_test": curve.points[-1].test_auc}
        if truth is not None:
            record["truth"] = planted_recovery(order, truth, curve.chosen.fields)
        runs[RANDOM].append(record)
        print(f"  {data} seed {seed} random ranking: area {curve.area:.4f}", flush=True)
    return {"runs": runs, "extra": extra}


def run_delivered(data: str, seeds: int, config: TrainConfig) -> dict:
    """AdaFS's delivered model against its input and against a jointly trained controller,
    paired by seed (each seed its own split and search seed)."""
    rows: list[dict] = []
    for k in range(seeds):
        seed = 2026 + k
        ds = load_dataset(data, seed=seed)
        cfg = replace(config, seed=seed)
        spec = model_spec(ds)
        t0 = time.perf_counter()
        result = get_method("adafs").search(SearchContext(ds, spec, cfg, seed=seed))
        seconds = time.perf_counter() - t0
        delivered = result.extra["metrics"]["test"]["auc"]
        if k == 0:  # the spec's fit is the searched model (same seed and config)
            refit = fit_spec(ds, result.spec, cfg).metrics["test"]["auc"]
            assert abs(refit - delivered) < 1e-9, (refit, delivered)
        controller = result.spec.controller
        assert controller is not None
        joint = result.spec.copy(controller=replace(controller, pretrain_epochs=0,
                                                    update_every=0))
        rows.append({"seed": seed, "seconds": seconds, "delivered": delivered,
                     "input": fit_spec(ds, spec, cfg).metrics["test"]["auc"],
                     "joint": fit_spec(ds, joint, cfg).metrics["test"]["auc"],
                     "valid_delivered": result.extra["metrics"]["valid"]["auc"]})
        r = rows[-1]
        print(f"  {data} seed {seed} adafs: delivered {r['delivered']:.4f}, input "
              f"{r['input']:.4f}, joint {r['joint']:.4f} ({seconds:.0f}s)", flush=True)
    return {"runs": rows}


def delivered_table(data: str, out: dict) -> str:
    runs = out["runs"]

    def col(key: str) -> list[float]:
        return [r[key] for r in runs]

    def wins(other: str) -> str:
        return f"{sum(r['delivered'] > r[other] for r in runs)}/{len(runs)}"

    rows = [["AdaFS delivered (spec's fit: pretrain, then bi-level controller)",
             mean_std(col("delivered")), "", ""],
            ["input spec (no controller)", mean_std(col("input")),
             paired_difference(col("delivered"), col("input")), wins("input")],
            ["controller trained jointly (the old retrain)", mean_std(col("joint")),
             paired_difference(col("delivered"), col("joint")), wins("joint")]]
    header = ["model", "test AUC", "delivered minus this (paired, ± s.e.)",
              "seeds delivered wins"]
    return (f"### AdaFS delivered model on {data}\n" + markdown_table(header, rows)
            + f"\nAdaFS validation AUC {mean_std(col('valid_delivered'))} (its controller "
            "learns on validation batches); search "
            f"{mean_std(col('seconds'))} s")


def run_crossing(data: str, seeds: int, methods: list[str], config: TrainConfig) -> dict:
    runs: dict[str, list[dict]] = {m: [] for m in methods}
    lr_alone, lr_planted = [], []
    lr_config = replace(config, lr=1e-2)
    for k in range(seeds):
        seed = 2026 + k
        ds = load_dataset(data, seed=seed)
        cfg = replace(lr_config, seed=seed)
        lr = backbone_spec("lr", 8)
        lr_alone.append(fit_spec(ds, lr, cfg).metrics["test"]["auc"])
        truth = ds.info.get("truth")
        if truth is not None:
            planted = lr.copy(crosses=[list(p) for p in truth["pairs"]])
            lr_planted.append(fit_spec(ds, planted, cfg).metrics["test"]["auc"])
        for name in methods:
            t0 = time.perf_counter()
            result = get_method(name).search(SearchContext(ds, lr, cfg, seed=seed))
            seconds = time.perf_counter() - t0
            record = {"seed": seed, "seconds": seconds, "first10": result.ranking[:10],
                      "accepted": result.spec.crosses,
                      "lr_test": fit_spec(ds, result.spec, cfg).metrics["test"]["auc"]}
            if truth is not None:
                pairs = {tuple(p) for p in truth["pairs"]}
                record["hits"] = sum(tuple(c) in pairs for c in result.ranking[:10])
            runs[name].append(record)
            print(f"  {data} seed {seed} {name}: {seconds:.1f}s, crosses "
                  f"{result.spec.crosses}", flush=True)
    return {"runs": runs, "lr": lr_alone, "lr_planted": lr_planted}


def selection_table(data: str, out: dict) -> str:
    rows = []
    reference = [r["curve"]["area"] for r in out["runs"].get(RANDOM, [])]
    for name, records in out["runs"].items():
        area = [r["curve"]["area"] for r in records]
        paired = ("" if name == RANDOM or len(reference) != len(area)
                  else paired_difference(area, reference))
        row = [name, mean_std([r["search_seconds"] for r in records]), mean_std(area), paired,
               "/".join(str(r["curve"]["chosen_k"]) for r in records),
               mean_std([r["chosen_test"] for r in records]),
               mean_std([r["all_test"] for r in records])]
        if records and "truth" in records[0]:
            t = [r["truth"] for r in records]
            row += [mean_std([x["top_precision"] for x in t]),
                    f"{sum(x['separated'] for x in t)}/{len(t)}"]
            # the random ranking leaves the copies out, as the methods' ERASE orders do
            row += (["", ""] if name == RANDOM else [
                f"{sum(all(x['copy_adjacent'].values()) for x in t)}/{len(t)}",
                f"{sum(not x['both_kept'] for x in t)}/{len(t)}"])
        row.append(" ".join(records[0]["ranking"][:8]))
        rows.append(row)
    header = ["method", "search s", "ERASE area (test AUC)",
              "area minus random ranking (paired)", "chosen k per seed",
              "test AUC at k", "test AUC all fields"]
    if any("truth" in r[0] for r in out["runs"].values() if r):
        header += ["top-|R| precision", "relevant > noise", "copy next to original",
                   "keeps one copy"]
    header.append("ranking (first seed, best first)")
    lines = [f"### selection on {data}", markdown_table(header, rows)]
    if out["extra"]["bayes"]:
        lines.append(f"Bayes-optimal test AUC {mean_std(out['extra']['bayes'])}; oracle "
                     f"subset (planted relevant fields) {mean_std(out['extra']['oracle'])}")
    return "\n".join(lines)


def crossing_table(data: str, out: dict) -> str:
    rows = [["lr (no crosses)", "", "", mean_std(out["lr"]), ""]]
    if out["lr_planted"]:
        rows.append(["lr + planted pairs", "", "", mean_std(out["lr_planted"]), ""])
    for name, records in out["runs"].items():
        hits = ("/".join(str(r["hits"]) for r in records) if "hits" in records[0] else "")
        rows.append([name, mean_std([r["seconds"] for r in records]), hits,
                     mean_std([r["lr_test"] for r in records]),
                     " ".join("*".join(c) for c in records[0]["accepted"])])
    header = ["model", "search s", "planted pairs in first 10 (per seed)", "LR test AUC",
              "crosses (first seed)"]
    return f"### crossing on {data}\n" + markdown_table(header, rows)


def plot(results: dict, path: Path) -> None:
    fig, axes = plt.subplots(1, len(results), figsize=(6 * len(results), 4.5), squeeze=False)
    for ax, (data, out) in zip(axes[0], results.items(), strict=True):
        for name, records in out["runs"].items():
            ks = records[0]["curve"]["k"]
            aucs = np.mean([r["curve"]["test_auc"] for r in records], axis=0)
            ax.plot(ks, aucs, marker="o", label=name)
        if out["extra"]["oracle"]:
            ax.axhline(np.mean(out["extra"]["oracle"]), color="grey", ls="--",
                       label="oracle subset")
        ax.set_title(data)
        ax.set_xlabel("k (top fields kept)")
        ax.set_ylabel("test AUC (mean over seeds)")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", nargs="+",
                        default=["synthetic?rows=200000&seed=1", "movielens-100k"])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--methods", default=",".join(SELECTION),
                        help="comma-separated; 'erase' stands for ERASE's table rows")
    parser.add_argument("--cross-methods", default=",".join(CROSSING))
    parser.add_argument("--epochs", type=int, default=2, help="epochs of every retrain")
    parser.add_argument("--trials", type=int, default=20, help="trials of marlfs/fieldsearch")
    parser.add_argument("--grid", default=None, help="ks of the ERASE curve, e.g. 1,2,4,8")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--delivered", action="store_true",
                        help="also measure AdaFS's delivered model (see the module)")
    parser.add_argument("--out", type=Path, default=Path("runs/bench-selection"))
    args = parser.parse_args()
    config = TrainConfig(epochs=args.epochs, batch_size=1024, patience=1, progress=False,
                         threads=args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    methods = [m for part in args.methods.split(",") if part
               for m in (ERASE_ROWS if part == "erase" else (part,))]
    cross = [m for m in args.cross_methods.split(",") if m]
    selection, crossing, delivered = {}, {}, {}
    for data in args.data:
        if args.delivered:
            delivered[data] = run_delivered(data, args.seeds, config)
        if methods:
            selection[data] = run_selection(data, args.seeds, methods, config, args.trials,
                                            args.grid)
        if cross:
            crossing[data] = run_crossing(data, args.seeds, cross, config)
    print(machine_line())
    print(f"DeepFM (dim 8) retrains: {args.epochs} epochs, batch 1024, early stopping on "
          f"validation AUC; {args.seeds} seeds (split and search); black-box methods "
          f"{args.trials} trials on a quarter of train, one epoch each")
    for data in args.data:
        if data in selection:
            print(selection_table(data, selection[data]))
        if data in crossing:
            print(crossing_table(data, crossing[data]))
        if data in delivered:
            print(delivered_table(data, delivered[data]))
    if selection:
        plot(selection, args.out / "selection_curves.png")
        print(f"plot: {args.out / 'selection_curves.png'}")
    (args.out / "selection.json").write_text(json.dumps(
        {"selection": selection, "crossing": crossing, "delivered": delivered}, indent=1,
        default=str))


if __name__ == "__main__":
    main()
