"""``autodrs transfer``: pre-train on a source domain, transfer to a target domain by
AutoFT, and compare it with scratch, fine-tune-all and freeze-embeddings on the target's
test split; writes DIR/result.json and DIR/report.html.

    autodrs transfer --source 'movielens-100k?domain=source' \\
        --data 'movielens-100k?domain=target' --model deepfm --seed 0 --out runs/transfer

The AutoFT model (frozen and fine-tuned copies and the policy) is saved as ``autoft.pt``
with ``spec.json`` and ``schema.json`` beside it; it is not a single ``build_model`` model,
so ``autodrs predict`` and ``serve`` do not load it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Annotated, Any

import torch
import typer

from autodrs.cli import (
    BatchSize,
    Data,
    Device,
    EmbedDim,
    Epochs,
    Lr,
    Overwrite,
    Patience,
    Progress,
    Rows,
    Seed,
    Threads,
    out,
)
from autodrs.config import DEFAULT_EPOCHS, ConfigError, RunSettings
from autodrs.logs import log, run_log

DEFAULT_SOURCE = "movielens-100k?domain=source"
DEFAULT_TARGET = "movielens-100k?domain=target"


@dataclass(kw_only=True)
class TransferSettings(RunSettings):
    """``autodrs transfer``: the source domain, the backbone, AutoFT's options and the
    baselines (``data`` is the target domain)."""

    source: str = DEFAULT_SOURCE
    model: str = "deepfm"
    baselines: list[str] | None = None  # None: all of TRANSFER_BASELINES
    tau: float = 1.0
    cost: float = 0.0
    policy_data: str = "valid"

    def check(self) -> None:
        super().check()
        from autodrs.methods.transfer.autoft import POLICY_DATA
        from autodrs.methods.transfer.baselines import TRANSFER_BASELINES

        if self.source == self.data:
            raise ConfigError("--source and --data name the same data; transfer needs two "
                              "domains (e.g. movielens-100k?domain=source and ?domain=target)")
        unknown = [b for b in self.baselines or [] if b not in TRANSFER_BASELINES]
        if unknown:
            raise ConfigError(f"unknown transfer baseline {unknown[0]!r}; choose from "
                              f"{', '.join(TRANSFER_BASELINES)}")
        if self.policy_data not in POLICY_DATA:
            raise ConfigError(f"policy-data: choose {' or '.join(POLICY_DATA)}, got "
                              f"{self.policy_data!r}")
        if self.tau <= 0 or self.cost < 0:
            raise ConfigError(f"tau must be > 0 and cost >= 0 (got {self.tau}, {self.cost})")


def run_transfer(settings: TransferSettings, report: bool = True) -> dict[str, Any]:
    """Pre-train, transfer by AutoFT, train the baselines, write the run folder; returns
    the result (what result.json holds)."""
    from autodrs.api import (
        _run_folder,
        _train_config,
        check_out,
        load_data,
        result_skeleton,
        save_settings,
        write_report,
    )
    from autodrs.experiment import machine_info, with_training
    from autodrs.methods.transfer.autoft import pretrain, run_autoft, stage_result
    from autodrs.methods.transfer.baselines import TRANSFER_BASELINES, run_baseline
    from autodrs.models.backbones import backbone_spec
    from autodrs.models.builder import count_bytes
    from autodrs.runfolder import prepare_run_folder, write_json

    started = time.monotonic()
    folder, _ = _run_folder(settings.out)
    check_out(folder, settings.overwrite)
    try:
        spec = backbone_spec(settings.model, settings.embed_dim)
    except ValueError as e:
        raise ConfigError(f"model: {e}") from e
    target = load_data(settings)
    source = load_data(replace(settings, data=settings.source))
    spec.validate(target.schema)
    spec.validate(source.schema)
    config = _train_config(settings)
    prepare_run_folder(folder, settings.overwrite)
    save_settings(folder, settings)
    with run_log(folder):
        log.info(f"pre-training {settings.model} on {source.info['name']} "
                 f"({len(source.train):,} training rows)")
        pre = pretrain(source, spec, config)
        log.info(f"source model: validation AUC {pre.metrics['valid']['auc']:.4f}; AutoFT on "
                 f"{target.info['name']} ({len(target.train):,} training rows)")
        t0 = time.perf_counter()
        run = run_autoft(pre, target, config, tau=settings.tau, cost=settings.cost,
                         policy_data=settings.policy_data)
        stage = stage_result("autoft", "gradient", spec, run, pre, time.perf_counter() - t0)
        log.info(f"autoft: test AUC {run.metrics['test']['auc']:.4f}; fine-tunes "
                 f"{', '.join(stage.extra['fine_tune']) or 'nothing'}")
        baselines: dict[str, Any] = {}
        t1 = time.perf_counter()
        for name in settings.baselines or TRANSFER_BASELINES:
            o = run_baseline(name, pre, target, config)
            baselines[name] = {**o.metrics, "params": o.params, "bytes": count_bytes(o.model),
                               "seconds": round(o.seconds, 3), "train_rows": len(target.train),
                               "best_epoch": o.fit.best_epoch,
                               "still_improving": o.fit.still_improving}
            log.info(f"{name}: test AUC {o.metrics['test']['auc']:.4f}")
        baseline_seconds = time.perf_counter() - t1
        torch.save({k: v.detach().cpu() for k, v in run.model.state_dict().items()},
                   folder / "autoft.pt")
        spec_out = stage.spec
        spec_out.to_json(folder / "spec.json")
        target.schema.save(folder / "schema.json")
        result = result_skeleton("transfer", target, settings.seed)
        result |= {
            "model": "autoft", "backbone": settings.model, "methods": ["autoft"],
            "source": {k: source.info.get(k) for k in ("name", "rows", "sizes", "split", "seed")},
            "spec": spec_out.to_dict(),
            "metrics": run.metrics,
            "baselines": baselines,
            "params": count_parameters_autoft(run),
            "cost": {"pretrain_seconds": round(pre.seconds, 3),
                     "search_seconds": round(run.seconds, 3), "retrain_seconds": 0.0,
                     "baseline_seconds": round(baseline_seconds, 3),
                     "total_seconds": round(time.monotonic() - started, 3),
                     "train_samples_per_second": round(run.fit.samples_per_second, 1)},
            "rows": {"source_train": len(source.train), "retrain": len(target.train),
                     "baselines": len(target.train),
                     "scored": {"valid": len(target.valid), "test": len(target.test)}},
            "stages": [{**stage.to_dict(), "train_rows": len(target.train)}],
            "history": run.fit.history, "best_epoch": run.fit.best_epoch,
            "still_improving": [n for n, b in baselines.items() if b["still_improving"]]
            + (["autoft"] if run.fit.still_improving else []),
            "config": {**vars(with_training(config, spec)), "progress": False},
            "settings": settings.to_dict(),
            "machine": machine_info(config),
        }
        write_json(folder / "result.json", result)
        if report:
            write_report(result, folder / "report.html")
    return result


def count_parameters_autoft(run: Any) -> dict[str, int]:
    """The AutoFT model's parameters: both copies and the policy (``total``), the
    embedding tables of both copies (``embedding``) and the policy's (``policy``)."""
    model = run.model
    emb = model.frozen.embedding_parameters() + model.tuned.embedding_parameters()
    return {"embedding": int(emb), "policy": sum(p.numel() for p in model.policy.parameters()),
            "total": sum(p.numel() for p in model.parameters())}


