"""Interaction search: which pairs each method keeps, against the planted truth and DeepFM.

For each dataset and seed: train DeepFM over all pairs (the baseline; on ``synthetic`` also
the oracle-structure DeepFM whose FM models exactly the planted pairs), then run every
interaction method from the same fields with the DeepFM backbone and retrain what it found
with the shared ``fit_spec`` and the same training config. Prints, per method: planted pairs
in its top 5 (synthetic; also counting the redundant copy ``r0_copy`` as ``r0``), the share
of the other pairs its delivered model does not model, pairs kept, interactions beyond pairs
(product triples, AutoGroup's groups), test AUC (mean ± std over seeds), search and
retrain seconds and (search + retrain) / one DeepFM training, measured in the same run; then
a text heatmap of each method's pair scores (mean over seeds, scaled per method from
its lowest to its highest) and a PNG of the same. Raw figures go to ``--out/interaction.json``.

``synthetic-relevant`` restricts synthetic to its six relevant fields (15 pairs, 5 planted),
the setting of the AutoFIS test; ``synthetic`` uses all 13 fields (78 pairs);
``synthetic-personas`` adds two user groups with two planted pairs of their own each
(``synthetic?personas=2``), where BP-FIS's per-group kept pairs are checked against them.
AutoHash and AOANet deliver block DAGs (sketch / gin blocks): their pairs kept are the pairs
those blocks multiply (``explicit_pairs``), AutoHash's order-3 sketch counted beyond pairs.
BP-FIS also prints how personal its selection is.

    python benchmarks/interaction.py --data synthetic-relevant synthetic movielens-100k
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from itertools import combinations
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from _common import machine_line, markdown_table, mean_std, paired_difference  # noqa: E402
from autodrs.data.dataset import Dataset, load_dataset  # noqa: E402
from autodrs.experiment import fit_spec  # noqa: E402
from autodrs.methods.interaction.common import modelled_pairs  # noqa: E402
from autodrs.models.backbones import backbone_spec  # noqa: E402
from autodrs.models.dag import BlockGraph, explicit_pairs  # noqa: E402
from autodrs.search.base import SearchContext, get_method  # noqa: E402
from autodrs.spec import Interaction  # noqa: E402
from autodrs.train.trainer import TrainConfig  # noqa: E402

METHODS = ("autofis", "autogroup", "profit", "fives", "optinter", "pairsearch", "autohash",
           "aoanet", "bpfis")
RELEVANT = ["r0", "r1", "r2", "r3", "r4", "r5"]
SHADES = " .:-=+*#%@"


def load(name: str, rows: int) -> tuple[Dataset, list[str] | None]:
    if name == "synthetic-personas":
        return load_dataset(f"synthetic?rows={rows}&seed=1&personas=2", seed=0), None
    if name.startswith("synthetic"):
        ds = load_dataset(f"synthetic?rows={rows}&seed=1", seed=0)
        return ds, (list(RELEVANT) if name == "synthetic-relevant" else None)
    return load_dataset(name, seed=2026), None


def recovery(ranking: list[list[str]], kept: set[frozenset[str]], planted: set[tuple[str, str]],
             copies: dict[str, str]) -> dict[str, float]:
    pairs = [frozenset(r) for r in ranking if len(r) == 2]
    truth = {frozenset(p) for p in planted}
    top5 = pairs[:5]
    others = [p for p in pairs if p not in truth]
    # the redundant copy carries the same information, so its pairs count as planted
    top5_copy = {frozenset(copies.get(f, f) for f in p) for p in top5} & truth
    return {
        "top5": sum(p in truth for p in top5),
        "top5_copy": len(top5_copy),
        "others_removed": sum(p not in kept for p in others) / max(1, len(others)),
    }


def run_dataset(name: str, rows: int, seeds: int, config: TrainConfig,
                methods: tuple[str, ...], trials: int, backbone: str = "deepfm"
                ) -> dict[str, Any]:
    ds, fields = load(name, rows)
    truth = ds.info.get("truth")
    planted = {tuple(p) for p in truth["pairs"]} if truth else set()
    copies = dict(truth["redundant"]) if truth else {}
    base = backbone_spec("deepfm")
    base.fields = fields
    names = base.used_fields(ds.schema)
    all_pairs = list(combinations(names, 2))
    fit_spec(ds, base, config)  # warm-up, not measured
    runs: dict[str, list[dict[str, Any]]] = {m: [] for m in ("deepfm", "oracle", *methods)}
    for k in range(seeds):
        seed = k
        cfg = replace(config, seed=seed)
        baseline = fit_spec(ds, base, cfg)
        runs["deepfm"].append({"auc": baseline.metrics["test"]["auc"],
                               "seconds": baseline.seconds, "kept": len(all_pairs),
                               "epochs": len(baseline.fit.history)})
        if truth:
            oracle = base.copy(interactions=[Interaction(fields=list(p)) for p in planted
                                             if set(p) <= set(names)])
            out = fit_spec(ds, oracle, cfg)
            runs["oracle"].append({"auc": out.metrics["test"]["auc"], "seconds": out.seconds,
                                   "kept": len(oracle.interactions),
                                   "epochs": len(out.fit.history)})
        for method in methods:
            options: dict[str, Any] = {"backbone": backbone}
            strategy, n_trials = None, None
            if method == "pairsearch":
                strategy, n_trials, options["epochs"] = "tpe", trials, 1
            ctx = SearchContext(dataset=ds, spec=base.copy(), train=cfg, seed=seed,
                                strategy=strategy, trials=n_trials, options=options)
            t0 = time.perf_counter()
            stage = get_method(method).search(ctx)
            search_s = time.perf_counter() - t0
            out = fit_spec(ds, stage.spec, cfg)
            # the pairs the delivered model models (AutoGroup: co-members of its order-2
            # groups), and what it models beyond pairs (triples, groups)
            if stage.spec.dag is not None:
                graph = BlockGraph.from_dict(stage.spec.dag)
                kept = explicit_pairs(graph, names)
                higher = [n for n in graph.nodes if n.type == "sketch" and n.param("order") != 2]
            else:
                kept = modelled_pairs(stage.spec, names)
                higher = [i for i in stage.spec.interactions or []
                          if len(i.fields) != 2 or i.function == "group"]
            row = {"auc": out.metrics["test"]["auc"], "kept": len(kept),
                   "higher": len(higher),
                   "search_seconds": search_s, "retrain_seconds": out.seconds,
                   "ratio": (search_s + out.seconds) / baseline.seconds,
                   "epochs": len(out.fit.history),
                   "scores": {k: v for k, v in stage.scores.items() if k.count("*") == 1},
                   "top": stage.ranking[:5]}
            if truth:
                row |= recovery(stage.ranking, kept, planted, copies)
            if "personal" in stage.extra:
                row["personal"] = personal_row(stage.extra["personal"], truth)
            runs[method].append(row)
            print(f"  {name} seed {seed} {method}: auc {row['auc']:.4f} kept {len(kept)}"
                  f"/{len(all_pairs)} ratio {row['ratio']:.2f}", flush=True)
    return {"runs": runs, "fields": names, "pairs": len(all_pairs),
            "bayes_auc": truth["bayes_auc"] if truth else None}


def personal_row(personal: dict[str, Any], truth: dict[str, Any] | None) -> dict[str, Any]:
    """BP-FIS's personalisation figures and, on data with planted user groups, per group:
    its own planted pairs kept and the other groups' planted pairs kept."""
    row = {k: personal[k] for k in ("users", "pairs_per_user", "shared_pairs",
                                     "personal_pairs", "mean_jaccard_distance")}
    groups = (truth or {}).get("personas")
    if groups:
        planted = {g: {"*".join(p) for p in pairs} for g, pairs in groups["pairs"].items()}
        row["groups"] = {
            g: {"own": len(set(personal["by_user"].get(g, [])) & planted[g]),
                "others": sum(len(set(personal["by_user"].get(g, [])) & planted[o])
                              for o in planted if o != g)}
            for g in planted}
    return row


