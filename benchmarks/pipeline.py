"""The default search pipeline end to end, against hand-crafted baselines, over seeds.

Each seed runs exactly what ``make run`` runs: ``autodrs search --data D --budget B`` (the
default pipeline: feature selection, embedding dims, interactions, a retrain from scratch,
then the default baselines trained with the same config), invoked through the CLI's own
command, and reads the run folder's ``result.json``.

- movielens-100k: test AUC, embedding parameters and seconds of the searched model and of
  every baseline (mean ± spread), and whether the searched model's mean test AUC is at least
  the best baseline's with fewer embedding parameters (issue 8's target).
- synthetic (planted structure): the best full backbone (the baseline with the best mean
  test AUC), the oracle-structure model (only the planted fields and pairs, the same trainer)
  and the pipeline; gap closure = (pipeline AUC - best backbone AUC) / (oracle AUC - best
  backbone AUC), per seed and averaged (target 0.8). The oracle (FM over five pairs and a
  first-order term) converges slowly: under the CLI's 10-epoch cap it is still improving, and
  a capped oracle makes the closure look better than it is. The verdict is then withheld;
  ``--epochs 40 --patience 4`` trains every fit (pipeline stages, retrain, baselines, oracle)
  to convergence.
- When the pipeline's ``optim`` stage changed the learning rate (or batch size) the searched
  model trains at, every baseline (and on synthetic the oracle) is also retrained at the
  searched setting, shown as "NAME, searched training": the issue's verdict compares with
  the baselines as the command trains them, and a second verdict with the baselines at the
  searched training, so the gain of the architecture alone is printed beside it. On
  synthetic that second closure gets a verdict when the oracle at the searched training has
  converged within the epoch cap (a quicker learning rate can get it there when the command's
  does not).

    python benchmarks/pipeline.py [--datasets movielens-100k,synthetic] [--seeds 3]
                                  [--first-seed 2026] [--budget 5m]
                                  [--epochs N] [--patience N]
                                  [--out runs/bench-pipeline] [--reuse]
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
from typer.testing import CliRunner

from _common import machine_line, markdown_table, mean_std
from autodrs.cli import app
from autodrs.data.dataset import load_dataset
from autodrs.data.synthetic import oracle_spec
from autodrs.experiment import fit_spec
from autodrs.models.backbones import backbone_spec
from autodrs.pipeline import DEFAULT_BASELINES
from autodrs.search.base import parse_budget
from autodrs.spec import TrainingSpec
from autodrs.train.trainer import TrainConfig

GAP_TARGET = 0.8


def load() -> str:
    return "load average {:.2f} {:.2f} {:.2f}".format(*os.getloadavg())


def flags(training: dict[str, int]) -> list[str]:
    """``{"epochs": 40}`` as command-line flags, ``["--epochs", "40"]``."""
    return [x for k, v in training.items() for x in (f"--{k}", str(v))]


def run_pipeline(data: str, seed: int, budget: str, out: Path, reuse: bool = False,
                 training: dict[str, int] | None = None) -> tuple[dict[str, Any], float]:
    """``autodrs search --data D --budget B --seed S --out DIR`` (plus a flag per
    ``training`` setting, e.g. ``{"epochs": 40}``: ``--epochs 40``) in this process; returns
    the run's ``result.json`` and the command's wall time. With ``reuse``, a finished run
    already in ``DIR`` is read instead (an interrupted benchmark goes on where it stopped);
    its wall time is then the sum of the search, retrain and baseline times it recorded."""
    training = training or {}
    done = out / "result.json"
    if reuse and done.exists():
        result = json.loads(done.read_text())
        same_training = all(result["config"].get(k) == v for k, v in training.items())
        if (result["seed"] == seed and same_training
                and result["cost"]["budget_seconds"] == parse_budget(budget)):
            cost = result["cost"]
            return result, (cost["search_seconds"] + cost["retrain_seconds"]
                            + sum(b["seconds"] for b in result["baselines"].values()))
    t0 = time.perf_counter()
    res = CliRunner().invoke(app, ["search", "--data", data, "--budget", budget,
                                   "--seed", str(seed), "--out", str(out), "--no-progress",
                                   "--overwrite",
                                   *flags(training)],
                             catch_exceptions=False)
    wall = time.perf_counter() - t0
    if res.exit_code != 0:
        raise SystemExit(f"autodrs search failed on {data} seed {seed}:\n{res.output}")
    return json.loads((out / "result.json").read_text()), wall


def rows_of(result: dict[str, Any], wall: float) -> dict[str, tuple[float, int, float]]:
    """name -> (test AUC, embedding parameters, seconds) for the searched model (seconds:
    search + retrain; the command's wall time is printed beside) and every baseline."""
    cost = result["cost"]
    rows = {"pipeline": (result["metrics"]["test"]["auc"], result["params"]["embedding"],
                         cost["search_seconds"] + cost["retrain_seconds"])}
    for name, b in result["baselines"].items():
        rows[name] = (b["test"]["auc"], b["params"]["embedding"], b["seconds"])
    return rows


def table(rows: dict[str, list[tuple[float, int, float]]]) -> str:
    out = []
    for name, vals in sorted(rows.items(), key=lambda kv: -np.mean([v[0] for v in kv[1]])):
        out.append([name, mean_std([v[0] for v in vals]),
                    f"{np.mean([v[1] for v in vals]):,.0f}",
                    f"{np.mean([v[2] for v in vals]):.1f}"])
    return markdown_table(["model", "test AUC", "embedding params", "seconds"], out)


SAME = ", searched training"  # suffix of the rows retrained at the searched model's setting


def best_baseline(rows: dict[str, list[tuple[float, int, float]]], same: bool = False) -> str:
    """The baseline with the best mean test AUC: as the command trained them, or (``same``)
    retrained at the searched model's training setting."""
    names = [n for n in rows if n not in ("pipeline", "oracle", "oracle" + SAME)
             and n.endswith(SAME) == same]
    return max(names, key=lambda n: np.mean([v[0] for v in rows[n]]))


def searched_training(result: dict[str, Any]) -> TrainingSpec | None:
    """The learning rate and batch size the searched spec trains at, when a stage set them."""
    t = TrainingSpec(**result["spec"].get("training", {}))
    return t if (t.lr, t.batch_size) != (None, None) else None


def same_training_rows(data: str, seed: int, result: dict[str, Any], overrides: dict[str, int],
                       capped: list[str] | None = None) -> dict[str, tuple[float, int, float]]:
    """Every baseline (and, with a planted truth, the oracle) retrained at the searched
    model's training setting, on the command's split and config; {} when the searched model
    trains as the command does. The names of fits the epoch cap stopped while they were still
    improving are appended to ``capped``."""
    training = searched_training(result)
    if training is None:
        return {}
    ds = load_dataset(data, seed=seed)
    config = TrainConfig(seed=seed, progress=False, **overrides)
    specs = {n: backbone_spec(n) for n in result["baselines"]}
    truth = result["data"].get("truth")
    if truth is not None:
        specs["oracle"] = oracle_spec(truth)
    out = {}
    for name, spec in specs.items():
        t0 = time.perf_counter()
        fit = fit_spec(ds, spec.copy(training=training), config)
        out[name + SAME] = (fit.metrics["test"]["auc"], fit.params["embedding"],
                            time.perf_counter() - t0)
        if capped is not None and fit.fit.still_improving:
            capped.append(name)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", default="movielens-100k,synthetic")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--budget", default="5m")
    parser.add_argument("--first-seed", type=int, default=2026)
    parser.add_argument("--out", type=Path, default=Path("runs/bench-pipeline"))
    parser.add_argument("--epochs", type=int, default=None,
                        help="training epochs of every fit (the CLI's default when not given)")
    parser.add_argument("--patience", type=int, default=None,
                        help="early-stopping patience of every fit (the CLI's default)")
    parser.add_argument("--reuse", action="store_true",
                        help="read the runs already finished in --out instead of redoing them")
    args = parser.parse_args()
    # training settings given here apply to every fit: the command's and the oracle's
    overrides = {k: getattr(args, k) for k in ("epochs", "patience")
                 if getattr(args, k) is not None}
    print(machine_line())
    print(f"{load()} at start; baselines: {DEFAULT_BASELINES}", flush=True)
    for data in args.datasets.split(","):
        rows: dict[str, list[tuple[float, int, float]]] = {}
        walls, closures = [], []
        capped: list[int] = []  # seeds whose oracle the epoch cap stopped while improving
        capped_same: list[int] = []  # ... and whose oracle at the searched training
        for k in range(args.seeds):
            seed = args.first_seed + k
            result, wall = run_pipeline(data, seed, args.budget,
                                        args.out / f"{data.replace('?', '_')}-{seed}",
                                        args.reuse, overrides)
            walls.append(wall)
            for name, row in rows_of(result, wall).items():
                rows.setdefault(name, []).append(row)
            stages = ", ".join(f"{s['method']} {s['seconds']:.0f}s" for s in result["stages"])
            seen = ", ".join(f"{n} {r[-1][0]:.4f} ({r[-1][1]:,})" for n, r in rows.items()
                             if n != "oracle" and not n.endswith(SAME))  # trained below
            fields = result["spec"]["fields"]
            print(f"  {data} seed {seed}: start {result['model']}; test AUC (embedding params) "
                  f"{seen}; fields {len(fields) if fields else 'all'}, stages [{stages}], retrain "
                  f"{result['cost']['retrain_seconds']:.0f}s, command {wall:.0f}s ({load()})",
                  flush=True)
            truth = result["data"].get("truth")
            if truth is not None:
                # the oracle on the same split and training config as the command's
                ds = load_dataset(data, seed=seed)
                config = TrainConfig(seed=seed, progress=False, **overrides)
                t0 = time.perf_counter()
                oracle = fit_spec(ds, oracle_spec(truth), config)
                rows.setdefault("oracle", []).append(
                    (oracle.metrics["test"]["auc"], oracle.params["embedding"],
                     time.perf_counter() - t0))
                if oracle.fit.still_improving:
                    capped.append(seed)
                print(f"  {data} seed {seed}: oracle AUC {oracle.metrics['test']['auc']:.4f} "
                      f"(Bayes {truth['bayes_auc']:.4f}; best epoch {oracle.fit.best_epoch}"
                      f"{', still improving at the epoch cap' if oracle.fit.still_improving else ''})",
                      flush=True)
            still: list[str] = []
            same = same_training_rows(data, seed, result, overrides, still)
            for name, row in same.items():
                rows.setdefault(name, []).append(row)
            if "oracle" in still:
                capped_same.append(seed)
            if same:
                print(f"  {data} seed {seed}: at the searched training "
                      f"({searched_training(result)}): "
                      + ", ".join(f"{n.removesuffix(SAME)} {r[0]:.4f}" for n, r in same.items())
                      + (f"; still improving at the epoch cap: {', '.join(still)}"
                         if still else ""), flush=True)
        setting = " ".join(flags(overrides)) or "the CLI's defaults"
        print(f"\n## {data} ({args.seeds} seeds, budget {args.budget}, {setting})\n")
        print(table(rows))
        print(f"\ncommand wall time (search + retrain + baselines): mean {np.mean(walls):.0f} s, "
              f"max {max(walls):.0f} s ({load()} at the end)")
        best = best_baseline(rows)
        auc = {n: float(np.mean([v[0] for v in vals])) for n, vals in rows.items()}
        emb = {n: float(np.mean([v[1] for v in vals])) for n, vals in rows.items()}
        same = len(rows.get(best + SAME, [])) == args.seeds  # retrained on every seed
        if "oracle" in rows:
            for (p, *_), (b, *_), (o, *_) in zip(rows["pipeline"], rows[best], rows["oracle"],
                                                 strict=True):
                closures.append((p - b) / (o - b) if o != b else float("nan"))
            if same:
                best_same = best_baseline(rows, same=True)
                gaps = [(p - b) / (o - b) if o != b else float("nan") for (p, *_), (b, *_), (o, *_)
                        in zip(rows["pipeline"], rows[best_same], rows["oracle" + SAME],
                               strict=True)]
                judged = (f"; target {GAP_TARGET}: "
                          f"{'met' if np.mean(gaps) >= GAP_TARGET else 'missed'}"
                          if not capped_same else
                          f" (not judged: that oracle was still improving at the epoch cap on "
                          f"seeds {capped_same})")
                print(f"at the searched training: best full backbone {best_same} "
                      f"{auc[best_same]:.4f}, oracle {auc['oracle' + SAME]:.4f}; gap closure "
                      f"per seed {', '.join(f'{c:.3f}' for c in gaps)}, mean "
                      f"{np.mean(gaps):.3f}{judged}")
            print(f"best full backbone {best}: {auc[best]:.4f}; oracle {auc['oracle']:.4f}; "
                  f"pipeline {auc['pipeline']:.4f}")
            met = "met" if np.mean(closures) >= GAP_TARGET else "missed"
            if capped:
                # a capped oracle understates what the structure reaches, so the closure
                # overstates the pipeline's: no verdict
                met = (f"not judged: the oracle was still improving at the epoch cap on "
                       f"seeds {capped}; rerun with more --epochs")
            print(f"gap closure per seed: {', '.join(f'{c:.3f}' for c in closures)}; "
                  f"mean {np.mean(closures):.3f} (of the means "
                  f"{(auc['pipeline'] - auc[best]) / (auc['oracle'] - auc[best]):.3f}); "
                  f"target {GAP_TARGET}: {met}")
        else:
            ok = auc["pipeline"] >= auc[best] and emb["pipeline"] < emb[best]
            verdict = ("target met: at least the best baseline's AUC with fewer embedding "
                       "parameters" if ok else "target missed")
            print(f"searched model: mean test AUC {auc['pipeline']:.4f} vs best baseline {best} "
                  f"{auc[best]:.4f} ({auc['pipeline'] - auc[best]:+.4f}), embedding params "
                  f"{emb['pipeline']:,.0f} vs {emb[best]:,.0f}: {verdict}")
            if same:
                b2 = best_baseline(rows, same=True)
                print(f"against the baselines at the searched training: best {b2} "
                      f"{auc[b2]:.4f} ({auc['pipeline'] - auc[b2]:+.4f}), embedding params "
                      f"{emb[b2]:,.0f}")
        print(flush=True)


if __name__ == "__main__":
    main()
