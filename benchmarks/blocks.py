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

With ``--command``, each dataset and seed instead runs exactly ``autodrs search --data D
--methods autoctr --budget B --seed S`` (through ``autodrs.api.run_search``; its baseline is
DeepFM, trained in the run) and then, outside the budget, fits the other backbones of the
default pipeline (``--backbones``, default ``deepfm,fm,widedeep,dcnv2,ipnn``) with the run's own
data split and training settings (the same ``--lr``: ``--methods autoctr`` has no ``optim``
stage, so neither the searched model nor any backbone is tuned; no fit is cut short by a
budget). Printed per dataset: per seed AutoCTR's test AUC against the best backbone by test
AUC (the bar) and against the backbone that validated best, the paired mean difference with
its spread, the candidates AutoCTR evaluated, its final fit, and the load average.

    python benchmarks/blocks.py --command --datasets movielens-100k,synthetic
        --first-seed 0 --seeds 3 --budget 20m --threads 1 --out runs/bench-autoctr [--reuse]

``--part search`` and ``--part backbones`` split the work between processes (each writes
its own file per dataset and seed); a last ``--reuse`` call joins them into the tables.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import torch

from _common import machine_line, markdown_table, mean_std
from autodrs.config import DEFAULT_BASELINES
from autodrs.data.dataset import Dataset, load_dataset
from autodrs.data.synthetic import oracle_spec
from autodrs.experiment import fit_spec
from autodrs.methods.blocks.autoctr import summary
from autodrs.models import backbone_spec
from autodrs.report import plots
from autodrs.search.base import SearchContext, get_method, parse_budget
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


def command_run(data: str, seed: int, budget: str, threads: int | None,
                out: Path) -> dict[str, Any]:
    """``autodrs search --data data --methods autoctr --budget budget --seed seed``: the
    searched model, its in-run DeepFM baseline, what AutoCTR did and the load average."""
    from autodrs.api import run_search
    from autodrs.config import SearchSettings

    settings = SearchSettings(data=data, methods=["autoctr"], budget=budget, seed=seed,
                              threads=threads, progress=False, out=str(out), overwrite=True)
    load = [round(x, 2) for x in os.getloadavg()]
    t0 = time.perf_counter()
    result = run_search(settings, report=False).result
    wall = time.perf_counter() - t0
    load_after = [round(x, 2) for x in os.getloadavg()]
    stage = result["stages"][0]
    models = {name: {"valid": row["valid"]["auc"], "test": row["test"]["auc"],
                     "best_epoch": row["best_epoch"], "still_improving": row["still_improving"],
                     "cut_short": row["cut_short"], "in_run": True}
              for name, row in result["baselines"].items()}
    extra = {k: stage.get(k) for k in ("candidates", "fidelity", "best_number", "seed_numbers",
                                       "seed_names", "promoted", "full_fits", "rank_by",
                                       "final_fit", "final_cut", "final_leaders", "valid_auc",
                                       "valid_logloss", "stopped_by_budget", "seconds",
                                       "final_rule", "no_result")}
    trials = stage.get("trials") or []
    return {"data": data, "seed": seed, "budget": budget,
            "autoctr": {"valid": result["metrics"]["valid"]["auc"],
                        "test": result["metrics"]["test"]["auc"],
                        "dag": summary(ArchSpec.from_dict(result["spec"]))
                        if result["spec"].get("dag") else "no DAG (input kept)",
                        "retrain_cut_short": result["cost"]["retrain_cut_short"]},
            "stage": extra, "search_seconds": result["cost"].get("search_seconds"),
            "leaders": sorted(
                ({"number": t["number"], "valid_auc": t["valid"]["auc"],
                  "valid_logloss": t["valid"]["logloss"], "dag": t["dag"]} for t in trials),
                key=lambda t: t["valid_logloss"])[:5],
            "backbones": models, "cost": result["cost"], "wall": wall,
            "load": load, "load_after": load_after}