def print_personal(name: str, result: dict[str, Any]) -> None:
    records = [r["personal"] for r in result["runs"].get("bpfis", []) if "personal" in r]
    if not records:
        return
    print(f"\nBP-FIS personalisation on {name} (per seed): users, pairs kept per user, pairs "
          "every user keeps, pairs some users keep, mean Jaccard distance between the kept "
          "sets of the 20 most frequent users; with planted groups, per group: own planted "
          "pairs kept (of 2) / other groups' planted pairs kept")
    for k, r in enumerate(records):
        groups = "; ".join(f"group {g}: {v['own']}/2 own, {v['others']} others'"
                           for g, v in r.get("groups", {}).items())
        print(f"  seed {k}: {r['users']} users, {r['pairs_per_user']:.1f} pairs/user, "
              f"{r['shared_pairs']} shared, {r['personal_pairs']} personal, Jaccard "
              f"{r['mean_jaccard_distance']:.3f}" + (f"; {groups}" if groups else ""))


def print_table(name: str, result: dict[str, Any]) -> None:
    runs = result["runs"]
    synthetic = result["bayes_auc"] is not None
    header = ["model", "test AUC", "vs DeepFM per seed (± s.e.)", "pairs kept",
              "beyond pairs"]
    if synthetic:
        header += ["planted in top 5", "(copy = r0)", "others removed"]
    header += ["search s", "retrain s", "(search+retrain)/DeepFM", "retrain epochs"]
    rows = []
    for model, records in runs.items():
        if not records:
            continue
        aucs = [r["auc"] for r in records]
        paired = ("-" if model == "deepfm" or len(runs["deepfm"]) != len(aucs) else
                  paired_difference(aucs, [r["auc"] for r in runs["deepfm"]]))
        row: list[object] = [model, mean_std(aucs), paired,
                             f"{np.mean([r['kept'] for r in records]):.1f}/{result['pairs']}",
                             f"{np.mean([r['higher'] for r in records]):.1f}"
                             if "higher" in records[0] else "-"]
        if synthetic:
            if "top5" in records[0]:
                row += [f"{np.mean([r['top5'] for r in records]):.1f}/5",
                        f"{np.mean([r['top5_copy'] for r in records]):.1f}/5",
                        f"{100 * np.mean([r['others_removed'] for r in records]):.0f}%"]
            else:
                row += ["-", "-", "-"]
        if "ratio" in records[0]:
            ratios = [r["ratio"] for r in records]
            row += [f"{np.median([r['search_seconds'] for r in records]):.1f}",
                    f"{np.median([r['retrain_seconds'] for r in records]):.1f}",
                    f"{np.median(ratios):.2f} ({min(ratios):.2f}-{max(ratios):.2f})"]
        else:
            row += ["-", f"{np.median([r['seconds'] for r in records]):.1f}", "1 (baseline)"
                    if model == "deepfm" else "-"]
        row.append(", ".join(str(r["epochs"]) for r in records) if "epochs" in records[0]
                   else "-")
        rows.append(row)
    print(f"\n## {name}" + (f" (Bayes-optimal test AUC {result['bayes_auc']:.4f})"
                            if synthetic else ""))
    print(markdown_table(header, rows))


