"""Graph recommenders on movielens-100k's leave-last-out split: popularity, LightGCN and
the SANE-style searched graph model on the user-item graph; SR-GNN and the AutoGSR-style
searched session-graph model on the sequence task (each held-out item predicted from the
user's last 20 earlier items). All are ranked over every item the user has no training
edge to, so recall@20, NDCG@20 and the per-user AUC compare across the five.

    python benchmarks/graph.py --seeds 3 --jobs 3

Each seed runs in its own process (one thread each); the table gives mean ± spread over
seeds and paired per-seed differences.
"""

from __future__ import annotations

import argparse
import json
import time
import warnings
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

from _common import machine_line, markdown_table, mean_std, paired_difference


def one_seed(seed: int, args: argparse.Namespace) -> dict[str, Any]:
    import torch

    warnings.filterwarnings("ignore", message="Sparse")
    torch.set_num_threads(1)
    from autodrs.graph import movielens_graph, popularity

    g = movielens_graph()
    out: dict[str, Any] = {"seed": seed}
    out["popularity"] = {"test": popularity(g, "test"), "valid": popularity(g, "valid"),
                         "seconds": 0.0}
    if "graph" in args.parts:
        graph_models(g, seed, args, out)
    if "session" in args.parts:
        session_models(g, seed, args, out)
    print(json.dumps({k: (v["test"] if isinstance(v, dict) else v) for k, v in out.items()}),
          flush=True)
    return out


def graph_models(g: Any, seed: int, args: argparse.Namespace, out: dict[str, Any]) -> None:
    from autodrs.graph import GraphTrainConfig, fit_graph, lightgcn, search_graph

    cfg = GraphTrainConfig(lr=args.lr, epochs=args.epochs, patience=args.patience, seed=seed)
    fit = fit_graph(g, lightgcn(dim=64, layers=3), cfg)
    out["lightgcn"] = {**fit.to_dict(), "history": None}
    started = time.perf_counter()
    found = search_graph(g, layers=3, dim=64, epochs=args.search_epochs, config=cfg,
                         warmup=args.warmup, candidates=args.candidates,
                         candidate_epochs=args.candidate_epochs or None,
                         one_shot=args.one_shot)
    # a candidate trained like the final model (--candidate-epochs 0) is its final fit
    fit = found.fit_of(found.spec) or fit_graph(g, found.spec, cfg)
    out["sane"] = {**fit.to_dict(), "history": None, "search": found.to_dict(),
                   "seconds": round(time.perf_counter() - started, 1)}
    if (args.candidates > 1 or args.one_shot) and args.argmax:
        # SANE's own derivation (the argmax), retrained the same way, for the comparison
        argmax = found.argmax or found.spec
        same = argmax.key() == found.spec.key()
        arg = fit if same else found.fit_of(argmax) or fit_graph(g, argmax, cfg)
        out["sane_argmax"] = {**arg.to_dict(), "history": None,
                              "seconds": round(found.seconds + arg.seconds, 1)}


