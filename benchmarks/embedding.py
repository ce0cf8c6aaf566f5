"""Embedding search: stored size against accuracy, every method next to the full-dim model.

For each dataset and seed: train DeepFM at dim 16 (the full-dim baseline) and at each of
``--uniform-dims`` (every field at one small dim: what a saving costs without a search),
then run each embedding method from that spec and retrain what it found with the shared
``fit_spec`` and the same training config (PEP's retrain starts from its step-0 weights times
the mask, the others from scratch). Prints, per method, embedding parameters, stored embedding bytes
(tensors as saved), test AUC (mean ± std over seeds) and search plus retrain seconds; on
``synthetic`` also the Bayes-optimal AUC and the dims AutoDim and DNIS give the planted
relevant high-cardinality fields against the noise fields; and, on ``num0`` (synthetic's
non-monotone numerical field), AutoDis against normalised-linear and equal-frequency
bucketising, in DeepFM and in the oracle structure (num0 through the first-order term only);
OptEmbed's kept-row share of the same fields.
``--methods ''`` runs only the baseline and those comparisons. Writes a plot of test AUC against bytes and the raw figures as JSON.

    python benchmarks/embedding.py --data movielens-100k synthetic --seeds 3

``--rows N`` runs the pruning methods where pruning matters instead: a Criteo-layout file
of N rows (``autodrs make-synthetic --format criteo``: heavy-tailed vocabularies, over a
million distinct values in the largest fields at 10M rows, planted signal), its own
vocabulary per value however large (no hashing), DeepFM-16 against each method's retrained
model per seed, with embedding parameters (kept weights), stored bytes, the paired test
AUC difference and the model's scoring latency (batches of 1 and 4,096 test rows, the
models alternating, median of repeats).

    python benchmarks/embedding.py --rows 1000000 --methods pep,optembed --seeds 3

Every PEP level reached is retrained too (``pep@<level>``). ``--count-masks 20`` adds
DeepFM-16 with every value seen fewer than 20 times in training pruned (no search: the
reference a pruning search has to beat); ``--scale-options`` overrides a method's settings;
``--min-count 10`` gives every model the papers' Criteo preprocessing (rarer values share
their field's out-of-vocabulary id) and ``--lazy`` the lazy Adam on the tables. Runs of one
seed each, side by side, print as one table with ``--merge runs/.../embedding-*.json``.

    python benchmarks/embedding.py --rows 1000000 --min-count 10 --lazy --epochs 4 \
        --scale-options '{"pep": {"threshold": "field_dim"}}' --first-seed 2027 --seeds 1
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
import torch

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from _common import machine_line, markdown_table, mean_std, paired_difference  # noqa: E402
from autodrs.data.criteo_gen import write_layout  # noqa: E402
from autodrs.data.dataset import Dataset, load_dataset  # noqa: E402
from autodrs.data.synthetic import oracle_spec  # noqa: E402
from autodrs.experiment import fit_spec  # noqa: E402
from autodrs.models.backbones import backbone_spec  # noqa: E402
from autodrs.models.builder import count_bytes  # noqa: E402
from autodrs.nn.pruned import encode_mask  # noqa: E402
from autodrs.search.base import SearchContext, get_method  # noqa: E402
from autodrs.train.trainer import TrainConfig  # noqa: E402

METHODS = ("autodim", "dnis", "pep", "autoemb", "nis", "rule", "optembed", "amtl", "ant",
           "esapn")
RELEVANT_HIGH = ("r0", "r1", "r2")
NOISE = ("n0", "n1", "n2", "n3")


def options_for(method: str, search_epochs: int, trial_epochs: int,
                baseline_bytes: int, pep_threshold: str = "feature_dim") -> dict[str, Any]:
    """Per-method settings of this benchmark (everything else is the method's default)."""
    return {
        "autodim": {"search_epochs": search_epochs},
        "dnis": {"search_epochs": search_epochs},
        "autoemb": {"search_epochs": search_epochs},
        # PEP's target: 90% fewer embedding parameters than DeepFM-16; PEP prunes the
        # first-order weights with the latent tables, so about 92% of their entries go
        # (the search stops once its last level is reached; the cap is for small data)
        "pep": {"sparsity": 0.92, "levels": "0.9,0.92,0.95", "threshold_decay": 5e-5,
                "search_epochs": 10 * search_epochs, "threshold": pep_threshold},
        "nis": {"epochs": trial_epochs},
        "rule": {"epochs": trial_epochs, "memory_budget": baseline_bytes // 2},
        "optembed": {"search_epochs": search_epochs},
        "amtl": {"search_epochs": search_epochs},
        "ant": {"search_epochs": search_epochs},
        # ESAPN reads the training split once, as a stream (its own default settings)
    }.get(method, {})


def run_dataset(data: str, seeds: int, epochs: int, search_epochs: int, trials: int,
                trial_epochs: int, methods: tuple[str, ...], threads: int,
                uniform_dims: tuple[int, ...] = (),
                pep_threshold: str = "feature_dim") -> dict[str, Any]:
    uniform = [f"uniform-d{d}" for d in uniform_dims]
    runs: dict[str, list[dict[str, Any]]] = {m: [] for m in ("full-dim", *uniform, *methods)}
    truth: dict[str, list[float]] = {}
    encoders: dict[str, list[float]] = {}
    bayes: list[float] = []
    for k in range(seeds):
        seed = 2026 + k
        ds = load_dataset(data, seed=seed)
        config = TrainConfig(epochs=epochs, batch_size=1024, patience=2, seed=seed,
                             progress=False, threads=threads)
        base_spec = backbone_spec("deepfm", 16)
        base = fit_spec(ds, base_spec, config)
        base_bytes = count_bytes(base.model)["embedding"]
        runs["full-dim"].append(record(base, 0.0, None))
        report(data, seed, "full-dim", runs["full-dim"][-1])
        # what a saving costs without a search: every field at one small dim
        for dim, name in zip(uniform_dims, uniform, strict=True):
            runs[name].append(record(fit_spec(ds, backbone_spec("deepfm", dim), config),
                                     0.0, None))
            report(data, seed, name, runs[name][-1])
        if "truth" in ds.info:
            bayes.append(ds.info["truth"]["bayes_auc"])
            compare_encoders(ds, base_spec, config, encoders)
        for method in methods:
            ctx = SearchContext(ds, base_spec, config, seed=seed, trials=trials,
                                options=options_for(method, search_epochs, trial_epochs,
                                                    base_bytes, pep_threshold))
            t0 = time.perf_counter()
            searcher = get_method(method)
            stage = searcher.search(ctx)
            search = time.perf_counter() - t0
            final = fit_spec(ds, stage.spec, config)
            runs[method].append(record(final, search, stage.dims))
            runs[method][-1]["stage_bytes"] = stage.bytes
            report(data, seed, method, runs[method][-1])
            # PEP: every sparsity level of the same search, each retrained the same way
            for level, spec in getattr(searcher, "level_specs", {}).items():
                if level == stage.extra.get("target"):
                    continue
                name = f"pep@{level}"
                runs.setdefault(name, []).append(record(fit_spec(ds, spec, config), search,
                                                        None))
                report(data, seed, name, runs[name][-1])
            if "truth" in ds.info and method in ("autodim", "dnis", "optembed") and stage.dims:
                truth.setdefault(f"{method}: relevant r0-r2", []).append(
                    float(np.mean([stage.dims[f] for f in RELEVANT_HIGH])))
                truth.setdefault(f"{method}: noise n0-n3", []).append(
                    float(np.mean([stage.dims[f] for f in NOISE])))
            if method == "esapn":  # AUC per block of the stream, and the fixed-dim model's
                runs[method][-1]["stream"] = {k: stage.extra[k] for k in (
                    "mean_block_auc", "mean_block_fixed_auc", "next_block", "stream")}
                print(f"    esapn stream: mean block AUC {stage.extra['mean_block_auc']}, "
                      f"fixed-dim {stage.extra['mean_block_fixed_auc']}; next block "
                      f"{stage.extra['next_block']}", flush=True)
            # AMTL / ESAPN: each value's dim weighted by its count; ANT: share of values
            # with a non-zero code
            for key in ("occurrence_weighted_dim", "coded_share"):
                if "truth" in ds.info and key in stage.extra and method in (
                        "amtl", "ant", "esapn"):
                    per_field = stage.extra[key]
                    truth.setdefault(f"{method}: {key}, relevant r0-r2", []).append(
                        float(np.mean([per_field[f] for f in RELEVANT_HIGH])))
                    truth.setdefault(f"{method}: {key}, noise n0-n3", []).append(
                        float(np.mean([per_field[f] for f in NOISE])))
            if "truth" in ds.info and "kept_rows" in stage.extra:
                kept = stage.extra["kept_rows"]
                truth.setdefault(f"{method}: kept rows, relevant r0-r2", []).append(
                    float(np.mean([kept[f] for f in RELEVANT_HIGH])))
                truth.setdefault(f"{method}: kept rows, noise n0-n3", []).append(
                    float(np.mean([kept[f] for f in NOISE])))
    return {"runs": runs, "truth": truth, "encoders": encoders, "bayes": bayes}


SCALE_OPTIONS: dict[str, dict[str, Any]] = {
    # 96% of the thresholded entries (latent tables and first-order weights) removed: at
    # least 95% fewer embedding parameters than DeepFM-16 with the numerical fields' vectors;
    # thresholds 50x faster than s itself, so a few hundred steps of large batches reach it
    # (0.8 too: each level reached is retrained, so the loss against sparsity shows)
    "pep": {"sparsity": 0.96, "levels": "0.8,0.96", "threshold_decay": 5e-5,
            "threshold_scale": 50.0},
    # fewer generations than the paper's 30: each candidate is a pass over 50,000 rows
    "optembed": {"iterations": 10},
}


def count_mask_spec(ds: Dataset, spec: Any, min_count: int) -> Any:
    """``spec`` with every value seen fewer than ``min_count`` times in training pruned (its
    whole row and its first-order weight): no search, the reference a pruning search has to
    beat. Built under the training seed it starts from the same step-0 weights as PEP's
    retrain."""
    cat = ds.train.cat.numpy()
    pruning, linear = {}, {}
    for j, f in enumerate(ds.schema.categorical):
        n, dim = ds.schema.field(f).vocab_size, spec.dim_of(f)
        rows = torch.from_numpy(np.bincount(cat[:, j], minlength=n)[:n] >= min_count)
        pruning[f] = encode_mask(rows[:, None].expand(n, dim).contiguous())
        linear[f] = encode_mask(rows[:, None].contiguous())
    return spec.copy(pruning=pruning, linear_pruning=linear if spec.linear else {})


def scale_file(rows: int, folder: Path) -> Path:
    """The Criteo-layout file of ``rows`` rows (seed 0), written once."""
    path = folder / f"criteo-{rows}.txt"
    if not path.exists():
        folder.mkdir(parents=True, exist_ok=True)
        write_layout("criteo", path, rows, seed=0)
    return path


@torch.no_grad()
def latencies(models: dict[str, torch.nn.Module], ds: Dataset, repeats: int = 30,
              sizes: tuple[int, ...] = (1, 4096)) -> dict[str, dict[str, float]]:
    """Median milliseconds of one forward pass per model and batch size, the models
    alternating within every repeat (so load on the machine hits all alike)."""
    batches = {n: ds.test.batch(torch.arange(min(n, len(ds.test)))) for n in sizes}
    times: dict[str, dict[int, list[float]]] = {m: {n: [] for n in sizes} for m in models}
    for model in models.values():
        model.eval()
    for _ in range(repeats):
        for n, batch in batches.items():
            for name, model in models.items():
                t0 = time.perf_counter()
                model(batch)
                times[name][n].append(1e3 * (time.perf_counter() - t0))
    return {m: {f"batch {n} ms": float(np.median(v[n][repeats // 5:])) for n in sizes}
            for m, v in times.items()}


def run_scale(rows: int, seeds: int, epochs: int, search_epochs: int,
              methods: tuple[str, ...], threads: int, folder: Path,
              batch_size: int, first_seed: int = 2026,
              overrides: dict[str, dict[str, Any]] | None = None,
              count_masks: tuple[int, ...] = (), min_count: int = 1,
              lazy: bool = False) -> dict[str, Any]:
    """DeepFM-16 and each method on the Criteo-layout file of ``rows`` rows, per seed (the
    seed draws the split and the training). ``min_count``: values seen fewer times in
    training read as their field's out-of-vocabulary id, for every model alike (the
    papers' Criteo preprocessing, 10 there); ``lazy``: every model (the baseline, the
    searches and the retrains) trains its lookup tables with the lazy Adam
    (``TrainConfig.lazy_tables``). The figures so far are written after every
    seed (``embedding-<rows>-<first seed>[-mc<min_count>].json``), so a run cut short keeps
    its seeds."""
    path = scale_file(rows, folder)
    runs: dict[str, list[dict[str, Any]]] = {m: [] for m in ("full-dim", *methods)}
    distinct: list[dict[str, int]] = []
    found = {"runs": runs, "truth": {}, "encoders": {}, "bayes": [], "distinct": distinct,
             "file": str(path), "seeds": [], "min_count": min_count, "lazy": lazy}
    for k in range(seeds):
        seed = first_seed + k
        t0 = time.perf_counter()
        # every value of the training split keeps its own id: no hashing of huge fields
        ds = load_dataset(str(path), fmt="criteo", seed=seed, hash_threshold=10**9,
                          min_count=min_count, cache_dir=folder / "cache", in_memory=True)
        print(f"  {rows:,} rows seed {seed}: loaded in {time.perf_counter() - t0:.0f}s",
              flush=True)
        distinct.append({f: ds.schema.field(f).vocab_size for f in ds.schema.categorical})
        config = TrainConfig(epochs=epochs, batch_size=batch_size, patience=1, seed=seed,
                             progress=False, threads=threads, lazy_tables=lazy)
        spec = backbone_spec("deepfm", 16)
        base = fit_spec(ds, spec, config)
        models = {"full-dim": base.model}
        runs["full-dim"].append(record(base, 0.0, None))
        report(f"{rows:,} rows", seed, "full-dim", runs["full-dim"][-1])
        for count in count_masks:
            name = f"count>={count}"
            masked = fit_spec(ds, count_mask_spec(ds, spec, count), config)
            models[name] = masked.model
            runs.setdefault(name, []).append(record(masked, 0.0, None))
            report(f"{rows:,} rows", seed, name, runs[name][-1])
        for method in methods:
            ctx = SearchContext(ds, spec, config, seed=seed,
                                options=dict(SCALE_OPTIONS.get(method, {}),
                                             search_epochs=search_epochs,
                                             **(overrides or {}).get(method, {})))
            t0 = time.perf_counter()
            searcher = get_method(method)
            stage = searcher.search(ctx)
            search = time.perf_counter() - t0
            final = fit_spec(ds, stage.spec, config)
            models[method] = final.model
            runs[method].append(record(final, search, stage.dims))
            runs[method][-1]["stage"] = {k: v for k, v in stage.extra.items()
                                         if k not in ("curve",)}
            report(f"{rows:,} rows", seed, method, runs[method][-1])
            # PEP: the other sparsity levels of the same search, each retrained the same
            # way (AUC against sparsity)
            for level, level_spec in getattr(searcher, "level_specs", {}).items():
                if level == stage.extra.get("target"):
                    continue
                name = f"{method}@{level}"
                runs.setdefault(name, []).append(record(fit_spec(ds, level_spec, config),
                                                        search, None))
                report(f"{rows:,} rows", seed, name, runs[name][-1])
        for name, timing in latencies(models, ds).items():
            runs[name][-1]["latency"] = timing
            print(f"    {name} latency: " + ", ".join(f"{k} {v:.2f}" for k, v in
                                                      timing.items()), flush=True)
        del models, base, ds
        found["seeds"].append(seed)
        tag = (f"-mc{min_count}" if min_count > 1 else "") + ("-lazy" if lazy else "")
        (folder / f"embedding-{rows}-{first_seed}{tag}.json").write_text(
            json.dumps(found, indent=2, default=float))
    return found


def merge_scale(paths: list[Path]) -> tuple[int, dict[str, Any]]:
    """The ``--rows`` figures of several runs (``embedding-<rows>-<seed>*.json``, one per
    process, e.g. one seed each run side by side) as one, for the same file and settings;
    only the models every run has are kept, so each is paired over the same seeds."""
    founds = [json.loads(p.read_text()) for p in paths]
    first = founds[0]
    for other in founds[1:]:
        for key in ("file", "min_count", "lazy"):
            if other.get(key) != first.get(key):
                raise SystemExit(f"--merge: the runs differ in {key}: "
                                 f"{first.get(key)!r} against {other.get(key)!r}")
    common = [m for m in first["runs"] if all(f["runs"].get(m) for f in founds)]
    merged = dict(first, runs={m: [r for f in founds for r in f["runs"][m]] for m in common},
                  distinct=[d for f in founds for d in f["distinct"]],
                  seeds=[s for f in founds for s in f["seeds"]])
    rows = int(Path(first["file"]).stem.split("-")[-1])
    return rows, merged


def summarise_scale(rows: int, found: dict[str, Any]) -> str:
    runs = found["runs"]
    full = runs["full-dim"]
    top = sorted(found["distinct"][0].items(), key=lambda kv: -kv[1])[:4]
    mc = found.get("min_count", 1)
    title = (f"Criteo layout, {rows:,} rows" + (f", min count {mc}" if mc > 1 else "")
             + (", lazy Adam on the tables" if found.get("lazy") else ""))
    lines = [summarise(title, found), "",
             "largest vocabularies (first seed's training split): "
             + ", ".join(f"{f} {n:,}" for f, n in top)
             + f"; all fields {sum(found['distinct'][0].values()):,}", ""]
    table = []
    for method, items in runs.items():
        if not items or "latency" not in items[0]:
            continue
        ratio = [r["latency"][k] / f["latency"][k] for r, f in zip(items, full, strict=True)
                 for k in r["latency"]]
        table.append([method] + [f"{np.mean([r['latency'][k] for r in items]):.2f}"
                                 for k in items[0]["latency"]]
                     + [f"{np.mean(ratio):.2f}"])
    keys = list(full[0].get("latency", {}))
    if table:
        lines.append(markdown_table(["model", *keys, "vs full (mean ratio)"], table))
    return "\n".join(lines)


def record(outcome: Any, search_seconds: float, dims: dict[str, float] | None) -> dict[str, Any]:
    return {"test_auc": outcome.metrics["test"]["auc"],
            "test_logloss": outcome.metrics["test"]["logloss"],
            "embedding_params": outcome.params["embedding"],
            "bytes": count_bytes(outcome.model)["embedding"],
            "search_seconds": search_seconds, "retrain_seconds": outcome.seconds,
            "best_epoch": outcome.fit.best_epoch, "dims": dims,
            "valid_auc_per_epoch": [round(h["auc"], 5) for h in outcome.fit.history]}


def report(data: str, seed: int, method: str, r: dict[str, Any]) -> None:
    print(f"  {data} seed {seed} {method:>8}: test AUC {r['test_auc']:.4f}, "
          f"{r['embedding_params']:,} embedding params, {r['bytes']:,} bytes, "
          f"search {r['search_seconds']:.1f}s + retrain {r['retrain_seconds']:.1f}s, "
          f"validation AUC per epoch {r['valid_auc_per_epoch']}", flush=True)


ENCODERS = ("autodis", "linear", "bucket")


def compare_encoders(ds: Dataset, spec: Any, config: TrainConfig,
                     out: dict[str, list[float]]) -> None:
    """num0 (and the numerical noise field) with each numerical encoder, all else equal: in
    DeepFM (whose MLP can also bend a linear encoding), and in the oracle structure, where
    num0 enters only through the first-order term, so its encoder alone shapes its effect.
    The oracle (an FM, slow to converge) trains to convergence: up to 60 epochs, patience 4."""
    for encoder in ENCODERS:
        candidate = spec.copy(numerical={"num0": encoder, "num_noise": encoder})
        result = fit_spec(ds, candidate, config)
        out.setdefault(f"DeepFM, {encoder}", []).append(result.metrics["test"]["auc"])
        print(f"  num0 encoder {encoder:>8} (DeepFM): test AUC "
              f"{result.metrics['test']['auc']:.4f}", flush=True)
    long = replace(config, epochs=max(config.epochs, 60), patience=max(config.patience, 4))
    for encoder in ENCODERS:
        candidate = oracle_spec(ds.info["truth"]).copy(numerical={"num0": encoder})
        result = fit_spec(ds, candidate, long)
        out.setdefault(f"oracle structure (first-order only), {encoder}", []).append(
            result.metrics["test"]["auc"])
        capped = ", still improving at the cap" if result.fit.still_improving else ""
        print(f"  num0 encoder {encoder:>8} (oracle structure): test AUC "
              f"{result.metrics['test']['auc']:.4f}, best epoch {result.fit.best_epoch}{capped}",
              flush=True)


def summarise(data: str, found: dict[str, Any]) -> str:
    runs = found["runs"]
    base_auc = np.mean([r["test_auc"] for r in runs["full-dim"]])
    base_params = np.mean([r["embedding_params"] for r in runs["full-dim"]])
    full = [r["test_auc"] for r in runs["full-dim"]]
    rows = []
    for method, items in runs.items():
        if not items:
            continue
        aucs = [r["test_auc"] for r in items]
        params = np.mean([r["embedding_params"] for r in items])
        rows.append([method, mean_std(aucs), paired_difference(aucs, full)
                     if len(full) == len(aucs) else f"{np.mean(aucs) - base_auc:+.4f}",
                     f"{params:,.0f}", f"{1 - params / base_params:.1%}",
                     f"{np.mean([r['bytes'] for r in items]):,.0f}",
                     f"{np.mean([r['search_seconds'] for r in items]):.1f}",
                     f"{np.mean([r['retrain_seconds'] for r in items]):.1f}"])
    text = [f"## {data} (DeepFM, dim 16 baseline; {len(runs['full-dim'])} seeds)", "",
            markdown_table(["method", "test AUC", "vs full per seed (± s.e.)", "emb. params",
                            "fewer", "emb. bytes", "search s", "retrain s"], rows)]
    if found["bayes"]:
        text += ["", f"Bayes-optimal test AUC: {mean_std(found['bayes'])}"]
    if found["truth"]:
        text += ["", markdown_table(["planted truth", "mean over seeds"],
                                    [[k, mean_std(v)] for k, v in found["truth"].items()])]
    if found["encoders"]:
        text += ["", markdown_table(["num0 model, encoder", "test AUC"],
                                    [[k, mean_std(v)] for k, v in found["encoders"].items()])]
    return "\n".join(text)


def plot(results: dict[str, dict[str, Any]], path: Path) -> None:
    fig, axes = plt.subplots(1, len(results), figsize=(6 * len(results), 4.5), squeeze=False)
    for ax, (data, found) in zip(axes[0], results.items(), strict=True):
        for method, items in found["runs"].items():
            if not items:
                continue
            x = [r["bytes"] for r in items]
            y = [r["test_auc"] for r in items]
            ax.errorbar(np.mean(x), np.mean(y), yerr=np.std(y), fmt="o", capsize=3)
            ax.annotate(method, (np.mean(x), np.mean(y)), textcoords="offset points",
                        xytext=(5, 4), fontsize=8)
        ax.set_xscale("log")
        ax.set_xlabel("stored embedding bytes (log)")
        ax.set_ylabel("test AUC")
        ax.set_title(data)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", nargs="+",
                        default=["movielens-100k", "synthetic?rows=50000&seed=1"])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=20, help="epochs of every (re)train")
    parser.add_argument("--search-epochs", type=int, default=5,
                        help="epochs of the gradient searches (PEP: up to 10x, to reach "
                             "its target)")
    parser.add_argument("--trials", type=int, default=12, help="trials of nis and rule")
    parser.add_argument("--trial-epochs", type=int, default=2)
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--uniform-dims", default="1,2",
                        help="also train DeepFM with every field at each of these dims: what "
                             "the same saving costs without a search ('' for none)")
    parser.add_argument("--pep-threshold", default="feature_dim",
                        help="PEP's threshold granularity (feature_dim: one per entry, the "
                             "paper's default; feature: one per value; ...)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rows", type=int, default=None,
                        help="instead of --data: a Criteo-layout file of this many rows, "
                             "DeepFM-16 against the pruning methods (default pep)")
    parser.add_argument("--first-seed", type=int, default=2026,
                        help="the first seed under --rows (seeds run from it upwards)")
    parser.add_argument("--batch-size", type=int, default=4096,
                        help="batch size of every (re)train and search under --rows")
    parser.add_argument("--scale-options", type=json.loads, default={},
                        help="under --rows: JSON of per-method options over this script's, "
                             "e.g. '{\"pep\": {\"threshold_init\": -20}}'")
    parser.add_argument("--count-masks", default="",
                        help="under --rows: also DeepFM-16 with the values seen fewer than "
                             "each of these counts in training pruned, e.g. 20 (no search)")
    parser.add_argument("--min-count", type=int, default=1,
                        help="under --rows: values seen fewer times in training share their "
                             "field's out-of-vocabulary id, in every model (the papers' "
                             "Criteo preprocessing uses 10)")
    parser.add_argument("--lazy", action="store_true",
                        help="under --rows: every model steps only the table rows in the "
                             "batch (lazy Adam; no decay or momentum on the other rows)")
    parser.add_argument("--merge", type=Path, nargs="+", default=None,
                        help="print the --rows summary of these runs' JSON files together "
                             "(one seed per process), paired over their seeds; runs nothing")
    parser.add_argument("--out", type=Path, default=Path("runs/bench-embedding"))
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(args.threads)
    methods = tuple(m for m in args.methods.split(",") if m)
    if args.merge:
        rows, found = merge_scale(args.merge)
        print(f"seeds {found['seeds']} from {', '.join(str(p) for p in args.merge)}")
        print(summarise_scale(rows, found), flush=True)
        return
    print(machine_line())
    results = {}
    if args.rows is not None:
        if args.methods == parser.get_default("methods"):
            methods = ("pep",)
        found = run_scale(args.rows, args.seeds, args.epochs, args.search_epochs, methods,
                          args.threads, args.out, args.batch_size, args.first_seed,
                          args.scale_options,
                          tuple(int(c) for c in args.count_masks.split(",") if c),
                          args.min_count, args.lazy)
        print(summarise_scale(args.rows, found), flush=True)
        return
    for data in args.data:
        results[data] = run_dataset(data, args.seeds, args.epochs, args.search_epochs,
                                    args.trials, args.trial_epochs, methods, args.threads,
                                    tuple(int(d) for d in args.uniform_dims.split(",") if d),
                                    args.pep_threshold)
        print(summarise(data, results[data]), flush=True)
    plot(results, args.out / "auc_vs_bytes.png")
    (args.out / "embedding.json").write_text(json.dumps(results, indent=2, default=float))
    print(f"plot -> {args.out / 'auc_vs_bytes.png'}; figures -> {args.out / 'embedding.json'}")


if __name__ == "__main__":
    main()