def score_matrix(result: dict[str, Any], method: str) -> np.ndarray:
    names = result["fields"]
    index = {n: i for i, n in enumerate(names)}
    m = np.zeros((len(names), len(names)))
    for record in result["runs"][method]:
        for key, value in record["scores"].items():
            a, b = key.split("*")
            if a in index and b in index:
                m[index[a], index[b]] += value / len(result["runs"][method])
                m[index[b], index[a]] = m[index[a], index[b]]
    off = ~np.eye(len(names), dtype=bool)
    low, high = m[off].min(), m[off].max()
    scaled = (m - low) / (high - low) if high > low else np.zeros_like(m)
    return np.where(off, scaled, 0.0)


def print_heatmaps(name: str, result: dict[str, Any], methods: tuple[str, ...]) -> None:
    names = result["fields"]
    short = [n[:4] for n in names]
    print(f"\npair scores on {name} (mean over seeds, scaled per method from its lowest to "
          f"its highest pair score; shades '{SHADES}' from 0 to 1)")
    for method in methods:
        m = score_matrix(result, method)
        print(f"\n{method}\n      " + " ".join(f"{s:>4}" for s in short))
        for i, n in enumerate(short):
            cells = ["   \\" if i == j else "   " + SHADES[min(9, int(m[i, j] * 9.999))]
                     for j in range(len(names))]
            print(f"{n:>5} " + " ".join(cells))


