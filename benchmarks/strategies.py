"""Strategies compared on one space (``hparams`` over DeepFM) under the same budget.

For each dataset, strategy and seed: run the ``hparams`` search with the same trial cap and
the same per-trial estimation (subsample, epochs), retrain the chosen spec from scratch
with the shared ``fit_spec`` and evaluate it on test. Prints best validation AUC and test
AUC (mean ± std over seeds), trials and seconds per strategy, next to DeepFM at its default
settings trained with the same config (and, on synthetic, the Bayes-optimal AUC); writes a
plot of best-so-far validation AUC against trials and against seconds.

    python benchmarks/strategies.py --data synthetic movielens-100k --trials 8 --seeds 3
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from _common import machine_line, markdown_table, mean_std  # noqa: E402
from autodrs.data.dataset import load_dataset  # noqa: E402
from autodrs.experiment import fit_spec  # noqa: E402
from autodrs.models.backbones import backbone_spec  # noqa: E402
from autodrs.search.base import SearchContext, get_method  # noqa: E402
from autodrs.train.trainer import TrainConfig  # noqa: E402

STRATEGIES = ("random", "grid", "tpe", "evolution", "rl", "gradient")


def best_so_far(trials: list[dict]) -> tuple[list[float], list[float]]:
    """Running best validation AUC after each trial, and the cumulative trial seconds."""
    best, curve, clock, seconds = -np.inf, [], 0.0, []
    for t in trials:
        if t["state"] == "COMPLETE" and t["values"]:
            best = max(best, t["values"][0])
        clock += t["seconds"] or 0.0
        curve.append(best if np.isfinite(best) else np.nan)
        seconds.append(clock)
    return curve, seconds


def run(data: str, seeds: int, trials: int, subsample: float, trial_epochs: int,
        epochs: int, threads: int) -> tuple[list[list[object]], dict]:
    rows: list[list[object]] = []
    curves: dict[str, list[tuple[list[float], list[float]]]] = {s: [] for s in STRATEGIES}
    runs: dict[str, dict[str, list[float]]] = {
        s: {"valid": [], "test": [], "trials": [], "seconds": []} for s in STRATEGIES}
    baseline, bayes = [], []
    for k in range(seeds):
        seed = 2026 + k
        ds = load_dataset(data, seed=seed)
        config = TrainConfig(epochs=epochs, batch_size=1024, patience=2, seed=seed,
                             progress=False, threads=threads)
        base = fit_spec(ds, backbone_spec("deepfm", 16), config)
        baseline.append(base.metrics["test"]["auc"])
        if "truth" in ds.info:
            bayes.append(ds.info["truth"]["bayes_auc"])
        for strategy in STRATEGIES:
            ctx = SearchContext(ds, backbone_spec("deepfm", 16), config, seed=seed,
                                trials=trials, strategy=strategy,
                                options={"subsample": subsample, "epochs": trial_epochs})
            t0 = time.perf_counter()
            stage = get_method("hparams").search(ctx)
            seconds = time.perf_counter() - t0
            final = fit_spec(ds, stage.spec, config)
            valid = (max(t["values"][0] for t in stage.trials if t["values"])
                     if stage.trials else final.metrics["valid"]["auc"])
            runs[strategy]["valid"].append(valid)
            runs[strategy]["test"].append(final.metrics["test"]["auc"])
            runs[strategy]["trials"].append(len(stage.trials))
            runs[strategy]["seconds"].append(seconds)
            if stage.trials:
                curves[strategy].append(best_so_far(stage.trials))
            print(f"  {data} seed {seed} {strategy:>9}: best trial valid AUC {valid:.4f}, "
                  f"retrained test AUC {final.metrics['test']['auc']:.4f}, "
                  f"{len(stage.trials)} trials, {seconds:.1f}s", flush=True)
    for strategy in STRATEGIES:
        r = runs[strategy]
        rows.append([data, strategy, mean_std(r["valid"]), mean_std(r["test"]),
                     f"{np.mean(r['trials']):.0f}", f"{np.mean(r['seconds']):.1f}"])
    rows.append([data, "deepfm (default, no search)", "", mean_std(baseline), "", ""])
    if bayes:
        rows.append([data, "Bayes-optimal", "", mean_std(bayes), "", ""])
    return rows, curves


def plot(curves_by_data: dict[str, dict], path: Path) -> None:
    fig, axes = plt.subplots(len(curves_by_data), 2, figsize=(11, 4 * len(curves_by_data)),
                             squeeze=False)
    for row, (data, curves) in enumerate(curves_by_data.items()):
        for strategy, runs in curves.items():
            if not runs:
                continue
            n = min(len(c) for c, _ in runs)
            mean = np.nanmean([c[:n] for c, _ in runs], axis=0)
            secs = np.mean([s[:n] for _, s in runs], axis=0)
            axes[row][0].plot(range(1, n + 1), mean, marker="o", label=strategy)
            axes[row][1].plot(secs, mean, marker="o", label=strategy)
        axes[row][0].set(title=f"{data}: best validation AUC by trial", xlabel="trial",
                         ylabel="best valid AUC")
        axes[row][1].set(title=f"{data}: best validation AUC by trial seconds",
                         xlabel="seconds (summed trial time)", ylabel="best valid AUC")
        axes[row][0].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", nargs="+", default=["synthetic", "movielens-100k"])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--trials", type=int, default=8)
    parser.add_argument("--subsample", type=float, default=0.5)
    parser.add_argument("--trial-epochs", type=int, default=1)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--plot", type=Path, default=Path("runs/strategies.png"))
    args = parser.parse_args()
    print(machine_line())
    print(f"space: hparams over DeepFM; {args.trials} trials per search, each on "
          f"{args.subsample:g} of train for {args.trial_epochs} epoch(s); retrain and baseline "
          f"{args.epochs} epochs; gradient trains one supernet for {args.trial_epochs} "
          f"epoch(s) instead of trials; {args.seeds} seeds")
    rows: list[list[object]] = []
    curves = {}
    for data in args.data:
        data_rows, curves[data] = run(data, args.seeds, args.trials, args.subsample,
                                      args.trial_epochs, args.epochs, args.threads)
        rows += data_rows
    print(markdown_table(["data", "strategy", "best valid AUC (trial; gradient: retrained)",
                          "retrained test AUC",
                          "trials", "search s"], rows))
    args.plot.parent.mkdir(parents=True, exist_ok=True)
    plot(curves, args.plot)
    print(f"plot -> {args.plot}")


if __name__ == "__main__":
    main()