def transfer_command(
    source: Annotated[str, typer.Option(help="the source domain the model is pre-trained on "
                                             "(a built-in name with options, or a file)")
                      ] = DEFAULT_SOURCE,
    data: Data = DEFAULT_TARGET,
    out_dir: Annotated[Path, typer.Option("--out", help="run folder")] = Path("runs/transfer"),
    model: Annotated[str, typer.Option(help="backbone pre-trained and transferred")
                     ] = "deepfm",
    baselines: Annotated[str | None, typer.Option(
        help="comma-separated: scratch, finetune_all, freeze_embeddings (default: all)")
    ] = None,
    tau: Annotated[float, typer.Option(help="Gumbel-softmax temperature of the policy")] = 1.0,
    cost: Annotated[float, typer.Option(help="price per fine-tuned field or layer")] = 0.0,
    policy_data: Annotated[str, typer.Option(
        help="valid: the policy steps on validation batches (bi-level); train: jointly on "
             "the training rows (the paper)")] = "valid",
    seed: Seed = 2026, epochs: Epochs = DEFAULT_EPOCHS, batch_size: BatchSize = 1024,
    lr: Lr = 1e-3, patience: Patience = 2, embed_dim: EmbedDim = 16, device: Device = "auto",
    threads: Threads = None, progress: Progress = True, overwrite: Overwrite = False,
    rows: Rows = None,
) -> None:
    """Pre-train on --source, transfer to --data by AutoFT, compare with the baselines."""
    settings = TransferSettings.from_mapping({
        "source": source, "data": data, "out": str(out_dir), "model": model,
        "baselines": [b.strip() for b in baselines.split(",") if b.strip()]
        if baselines else None,
        "tau": tau, "cost": cost, "policy_data": policy_data, "seed": seed, "epochs": epochs,
        "batch_size": batch_size, "lr": lr, "patience": patience, "embed_dim": embed_dim,
        "device": device, "threads": threads, "progress": progress, "overwrite": overwrite,
        "rows": rows}, where="the command line")
    result = run_transfer(settings)
    t = result["metrics"]["test"]
    out.print(f"autoft: test AUC {t['auc']:.4f}  logloss {t['logloss']:.4f}  (fine-tunes "
              f"{', '.join(result['stages'][0]['fine_tune']) or 'nothing'})", highlight=False)
    for name, b in result["baselines"].items():
        out.print(f"{name}: test AUC {b['test']['auc']:.4f}  logloss {b['test']['logloss']:.4f}",
                  highlight=False)
    out.print(f"-> {Path(settings.out or out_dir) / 'result.json'}", highlight=False)
