"""Multi-task models on MovieLens-100k's two tasks (``like``: rating >= 4, ``love``: rating 5):
per-task test AUC of separate single-task models, shared-bottom and MMoE, each with and
without GradNorm, and the architecture the ``mtl`` search picks, over seeds (each seed its
own split and initialisation), with paired differences against the separate models.

Every model embeds the same fields at the same dim and has the same depth: separate models
are one MLP (``bottom + tower`` widths) per task over their own embeddings; shared-bottom
shares the embeddings and the ``bottom`` layers, then one ``tower`` per task; MMoE mixes
``experts`` bottoms per task by a softmax gate. The search (``mtl``, grid) trains every
branching of the bottom layers and MMoE with 2 and 4 experts with the same trainer and keeps
the best mean validation AUC; its candidates that are the shared-bottom and MMoE-4 models
above are the same fits (``experiment.shared_fits``), not trained twice.

    python benchmarks/multitask.py --seeds 3 --out runs/bench-multitask

or one process per seed, side by side, then their table:

    for s in 2026 2027 2028; do python benchmarks/multitask.py --first-seed $s --seeds 1 \
        --threads 1 --out runs/bench-multitask/$s & done; wait
    python benchmarks/multitask.py --merge runs/bench-multitask/*/result.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from _common import machine_line, markdown_table, mean_std, paired_difference
from autodrs.data.dataset import load_dataset
from autodrs.experiment import fit_spec, shared_fits
from autodrs.methods.multitask.mtl import MultiTaskSearch
from autodrs.search.base import SearchContext
from autodrs.spec import ArchSpec, MultiTaskSpec
from autodrs.train.trainer import TrainConfig

MODELS = ("separate", "shared-bottom", "shared-bottom + GradNorm", "MMoE", "MMoE + GradNorm",
          "searched (mtl)")


def specs(dim: int, bottom: list[int], tower: list[int], experts: int,
          alpha: float) -> dict[str, ArchSpec]:
    def mt(**kw: object) -> ArchSpec:
        return ArchSpec(embed_dim=dim, mlp=[*bottom, *tower],
                        multitask=MultiTaskSpec(bottom=list(bottom), tower=list(tower), **kw))

    return {
        "separate": ArchSpec(embed_dim=dim, mlp=[*bottom, *tower]),
        "shared-bottom": mt(),
        "shared-bottom + GradNorm": mt(gradnorm=alpha),
        "MMoE": mt(backbone="mmoe", experts=experts),
        "MMoE + GradNorm": mt(backbone="mmoe", experts=experts, gradnorm=alpha),
    }


def run(args: argparse.Namespace) -> dict:
    tasks = args.tasks.split(",")
    data = f"movielens-100k?tasks={args.tasks}"
    out: dict = {"data": data, "tasks": tasks, "seeds": [], "runs": {m: [] for m in MODELS}}
    for k in range(args.seeds):
        seed = args.first_seed + k
        ds = load_dataset(data, seed=seed)
        config = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                             patience=args.patience, seed=seed, threads=args.threads,
                             progress=False)
        out["seeds"].append(seed)
        with shared_fits():
            for name, spec in specs(args.dim, args.bottom, args.tower, args.experts,
                                    args.alpha).items():
                o = fit_spec(ds, spec, config)
                weights = [round(float(w), 3) for w in o.model.task_weights]
                entry = {"seed": seed, "test": o.metrics["test"], "valid": o.metrics["valid"],
                         "params": o.params["total"], "seconds": round(o.seconds, 1),
                         "best_epoch": o.fit.best_epoch, "task_weights": weights}
                out["runs"][name].append(entry)
                t = o.metrics["test"]
                print(f"seed {seed} {name:>25}: " + "  ".join(
                    f"{task} {t[f'auc:{task}']:.4f}" for task in tasks)
                    + f"  weights {weights} ({o.seconds:.0f}s)", flush=True)
            t0 = time.perf_counter()
            ctx = SearchContext(dataset=ds, spec=ArchSpec(embed_dim=args.dim,
                                                          mlp=[*args.bottom, *args.tower]),
                                train=config, seed=seed,
                                options={"bottom": args.bottom, "tower": args.tower,
                                         "experts": "2," + str(args.experts)})
            stage = MultiTaskSearch().search(ctx)
            search_seconds = time.perf_counter() - t0
            o = fit_spec(ds, stage.spec, config)  # the chosen candidate's fit (shared)
            out["runs"]["searched (mtl)"].append(
                {"seed": seed, "test": o.metrics["test"], "valid": o.metrics["valid"],
                 "params": o.params["total"], "chosen": stage.extra["chosen"],
                 "scores": stage.scores, "seconds": round(search_seconds, 1)})
            t = o.metrics["test"]
            print(f"seed {seed} {'searched (mtl)':>25}: " + "  ".join(
                f"{task} {t[f'auc:{task}']:.4f}" for task in tasks)
                + f"  chose {stage.extra['chosen']} ({search_seconds:.0f}s search)", flush=True)
    return out


def table(result: dict) -> str:
    tasks, runs = result["tasks"], result["runs"]
    header = ["model", *(f"{t} test AUC" for t in tasks),
              *(f"{t} − separate (paired)" for t in tasks), "parameters", "seconds per fit"]
    rows = []
    ref = runs["separate"]
    for name in MODELS:
        items = runs[name]
        aucs = {t: [r["test"][f"auc:{t}"] for r in items] for t in tasks}
        base = {t: [r["test"][f"auc:{t}"] for r in ref] for t in tasks}
        rows.append([name, *(mean_std(aucs[t]) for t in tasks),
                     *("—" if name == "separate" else paired_difference(aucs[t], base[t])
                       for t in tasks),
                     f"{int(np.mean([r['params'] for r in items])):,}",
                     f"{np.mean([r['seconds'] for r in items]):.0f}"])
    return markdown_table(header, rows)


def merge(results: list[dict]) -> dict:
    """Several runs (e.g. one per seed, run side by side) as one result."""
    out = {"tasks": results[0]["tasks"], "seeds": [], "runs": {m: [] for m in MODELS},
           "seconds": max(r["seconds"] for r in results)}
    for r in results:
        out["seeds"] += r["seeds"]
        for m in MODELS:
            out["runs"][m] += r["runs"][m]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", default="like,love")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--first-seed", type=int, default=2026)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--patience", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=2048)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--dim", type=int, default=16)
    parser.add_argument("--bottom", type=lambda s: [int(v) for v in s.split(",")],
                        default=[64, 32])
    parser.add_argument("--tower", type=lambda s: [int(v) for v in s.split(",")],
                        default=[16])
    parser.add_argument("--experts", type=int, default=4)
    parser.add_argument("--alpha", type=float, default=1.5, help="GradNorm's asymmetry")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--out", default="runs/bench-multitask")
    parser.add_argument("--merge", nargs="*", default=None,
                        help="print the table of these runs' result.json files together "
                             "(one seed each, run side by side) instead of running")
    args = parser.parse_args()
    if args.merge:
        result = merge([json.loads(Path(p).read_text()) for p in args.merge])
    else:
        t0 = time.perf_counter()
        result = run(args)
        result["seconds"] = round(time.perf_counter() - t0, 1)
        result["args"] = vars(args)
        folder = Path(args.out)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "result.json").write_text(json.dumps(result, indent=1))
    text = table(result)
    print(machine_line())
    print(text)
    chosen = [r["chosen"] for r in result["runs"]["searched (mtl)"]]
    print(f"searched: {chosen}; whole run {result['seconds']:.0f}s")


if __name__ == "__main__":
    main()