def backbone_fits(data: str, seed: int, backbones: list[str],
                  threads: int | None) -> dict[str, Any]:
    """The backbones fitted on the search command's own data split with its own training
    settings (what ``autodrs search --data data --seed seed`` uses; no budget)."""
    from autodrs.api import _train_config, load_data
    from autodrs.config import SearchSettings

    settings = SearchSettings(data=data, methods=["autoctr"], seed=seed, threads=threads,
                              progress=False)
    ds = load_data(settings)
    config = _train_config(settings)
    models = {}
    for name in backbones:
        fit = fit_spec(ds, backbone_spec(name, settings.embed_dim), config)
        models[name] = {"valid": fit.metrics["valid"]["auc"], "test": fit.metrics["test"]["auc"],
                        "best_epoch": fit.fit.best_epoch,
                        "still_improving": fit.fit.still_improving, "cut_short": False,
                        "in_run": False}
        print(f"  {data} seed {seed} {name}: test AUC {models[name]['test']:.4f}", flush=True)
    return models


def command_table(records: list[dict[str, Any]]) -> str:
    """Per seed and paired: AutoCTR against the best backbone by test AUC and the backbone
    that validated best."""
    rows, bar, chosen = [], [], []
    for r in records:
        bb = r["backbones"]
        top = max(bb, key=lambda n: bb[n]["test"])
        val = max(bb, key=lambda n: bb[n]["valid"])
        auc = r["autoctr"]["test"]
        bar.append(auc - bb[top]["test"])
        chosen.append(auc - bb[val]["test"])
        st = r["stage"]
        names = st.get("seed_names") or {}
        kind = ("nothing in full: the start" if st["best_number"] is None
                else f"{names[str(st['best_number'])]} seed shape"
                if str(st["best_number"]) in names
                else "seed shape" if st["best_number"] in (st["seed_numbers"] or [])
                else "evolved DAG")
        final = ", ".join(f"#{f['number']} {f['valid_auc']:.4f}"
                          for f in st.get("final_fit") or [])
        def name(n: str, bb: dict[str, Any] = bb) -> str:  # marks a fit cut short
            return n + ("*" if bb[n]["cut_short"] else "")

        rows.append([r["seed"], f"{auc:.4f}" + ("*" if r["autoctr"]["retrain_cut_short"]
                                                 else ""),
                     f"{name(top)} {bb[top]['test']:.4f}",
                     f"{bar[-1]:+.4f}", f"{name(val)} {bb[val]['test']:.4f}",
                     f"{chosen[-1]:+.4f}",
                     f"{st['candidates']} ({st['fidelity']}; {st.get('full_fits')} full fits, "
                     f"{len(st.get('promoted') or [])} promoted; search "
                     f"{r.get('search_seconds') or 0:.0f} s, run {r['wall']:.0f} s)"
                     if "full_fits" in st else
                     f"{st['candidates']} ({st['fidelity']}, {st.get('final_leaders')} "
                     "leader(s) in the final fit)",
                     f"#{st['best_number']} {kind}; {final}",
                     rule_cell(st.get("final_rule")),
                     "/".join(f"{x:.1f}" for x in r["load"]) + " → "
                     + "/".join(f"{x:.1f}" for x in r["load_after"])])

    def paired(d: list[float]) -> str:
        a = np.asarray(d)
        spread = f" (sd {a.std(ddof=1):.4f}, se {a.std(ddof=1) / np.sqrt(a.size):.4f})" \
            if a.size > 1 else ""
        return f"{a.mean():+.4f}{spread}"

    rows.append(["paired mean", "", "", paired(bar), "", paired(chosen), "", "", "", ""])
    return markdown_table(["seed", "AutoCTR test AUC", "best backbone by test",
                           "AutoCTR − best", "backbone best by valid", "AutoCTR − it",
                           "candidates", "returned; final fit (mean valid AUC)",
                           "final rule: leader vs seed shape, lead (se), bound",
                           "load 1/5/15 min (start → end)"], rows)


