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
  first-order term) converges slowly: capped while still improving (as under the CLI's old
  10-epoch cap), it makes the closure look better than it is, and the verdict is withheld.
- Every baseline is reported as the command trains it at ``--lr`` ("NAME") and after the
  training search the searched model gets ("NAME (tuned)": the pipeline's ``optim`` stage,
  same candidates, on each baseline; ``result.json``'s ``tuned_baselines``). The
  architecture stages' gain is the searched model's test AUC minus that of the best tuned
  backbone (best mean test AUC over the seeds), paired seed by seed, with its standard
  error, and also minus the tuned backbone the search started from (what the stages after
  ``optim`` added to it). On synthetic the oracle gets the same tuning, and the gap
  closure is judged against the tuned best backbone and the tuned oracle.
- Fits the epoch cap ended while they were still improving are listed (``result.json``'s
  ``still_improving``); a verdict that rests on one is withheld.

    python benchmarks/pipeline.py [--datasets movielens-100k,synthetic] [--seeds 3]
                                  [--first-seed 2026] [--budget 5m|none]
                                  [--epochs N] [--patience N] [--threads N]
                                  [--baselines deepfm,ipnn]
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

from _common import machine_line, markdown_table, mean_std, paired_difference
from autodrs.cli import app
from autodrs.data.dataset import load_dataset
from autodrs.data.synthetic import oracle_spec
from autodrs.experiment import fit_spec, shared_fits
from autodrs.pipeline import DEFAULT_BASELINES, tune_baseline
from autodrs.search.base import parse_budget
from autodrs.train.trainer import TrainConfig

GAP_TARGET = 0.8
TUNED = " (tuned)"  # suffix of a backbone after the searched model's training search
# name -> one (test AUC, embedding parameters, seconds) per seed
Rows = dict[str, list[tuple[float, int, float]]]


def load() -> str:
    return "load average {:.2f} {:.2f} {:.2f}".format(*os.getloadavg())


def flags(training: dict[str, Any]) -> list[str]:
    """``{"epochs": 40}`` as command-line flags, ``["--epochs", "40"]``."""
    return [x for k, v in training.items() for x in (f"--{k}", str(v))]


def run_pipeline(data: str, seed: int, budget: str | None, out: Path, reuse: bool = False,
                 training: dict[str, Any] | None = None) -> tuple[dict[str, Any], float]:
    """``autodrs search --data D [--budget B] --seed S --out DIR`` (plus a flag per
    ``training`` setting, e.g. ``{"epochs": 40}``: ``--epochs 40``) in this process; returns
    the run's ``result.json`` and the command's wall time. With ``reuse``, a finished run
    already in ``DIR`` is read instead (an interrupted benchmark goes on where it stopped);
    its wall time is then its recorded total."""
    training = training or {}
    done = out / "result.json"
    if reuse and done.exists():
        result = json.loads(done.read_text())
        # the training settings must match; the baselines may differ (a cheaper run of
        # some seeds with fewer): only the backbones every seed has are ranked
        same_training = all(result["settings"].get(k) == v for k, v in training.items()
                            if k != "baselines")
        if (result["seed"] == seed and same_training and "tuned_baselines" in result
                and result["cost"]["budget_seconds"] == parse_budget(budget)):
            return result, result["cost"]["total_seconds"]
    t0 = time.perf_counter()
    res = CliRunner().invoke(app, ["search", "--data", data, "--seed", str(seed),
                                   *(["--budget", budget] if budget else []),
                                   "--out", str(out), "--no-progress", "--overwrite",
                                   *flags(training)],
                             catch_exceptions=False)
    wall = time.perf_counter() - t0
    if res.exit_code != 0:
        raise SystemExit(f"autodrs search failed on {data} seed {seed}:\n{res.output}")
    return json.loads((out / "result.json").read_text()), wall


def rows_of(result: dict[str, Any]) -> dict[str, tuple[float, int, float]]:
    """name -> (test AUC, embedding parameters, seconds) for the searched model (seconds:
    search + retrain), every baseline (its fit) and every tuned baseline (its tuning)."""
    cost = result["cost"]
    rows = {"pipeline": (result["metrics"]["test"]["auc"], result["params"]["embedding"],
                         cost["search_seconds"] + cost["retrain_seconds"])}
    for name, b in result["baselines"].items():
        rows[name] = (b["test"]["auc"], b["params"]["embedding"], b["seconds"])
    for name, b in result["baselines"].items():
        # a baseline the budget left untuned stands in with its fit at --lr (as it does for
        # the search's choice of start), so every name has one row per seed
        t = result["tuned_baselines"].get(name, b)
        rows[name + TUNED] = (t["test"]["auc"], t["params"]["embedding"], t["seconds"])
    return rows


def table(rows: Rows) -> str:
    out = []
    for name, vals in sorted(rows.items(), key=lambda kv: -np.mean([v[0] for v in kv[1]])):
        out.append([name, mean_std([v[0] for v in vals]),
                    f"{np.mean([v[1] for v in vals]):,.0f}",
                    f"{np.mean([v[2] for v in vals]):.1f}", len(vals)])
    return markdown_table(["model", "test AUC", "embedding params", "seconds", "seeds"], out)


def best_backbone(rows: Rows, tuned: bool) -> str:
    """The backbone with the best mean test AUC, untuned or ``tuned``."""
    seeds = len(rows["pipeline"])  # runs with other --baselines may have added others
    names = [n for n in rows if n != "pipeline" and not n.startswith("oracle")
             and n.endswith(TUNED) == tuned and len(rows[n]) == seeds]
    return max(names, key=lambda n: np.mean([v[0] for v in rows[n]]))


def aucs(rows: Rows, name: str) -> list[float]:
    return [v[0] for v in rows[name]]


def tuned_oracle(data: str, seed: int, truth: dict[str, Any],
                 result: dict[str, Any]) -> tuple[Any, Any]:
    """The oracle structure trained as the command trains a baseline (``--lr``) and tuned
    as its baselines are (the optim stage, the run's options), on the command's split."""
    ds = load_dataset(data, seed=seed)
    settings = result["settings"]
    config = TrainConfig(seed=seed, progress=False, epochs=settings["epochs"],
                         patience=settings["patience"], lr=settings["lr"],
                         batch_size=settings["batch_size"], threads=settings["threads"])
    options = {**(result["settings"].get("options") or {}).get("optim", {})}
    with shared_fits():  # the tuning's first candidate is the untuned fit
        plain = fit_spec(ds, oracle_spec(truth), config)
        tuned = tune_baseline(ds, ds, oracle_spec(truth), config, options)
    return plain, tuned.outcome


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", default="movielens-100k,synthetic")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--budget", default="5m", help="the command's --budget, or none")
    parser.add_argument("--first-seed", type=int, default=2026)
    parser.add_argument("--out", type=Path, default=Path("runs/bench-pipeline"))
    parser.add_argument("--epochs", type=int, default=None,
                        help="training epochs of every fit (the CLI's default when not given)")
    parser.add_argument("--patience", type=int, default=None,
                        help="early-stopping patience of every fit (the CLI's default)")
    parser.add_argument("--threads", type=int, default=None,
                        help="CPU threads of every fit (the CLI's default: all)")
    parser.add_argument("--baselines", default=None,
                        help="the command's --baselines (default: the pipeline's five)")
    parser.add_argument("--reuse", action="store_true",
                        help="read the runs already finished in --out instead of redoing them")
    args = parser.parse_args()
    budget = None if args.budget.lower() == "none" else args.budget
    # training settings given here apply to every fit: the command's and the oracle's
    overrides = {k: getattr(args, k) for k in ("epochs", "patience", "threads")
                 if getattr(args, k) is not None}
    command = overrides | ({"baselines": args.baselines} if args.baselines else {})
    print(machine_line())
    print(f"{load()} at start; baselines: {DEFAULT_BASELINES}", flush=True)
    for data in args.datasets.split(","):
        rows: Rows = {}
        walls: list[float] = []
        starts: list[str] = []  # the backbone each seed's search started from
        capped: dict[int, list[str]] = {}  # seed -> fits still improving at the epoch cap
        for k in range(args.seeds):
            seed = args.first_seed + k
            result, wall = run_pipeline(data, seed, budget,
                                        args.out / f"{data.replace('?', '_')}-{seed}",
                                        args.reuse, command)
            walls.append(wall)
            starts.append(result["start"]["model"])
            for name, row in rows_of(result).items():
                rows.setdefault(name, []).append(row)
            truth = result["data"].get("truth")
            if truth is not None:
                plain, tuned = tuned_oracle(data, seed, truth, result)
                for name, fit in (("oracle", plain), ("oracle" + TUNED, tuned)):
                    rows.setdefault(name, []).append(
                        (fit.metrics["test"]["auc"], fit.params["embedding"], fit.seconds))
                    if fit.fit.still_improving:
                        result["still_improving"].append(name)
            capped[seed] = list(result["still_improving"])
            stages = ", ".join(f"{s['method']} {s['seconds']:.0f}s" for s in result["stages"])
            seen = ", ".join(f"{n} {r[0]:.4f}" for n, r in rows_of(result).items())
            tuned_lrs = ", ".join(f"{n} {b['lr']:g}" for n, b in
                                  result["tuned_baselines"].items())
            untuned = result["baseline_tuning"].get("not_tuned") or {}
            if untuned:
                tuned_lrs += f" (not tuned: {', '.join(untuned)})"
            print(f"  {data} seed {seed}: start {result['model']}, searched lr "
                  f"{result['config']['lr']:g}; tuned lr: {tuned_lrs}; test AUC {seen}; "
                  f"stages [{stages}]; still improving at the epoch cap: "
                  f"{', '.join(capped[seed]) or 'none'}; command {wall:.0f}s ({load()})",
                  flush=True)
        setting = " ".join(flags(overrides)) or "the CLI's defaults"
        print(f"\n## {data} ({args.seeds} seeds, budget {budget or 'none'}, {setting})\n")
        print(table(rows))
        print(f"\ncommand wall time: mean {np.mean(walls):.0f} s, max {max(walls):.0f} s "
              f"({load()} at the end)")
        still = {s: names for s, names in capped.items() if names}
        print("still improving at the epoch cap: "
              + ("; ".join(f"seed {s}: {', '.join(n)}" for s, n in still.items())
                 if still else "none"))
        best, best_tuned = best_backbone(rows, False), best_backbone(rows, True)
        mean = {n: float(np.mean(aucs(rows, n))) for n in rows}
        emb = {n: float(np.mean([v[1] for v in vals])) for n, vals in rows.items()}
        gain = np.array(aucs(rows, "pipeline")) - np.array(aucs(rows, best_tuned))
        print(f"best backbone untuned: {best} {mean[best]:.4f}; tuned: {best_tuned} "
              f"{mean[best_tuned]:.4f}")
        print(f"architecture stages' gain over the tuned best backbone ({best_tuned}), paired "
              f"over seeds: {paired_difference(aucs(rows, 'pipeline'), aucs(rows, best_tuned))}"
              f" (per seed {', '.join(f'{d:+.4f}' for d in gain)}; above on "
              f"{int((gain > 0).sum())}/{len(gain)}); embedding params "
              f"{emb['pipeline']:,.0f} vs {emb[best_tuned]:,.0f}")
        start_tuned = [rows[s + TUNED][k][0] for k, s in enumerate(starts)]
        print(f"over the tuned backbone each search started from ({', '.join(starts)}): "
              f"{paired_difference(aucs(rows, 'pipeline'), start_tuned)}")
        print(f"over the best untuned backbone ({best}): "
              f"{paired_difference(aucs(rows, 'pipeline'), aucs(rows, best))}")
        if "oracle" + TUNED in rows:
            o, b = np.array(aucs(rows, "oracle" + TUNED)), np.array(aucs(rows, best_tuned))
            p = np.array(aucs(rows, "pipeline"))
            closure = np.where(o != b, (p - b) / np.where(o != b, o - b, 1.0), np.nan)
            oracle_capped = [s for s, n in capped.items() if "oracle" + TUNED in n]
            met = ("met" if np.nanmean(closure) >= GAP_TARGET else "missed")
            if oracle_capped:  # a capped oracle understates the structure: no verdict
                met = (f"not judged: the tuned oracle was still improving at the epoch cap "
                       f"on seeds {oracle_capped}")
            print(f"gap closure against the tuned best backbone and the tuned oracle "
                  f"({mean['oracle' + TUNED]:.4f}): per seed "
                  f"{', '.join(f'{c:.3f}' for c in closure)}, mean {np.nanmean(closure):.3f}; "
                  f"target {GAP_TARGET}: {met}")
        print(flush=True)


if __name__ == "__main__":
    main()