def session_models(g: Any, seed: int, args: argparse.Namespace, out: dict[str, Any]) -> None:
    from autodrs.graph.session import (
        SessionConfig,
        fit_session,
        search_session,
        session_task,
        srgnn,
    )

    data = session_task(g, max_len=20, recent=args.recent)
    scfg = SessionConfig(epochs=args.session_epochs, patience=2, seed=seed,
                         arch_lr=args.session_arch_lr)
    fit_s = fit_session(g, data, srgnn(64), scfg)
    out["srgnn"] = {**fit_s, "history": None}
    started = time.perf_counter()
    found_s = search_session(g, data, layers=2, dim=64, epochs=args.session_search_epochs,
                             config=scfg, warmup=args.session_search_epochs // 3)
    fit_s = fit_session(g, data, found_s["spec"], scfg)
    found_s["spec"] = found_s["spec"].to_dict()
    out["autogsr"] = {**fit_s, "history": None, "search": found_s,
                      "seconds": round(time.perf_counter() - started, 1)}


MODELS = {"popularity": "popularity (train degree)", "lightgcn": "LightGCN (3 x sym, mean)",
          "sane_argmax": "SANE-style search, argmax derived",
          "sane": "SANE-style search, best of the top candidates", "srgnn": "SR-GNN (gated, attn)",
          "autogsr": "AutoGSR-style searched session model"}
PAIRS = [("lightgcn", "popularity"), ("sane_argmax", "lightgcn"), ("sane", "lightgcn"),
         ("srgnn", "lightgcn"),
         ("autogsr", "srgnn")]


def table(runs: list[dict[str, Any]]) -> str:
    rows = []
    for key, name in MODELS.items():
        if key not in runs[0]:
            continue
        test = [r[key]["test"] for r in runs]
        rows.append([name, mean_std([t["recall@20"] for t in test]),
                     mean_std([t["ndcg@20"] for t in test]), mean_std([t["auc"] for t in test]),
                     f"{sum(r[key]['seconds'] for r in runs) / len(runs):.0f}"])
    lines = [markdown_table(["model", "test recall@20", "test NDCG@20", "test AUC (per user)",
                             "seconds"], rows), ""]
    diff_rows = []
    for a, b in PAIRS:
        if a not in runs[0] or b not in runs[0]:
            continue
        diff_rows.append([f"{a} - {b}", *(paired_difference(
            [r[a]["test"][m] for r in runs], [r[b]["test"][m] for r in runs])
            for m in ("recall@20", "ndcg@20", "auc"))])
    lines.append(markdown_table(["paired difference", "recall@20", "NDCG@20", "AUC"],
                                diff_rows))
    lines.append("")
    for r in runs:
        found = [f"{name} found {r[key]['spec']} (search {r[key]['search']})"
                 for key, name in (("sane", "SANE"), ("autogsr", "AutoGSR")) if key in r]
        lines.append(f"seed {r['seed']}: " + "; ".join(found))
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--jobs", type=int, default=3, help="seeds run at once")
    parser.add_argument("--lr", type=float, default=1e-2)
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--patience", type=int, default=5)
    parser.add_argument("--search-epochs", type=int, default=9)
    parser.add_argument("--warmup", type=int, default=None,
                        help="SANE: warm-up epochs at uniform architecture weights "
                             "(default a third of --search-epochs)")
    parser.add_argument("--candidates", type=int, default=4,
                        help="SANE: the supernet's N most probable specs trained, "
                             "the best on validation NDCG kept (1: the argmax)")
    parser.add_argument("--one-shot", type=int, default=0,
                        help="SANE: also the N specs of best one-shot validation NDCG at "
                             "the end of the warm-up")
    parser.add_argument("--candidate-epochs", type=int, default=10,
                        help="0: each candidate trained to early stopping like the final "
                             "model (the kept one's fit is its final fit)")
    parser.add_argument("--argmax", action=argparse.BooleanOptionalAction, default=True,
                        help="also retrain SANE's argmax spec for the comparison")
    parser.add_argument("--recent", type=int, default=20,
                        help="each user's last N training rows train the session models")
    parser.add_argument("--session-epochs", type=int, default=8)
    parser.add_argument("--session-search-epochs", type=int, default=3,
                        help="the first third of them a warm-up")
    parser.add_argument("--session-arch-lr", type=float, default=3e-3)
    parser.add_argument("--parts", default="graph,session",
                        help="graph (popularity, LightGCN, SANE), session (SR-GNN, AutoGSR)")
    parser.add_argument("--out", type=Path, default=Path("runs/bench_graph.json"))
    args = parser.parse_args()
    print(machine_line(), flush=True)
    started = time.perf_counter()
    with ProcessPoolExecutor(max_workers=args.jobs) as pool:
        runs = list(pool.map(one_seed, range(args.seeds), [args] * args.seeds))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(runs, indent=2))
    print(table(runs))
    print(f"wall {time.perf_counter() - started:.0f} s; per-seed results -> {args.out}")


if __name__ == "__main__":
    main()