def rule_cell(rule: dict[str, Any] | None) -> str:
    """AutoCTR's final rule (``final_rule`` in the stage info): the leader, and under
    ``paired`` its test against the best seed shape and what it returned."""
    if not rule or "leader" not in rule:
        return (rule or {}).get("rule", "")
    if "lead" not in rule:
        return f"{rule['rule']}: #{rule['leader']} returned ({rule.get('why', 'the leader')})"
    verdict = "evolved returned" if rule["returned"] == rule["leader"] else \
        f"seed #{rule['returned']} returned"
    return (f"paired: #{rule['leader']} vs #{rule['reference']}, {rule['lead']:+.4f} "
            f"({rule['se']:.4f}), z {rule['z']:.2f} (m {rule['comparisons']}), bound "
            f"{rule['lower_bound']:+.4f}: {verdict}")


def command_main(args: argparse.Namespace) -> None:
    """Search (``--part search``), backbones (``--part backbones``) or both (``all``), each
    written per dataset and seed; the table joins what is there (the in-run DeepFM is the
    run's own baseline, the other backbones come from their own file)."""
    backbones = [b for b in args.backbones.split(",") if b]
    args.out.mkdir(parents=True, exist_ok=True)
    print(machine_line())
    for data in args.datasets.split(","):
        tag = data.split("?")[0]
        records = []
        for k in range(args.seeds):
            seed = args.first_seed + k
            if args.part in ("all", "backbones"):
                path = args.out / f"backbones-{tag}-{seed}.json"
                if saved(path, args.reuse) is None:
                    path.write_text(json.dumps(backbone_fits(data, seed, backbones,
                                                             args.threads), indent=1))
            if args.part in ("all", "search"):
                path = args.out / f"command-{tag}-{seed}.json"
                if saved(path, args.reuse) is None:
                    record = command_run(data, seed, args.budget, args.threads,
                                         args.out / f"run-{tag}-{seed}")
                    path.write_text(json.dumps(record, indent=1, default=str))
            run = saved(args.out / f"command-{tag}-{seed}.json", True)
            if run is None:
                continue
            # the backbones fitted apart (any backbones-*.json under --out); the run's own
            # DeepFM stands unless its budget share cut it short and a full fit exists
            fits: dict[str, Any] = {}
            for path in sorted(args.out.glob(f"**/backbones-{tag}-{seed}.json")):
                fits |= json.loads(path.read_text())
            joined = {n: v for n, v in fits.items() if n in backbones}
            for name, row in run["backbones"].items():
                if name not in joined or not row["cut_short"]:
                    joined[name] = row
            run["backbones"] = joined
            records.append(run)
            print(f"  {data} seed {seed}: AutoCTR {run['autoctr']['test']:.4f} "
                  f"({run['autoctr']['dag']}); "
                  + ", ".join(f"{n} {v['test']:.4f}" for n, v in run["backbones"].items()),
                  flush=True)
        if records:
            print(f"\n## {data}: autodrs search --data {data} --methods autoctr --budget "
                  f"{args.budget} --seed S ({len(records)} seeds)\n")
            print(command_table(records), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", default="movielens-100k,synthetic?rows=200000")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--first-seed", type=int, default=2026,
                        help="seeds are first-seed, first-seed + 1, ...")
    parser.add_argument("--methods", default="autoctr,autopi,sif,autofeature,aim")
    parser.add_argument("--baselines", default="deepfm,ipnn,dcnv2,autoint")
    parser.add_argument("--budget", default="1200",
                        help="wall time for autoctr and autofeature (seconds, or 20m)")
    parser.add_argument("--backbones", default=DEFAULT_BASELINES,
                        help="with --command: the backbones AutoCTR is compared with")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=1024)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--out", type=Path, default=Path("runs/bench-blocks"))
    parser.add_argument("--reuse", action="store_true",
                        help="read back the measurements a run with the same --out already "
                             "wrote (per model, dataset and seed) instead of repeating them, "
                             "so seeds run apart can be tabled together")
    parser.add_argument("--part", choices=("all", "search", "backbones"), default="all",
                        help="with --command: run the searches, the backbone fits, or both "
                             "(two processes can share the work; --reuse then joins them)")
    parser.add_argument("--command", action="store_true",
                        help="run `autodrs search --methods autoctr --budget B --seed S` per "
                             "dataset and seed against every backbone (see the module doc)")
    args = parser.parse_args()
    if args.command:
        command_main(args)
        return
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
                                        budget_seconds=parse_budget(args.budget)
                                        if method in BUDGETED else None)
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