def plot_heatmaps(results: dict[str, Any], methods: tuple[str, ...], path: Path) -> None:
    fig, axes = plt.subplots(len(results), len(methods),
                             figsize=(3 * len(methods), 3 * len(results)), squeeze=False)
    for row, (name, result) in enumerate(results.items()):
        for col, method in enumerate(methods):
            ax = axes[row][col]
            ax.imshow(score_matrix(result, method), cmap="viridis", vmin=0, vmax=1)
            ticks = range(len(result["fields"]))
            ax.set_xticks(ticks, result["fields"], rotation=90, fontsize=6)
            ax.set_yticks(ticks, result["fields"], fontsize=6)
            ax.set_title(f"{method} · {name}", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", nargs="+",
                        default=["synthetic-relevant", "synthetic", "movielens-100k"])
    parser.add_argument("--rows", type=int, default=200_000,
                        help="synthetic rows (the default `--data synthetic` size)")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--patience", type=int, default=3)
    parser.add_argument("--lr", type=float, default=3e-3,
                        help="Adam learning rate of every model (3e-3: DeepFM converges "
                             "within 10 epochs on both datasets)")
    parser.add_argument("--trials", type=int, default=8, help="pairsearch trials")
    parser.add_argument("--methods", nargs="+", default=list(METHODS))
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--backbone", default="deepfm", choices=["deepfm", "fm"],
                        help="the head every method searches and delivers under (the "
                             "baseline stays DeepFM)")
    parser.add_argument("--out", type=Path, default=Path("runs/bench-interaction"))
    args = parser.parse_args()
    config = TrainConfig(epochs=args.epochs, batch_size=1024, lr=args.lr,
                         patience=args.patience, progress=False, threads=args.threads, seed=0)
    methods = tuple(args.methods)
    results = {}
    for name in args.data:
        print(f"running {name} ...", flush=True)
        results[name] = run_dataset(name, args.rows, args.seeds, config, methods, args.trials,
                                    args.backbone)
    print(f"\n{machine_line()}")
    print(f"training: Adam lr {args.lr}, batch 1024, up to {args.epochs} epochs, early "
          f"stopping on validation AUC "
          f"with patience {args.patience}, {args.backbone} backbone for the methods, DeepFM "
          "baseline (dim 16, MLP 256-128); "
          f"{args.seeds} seeds; pairsearch = TPE, {args.trials} trials of 1 epoch")
    for name, result in results.items():
        print_table(name, result)
        print_personal(name, result)
    for name, result in results.items():
        print_heatmaps(name, result, methods)
    args.out.mkdir(parents=True, exist_ok=True)
    plot_heatmaps(results, methods, args.out / "interaction_scores.png")
    (args.out / "interaction.json").write_text(json.dumps(results, indent=1, default=float))
    print(f"\nwrote {args.out / 'interaction.json'} and {args.out / 'interaction_scores.png'}")


if __name__ == "__main__":
    main()
