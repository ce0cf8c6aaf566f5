"""``autodrs graph``: train or search a graph recommender on a log's leave-last-out split.

Graph recommenders rank items for a user rather than score one row's click, so they have
their own command (not a ``search`` stage: their spec is a ``GraphSpec`` or
``SessionSpec``, not an ``ArchSpec`` for ``build_model``). The run folder's ``result.json``
follows the contract of the other commands: ``spec``, ``metrics`` (valid and test
recall@k, NDCG@k and per-user AUC), ``baselines`` on the same split, ``cost`` and, for a
search, one ``stages`` entry with the architecture weights.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

METHODS = {
    "lightgcn": "LightGCN on the user-item graph (no search)",
    "sane": "SANE-style search of the user-item graph model's layers and combine",
    "srgnn": "SR-GNN on the session graph of each user's history (no search)",
    "autogsr": "AutoGSR-style search of the session-graph model's layers and readout",
}
BASELINES = ("popularity", "lightgcn", "srgnn")
# columns of the built-in log
BUILTIN_COLUMNS = {"movielens-100k": ("user_id", "item_id", "timestamp")}

out = Console()


def run_graph(data: str = "movielens-100k", method: str = "sane", out_dir: Path | None = None,
              user: str | None = None, item: str | None = None, time_col: str | None = None,
              fmt: str | None = None, baselines: str | None = None, seed: int = 2026,
              epochs: int = 40, search_epochs: int = 9, lr: float = 1e-2, dim: int = 64,
              layers: int = 3, k: int = 20, max_len: int = 20, recent: int | None = None,
              session_epochs: int = 8, session_search_epochs: int = 3, guard: bool = True,
              candidates: int = 4, candidate_epochs: int = 10, one_shot: int = 0,
              warmup: int | None = None, overwrite: bool = False) -> dict[str, Any]:
    """Train or search ``method`` on ``data`` and write ``out_dir/result.json``; returns
    the result. With ``guard``, a search's derived spec is kept only when it validates at
    least as well as the hand-made model (LightGCN for ``sane``, SR-GNN for ``autogsr``);
    otherwise the hand-made model is the result, and the stage says so. ``candidates``
    (``sane``): how many of the supernet's most probable specs are trained for
    ``candidate_epochs`` (0: to early stopping, like the final model) and compared on
    validation NDCG (1: SANE's argmax alone); ``one_shot`` adds the specs of best one-shot
    validation NDCG at the end of the search's ``warmup`` (default a third of its epochs)."""
    import warnings

    import polars as pl
    import torch

    from autodrs.data.sources import open_source
    from autodrs.graph.data import from_log
    from autodrs.graph.models import lightgcn
    from autodrs.graph.session import (
        SessionConfig,
        fit_session,
        search_session,
        session_task,
        srgnn,
    )
    from autodrs.graph.train import GraphTrainConfig, fit_graph, popularity, search_graph
    from autodrs.provenance import versions
    from autodrs.runfolder import check_run_folder, prepare_run_folder, write_json

    if method not in METHODS:
        raise ValueError(f"unknown graph method {method!r}; choose from {', '.join(METHODS)}")
    chosen = _baselines(baselines, method)
    for name, value in (("epochs", epochs), ("search-epochs", search_epochs), ("dim", dim),
                        ("layers", layers), ("k", k), ("session-epochs", session_epochs),
                        ("session-search-epochs", session_search_epochs),
                        ("candidates", candidates)):
        if value < 1:
            raise ValueError(f"--{name} must be at least 1, got {value}")
    for name, value in (("candidate-epochs", candidate_epochs), ("one-shot", one_shot),
                        ("warmup", warmup or 0)):
        if value < 0:
            raise ValueError(f"--{name} must be at least 0, got {value}")
    if out_dir is not None:
        check_run_folder(out_dir, overwrite=overwrite)
    warnings.filterwarnings("ignore", message="Sparse")
    torch.manual_seed(seed)
    name = data.partition("?")[0]
    user, item, time_col = (a or b for a, b in zip(
        (user, item, time_col), BUILTIN_COLUMNS.get(name, (None, None, None)), strict=True))
    if not (user and item and time_col):
        raise ValueError("graph: name the log's columns with --user, --item and --time")
    src = open_source(data, fmt=fmt)
    chunks = [c for c in src.chunks() if c.height]
    if not chunks:
        raise ValueError(f"{data} has no data rows")
    g = from_log(pl.concat(chunks, how="vertical_relaxed"), user, item, time_col)
    cfg = GraphTrainConfig(epochs=epochs, lr=lr, k=k, seed=seed)
    session_cfg = SessionConfig(epochs=session_epochs, k=k, seed=seed, patience=2)
    session = None

    def sessions() -> Any:
        nonlocal session
        if session is None:
            session = session_task(g, max_len=max_len, recent=recent)
        return session

    started = time.perf_counter()
    stages: list[dict[str, Any]] = []
    if method in ("lightgcn", "sane"):
        spec = lightgcn(dim=dim, layers=layers)
        reused = None
        if method == "sane":
            found = search_graph(g, layers=layers, dim=dim, epochs=search_epochs, config=cfg,
                                 warmup=warmup, candidates=candidates,
                                 candidate_epochs=candidate_epochs or None, one_shot=one_shot)
            spec = found.spec
            reused = found.fit_of(spec)
            stages.append({"method": "sane", "strategy": "gradient", **found.to_dict(),
                           "spec": spec.to_dict()})
        search_seconds = time.perf_counter() - started
        # a candidate trained like the final model (candidate_epochs 0) is its final fit
        fit = (reused or fit_graph(g, spec, cfg)).to_dict()
    else:
        spec = srgnn(dim=dim)
        if method == "autogsr":
            found_s = search_session(g, sessions(), layers=min(layers, 2), dim=dim,
                                     epochs=session_search_epochs, config=session_cfg,
                                     warmup=session_search_epochs // 3)
            spec = found_s["spec"]
            stages.append({"method": "autogsr", "strategy": "gradient",
                           **{**found_s, "spec": spec.to_dict()}})
        search_seconds = time.perf_counter() - started
        fit = fit_session(g, sessions(), spec, session_cfg)
    retrain = time.perf_counter() - started - search_seconds
    hand: dict[str, dict[str, Any]] = {}

    def hand_made(base: str) -> dict[str, Any]:
        if base not in hand:
            if base == "lightgcn":
                hand[base] = fit_graph(g, lightgcn(dim=dim, layers=layers), cfg).to_dict()
            else:
                hand[base] = fit_session(g, sessions(), srgnn(dim=dim), session_cfg)
        return hand[base]

    if guard and stages:
        # validation only: the test items stay unseen by the choice
        base = "lightgcn" if method == "sane" else "srgnn"
        metric = f"ndcg@{k}"
        other = hand_made(base)
        kept = base if other["valid"][metric] > fit["valid"][metric] else "derived"
        stages[-1]["guard"] = {"kept": kept, "metric": f"valid {metric}",
                               "derived": fit["valid"][metric], base: other["valid"][metric]}
        if kept == base:
            fit = other
    board: dict[str, Any] = {}
    for base in chosen:
        if base == "popularity":
            board[base] = {"test": popularity(g, "test", k), "valid": popularity(g, "valid", k)}
        else:
            b = hand_made(base)
            board[base] = {"test": b["test"], "valid": b["valid"], "spec": b["spec"]}
    result = {
        "command": "graph", "method": method, "seed": seed,
        "data": {"name": src.name, "user": user, "item": item, "time": time_col,
                 "users": g.users, "items": g.items, "train_edges": int(len(g.train)),
                 "held_out_users": int(len(g.test)),
                 "split": "leave-last-out by time (last: test, one before: valid)"},
        "spec": fit["spec"],
        "metrics": {"test": fit["test"], "valid": fit["valid"]},
        "baselines": board,
        "cost": {"search_seconds": round(search_seconds, 3),
                 "retrain_seconds": round(retrain, 3)},
        "best_epoch": fit["best_epoch"], "epochs": fit["epochs"],
        "stages": stages,
        "config": {"guard": guard, "epochs": epochs, "search_epochs": search_epochs, "lr": lr,
                   "dim": dim, "layers": layers, "k": k, "max_len": max_len, "recent": recent,
                   "session_epochs": session_epochs,
                   "session_search_epochs": session_search_epochs,
                   "candidates": candidates, "candidate_epochs": candidate_epochs,
                   "one_shot": one_shot, "warmup": warmup},
        "versions": versions(),
    }
    if out_dir is not None:
        prepare_run_folder(out_dir, overwrite=overwrite)
        write_json(Path(out_dir) / "result.json", result)
    return result


def _baselines(text: str | None, method: str) -> list[str]:
    if text is None:
        return ["popularity", "lightgcn" if method in ("lightgcn", "sane") else "srgnn"]
    if text.strip() == "none":
        return []
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in BASELINES]
    if unknown:
        raise ValueError(f"unknown graph baseline(s) {unknown}; choose from "
                         f"{', '.join(BASELINES)} or none")
    return names


def graph_command(
    data: Annotated[str, typer.Option(help="built-in name (movielens-100k) or a file with "
                                           "user, item and time columns")] = "movielens-100k",
    method: Annotated[str, typer.Option(help="lightgcn, sane, srgnn or autogsr")] = "sane",
    out_dir: Annotated[Path, typer.Option("--out", help="run folder")] = Path("runs/graph"),
    user: Annotated[str | None, typer.Option(help="user column")] = None,
    item: Annotated[str | None, typer.Option(help="item column")] = None,
    time_col: Annotated[str | None, typer.Option("--time", help="time column")] = None,
    fmt: Annotated[str | None, typer.Option("--format", help="csv|tsv|parquet")] = None,
    baselines: Annotated[str | None, typer.Option(
        help="comma-separated: popularity, lightgcn, srgnn, or none (default: popularity "
             "and the method's hand-made model)")] = None,
    seed: Annotated[int, typer.Option(help="random seed")] = 2026,
    epochs: Annotated[int, typer.Option(help="maximum epochs of a user-item graph model "
                                            "(early stopping on validation NDCG)")] = 40,
    search_epochs: Annotated[int, typer.Option(help="SANE search epochs")] = 9,
    lr: Annotated[float, typer.Option(help="Adam learning rate of the graph models")] = 1e-2,
    dim: Annotated[int, typer.Option(help="embedding dim")] = 64,
    layers: Annotated[int, typer.Option(help="graph layers (session models: at most 2)")] = 3,
    k: Annotated[int, typer.Option(help="cut-off of recall@k and NDCG@k")] = 20,
    max_len: Annotated[int, typer.Option(help="session models: history length")] = 20,
    recent: Annotated[int | None, typer.Option(
        help="session models: train on each user's last N training rows only")] = None,
    session_epochs: Annotated[int, typer.Option(help="maximum epochs of a session model")] = 8,
    session_search_epochs: Annotated[int, typer.Option(help="AutoGSR search epochs")] = 3,
    guard: Annotated[bool, typer.Option(
        help="keep a searched spec only when it validates at least as well as the "
             "hand-made model (LightGCN, SR-GNN); otherwise deliver that model")] = True,
    candidates: Annotated[int, typer.Option(
        help="sane: train the supernet's N most probable specs briefly and keep the best on "
             "validation NDCG (1: the argmax alone)")] = 4,
    candidate_epochs: Annotated[int, typer.Option(
        help="sane: epochs of each candidate's training (0: to early stopping, like the "
             "final model)")] = 10,
    one_shot: Annotated[int, typer.Option(
        help="sane: also train the N specs of best one-shot validation NDCG (the supernet's "
             "embeddings at the end of the warm-up)")] = 0,
    warmup: Annotated[int | None, typer.Option(
        help="sane: warm-up epochs at uniform architecture weights (default: a third of "
             "--search-epochs)")] = None,
    overwrite: Annotated[bool, typer.Option(help="replace the run --out already holds")
                         ] = False,
) -> None:
    """Train or search a graph recommender (leave-last-out split, recall@k and NDCG@k)."""
    result = run_graph(data=data, method=method, out_dir=out_dir, user=user, item=item,
                       time_col=time_col, fmt=fmt, baselines=baselines, seed=seed,
                       epochs=epochs, search_epochs=search_epochs, lr=lr, dim=dim,
                       layers=layers, k=k, max_len=max_len, recent=recent,
                       session_epochs=session_epochs,
                       session_search_epochs=session_search_epochs, guard=guard,
                       candidates=candidates, candidate_epochs=candidate_epochs,
                       one_shot=one_shot, warmup=warmup, overwrite=overwrite)
    test = result["metrics"]["test"]
    line = "  ".join(f"{m} {v:.4f}" for m, v in test.items())
    out.print(f"{method} {result['spec']}: test {line}", highlight=False)
    for stage in result["stages"]:
        if stage.get("guard", {}).get("kept", "derived") != "derived":
            out.print(f"guard: the searched spec validated below {stage['guard']['kept']}; "
                      f"delivered {stage['guard']['kept']}", highlight=False)
    for name, row in result["baselines"].items():
        line = "  ".join(f"{m} {v:.4f}" for m, v in row["test"].items())
        out.print(f"baseline {name}: test {line}", highlight=False)
    out.print(f"-> {out_dir / 'result.json'}", highlight=False)
