"""Send a run to the experiment trackers users already run: MLflow and TensorBoard.

Both read the run folder autodrs writes (``result.json``, ``config.yaml``, the report and the
model files), so a run can be sent as it finishes (``--track mlflow`` on ``train`` and
``search``) or any time later (``autodrs track RUN --to mlflow``). Each tracker is an optional
extra: ``pip install 'autodrs[mlflow]'`` or ``'autodrs[tensorboard]'``.

A target is ``mlflow`` (the tracking URI from ``MLFLOW_TRACKING_URI``, else MLflow's
default), ``mlflow=URI``, ``tensorboard`` (event files in ``RUN/tensorboard``) or
``tensorboard=DIR``."""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

TRACKERS = ("mlflow", "tensorboard")
# what each tracker needs installed, and the extra that installs it
_NEEDS = {"mlflow": ("mlflow", "mlflow"), "tensorboard": ("tensorboard", "tensorboard")}


class TrackingError(ValueError):
    """A tracking target that cannot be used (unknown, not installed, not a run folder)."""


@dataclass(frozen=True)
class Target:
    kind: str  # "mlflow" or "tensorboard"
    where: str | None  # tracking URI or log folder; None for the default


def parse_targets(values: list[str] | None) -> list[Target]:
    """``["mlflow", "tensorboard=logs"]`` -> targets, checked and their package importable,
    so a run fails before any work rather than after it."""
    targets = []
    for value in values or []:
        kind, _, where = value.partition("=")
        kind = kind.strip().lower()
        if kind not in TRACKERS:
            raise TrackingError(f"--track {value!r}: unknown tracker {kind!r}; choose from "
                                f"{', '.join(TRACKERS)} (optionally KIND=URI or KIND=DIR)")
        module, extra = _NEEDS[kind]
        try:
            __import__(module)
        except ImportError as e:
            raise TrackingError(f"--track {kind}: {module} is not installed; install it with "
                                f"pip install 'autodrs[{extra}]'") from e
        targets.append(Target(kind, where.strip() or None))
    return targets


def _flat(prefix: str, value: Any, out: dict[str, Any]) -> None:
    if isinstance(value, dict):
        for k, v in value.items():
            _flat(f"{prefix}.{k}" if prefix else str(k), v, out)
    else:
        out[prefix] = value


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


def run_scalars(result: dict[str, Any]) -> list[tuple[str, float, int]]:
    """The run's numbers as ``(tag, value, step)``: final validation/test metrics, the final
    fit's per-epoch validation curve (step = epoch), each stage's seconds and guard score
    (step = stage index), each baseline's metrics, and the model's size."""
    rows: list[tuple[str, float, int]] = []

    def add(tag: str, value: Any, step: int = 0) -> None:
        number = _number(value)
        if number is not None:
            rows.append((tag, number, step))

    for split, metrics in (result.get("metrics") or {}).items():
        for name, value in (metrics or {}).items():
            add(f"{split}/{name}", value)
    for point in result.get("history") or []:
        epoch = int(point.get("epoch", 0))
        for name, value in point.items():
            if name != "epoch":
                add(f"history/valid_{name}", value, epoch)
    for index, stage in enumerate(result.get("stages") or []):
        add("stages/seconds", stage.get("seconds"), index)
        guard = stage.get("guard")
        if isinstance(guard, dict):
            add("stages/valid_auc", guard.get("stage_valid_auc"), index)
    for name, baseline in (result.get("baselines") or {}).items():
        for split in ("valid", "test"):
            for metric, value in (baseline.get(split) or {}).items():
                add(f"baselines/{name}/{split}_{metric}", value)
        add(f"baselines/{name}/seconds", baseline.get("seconds"))
    for kind in ("params", "bytes"):
        for part, value in (result.get(kind) or {}).items():
            add(f"size/{kind}_{part}", value)
    for name, value in (result.get("cost") or {}).items():
        add(f"cost/{name}", value)
    return rows


def run_params(folder: Path, result: dict[str, Any]) -> dict[str, str]:
    """The settings the run was started with (``config.yaml``, else ``result.json``'s
    training config), flattened to ``key -> text``."""
    config_file = folder / "config.yaml"
    settings = (yaml.safe_load(config_file.read_text()) if config_file.exists()
                else result.get("config") or {})
    flat: dict[str, Any] = {}
    _flat("", settings or {}, flat)
    return {k: ("" if v is None else str(v)) for k, v in flat.items()}


def read_run(folder: str | Path) -> tuple[Path, dict[str, Any]]:
    folder = Path(folder)
    path = folder / "result.json"
    if not path.is_file():
        raise TrackingError(f"{folder}: no result.json; give the folder of a finished "
                            "`autodrs train` or `autodrs search` run")
    return folder, json.loads(path.read_text())


def _run_name(folder: Path, result: dict[str, Any]) -> str:
    return f"{result.get('command', 'run')}-{folder.resolve().name}"


def _to_mlflow(folder: Path, result: dict[str, Any], uri: str | None, experiment: str,
               artifacts: bool) -> str:
    from mlflow.entities import Metric, Param, RunTag
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    found = client.get_experiment_by_name(experiment)
    experiment_id = (found.experiment_id if found is not None
                     else client.create_experiment(experiment))
    tags = {"autodrs.command": str(result.get("command", "")),
            "autodrs.data": str(result.get("data", "")),
            "autodrs.model": str(result.get("model", "")),
            "autodrs.folder": str(folder.resolve())}
    run = client.create_run(experiment_id, run_name=_run_name(folder, result), tags=tags)
    run_id = run.info.run_id
    try:
        now = int(time.time() * 1000)
        # MLflow caps a param's text (6000 chars) and a batch's size (100 params, 1000 metrics)
        params = [Param(k, v[:6000]) for k, v in run_params(folder, result).items()]
        for start in range(0, len(params), 100):
            client.log_batch(run_id, params=params[start:start + 100])
        metrics = [Metric(tag.replace("/", "."), value, now, step)
                   for tag, value, step in run_scalars(result)]
        for start in range(0, len(metrics), 1000):
            client.log_batch(run_id, metrics=metrics[start:start + 1000])
        client.log_batch(run_id, tags=[RunTag("autodrs.seed", str(result.get("seed", "")))])
        if artifacts:
            for path in sorted(folder.iterdir()):
                if path.is_file():
                    client.log_artifact(run_id, str(path))
        client.set_terminated(run_id, "FINISHED")
    except Exception:
        client.set_terminated(run_id, "FAILED")
        raise
    return run_id


def _leaderboard_markdown(result: dict[str, Any]) -> str:
    lines = ["| model | valid AUC | test AUC |", "|---|---|---|"]
    rows = [("searched" if result.get("command") == "search" else str(result.get("model")),
             result.get("metrics") or {})]
    rows += [(name, b) for name, b in (result.get("baselines") or {}).items()]
    for name, metrics in rows:
        valid = (metrics.get("valid") or {}).get("auc")
        test = (metrics.get("test") or {}).get("auc")
        lines.append(f"| {name} | {'' if valid is None else f'{valid:.4f}'} | "
                     f"{'' if test is None else f'{test:.4f}'} |")
    return "\n".join(lines)


def _to_tensorboard(folder: Path, result: dict[str, Any], logdir: str | None) -> str:
    from torch.utils.tensorboard import SummaryWriter

    where = Path(logdir) / _run_name(folder, result) if logdir else folder / "tensorboard"
    writer = SummaryWriter(log_dir=str(where))
    try:
        for tag, value, step in run_scalars(result):
            writer.add_scalar(tag, value, step)
        writer.add_text("spec", f"```json\n{json.dumps(result.get('spec'), indent=1)}\n```")
        writer.add_text("leaderboard", _leaderboard_markdown(result))
        params = run_params(folder, result)
        writer.add_text("config", "\n".join(f"- {k}: {v}" for k, v in params.items()))
    finally:
        writer.close()
    return str(where)


def export_run(folder: str | Path, targets: list[Target], experiment: str = "autodrs",
               artifacts: bool = True) -> list[str]:
    """Send the run in ``folder`` to each target; returns one line per target saying where
    it went (the MLflow run id, the TensorBoard log folder)."""
    path, result = read_run(folder)
    lines = []
    for target in targets:
        if target.kind == "mlflow":
            run_id = _to_mlflow(path, result, target.where, experiment, artifacts)
            lines.append(f"mlflow: run {run_id} in experiment {experiment!r}"
                         + (f" at {target.where}" if target.where else ""))
        else:
            lines.append(f"tensorboard: {_to_tensorboard(path, result, target.where)}")
    return lines


def study_urls(folder: str | Path) -> list[tuple[str, str]]:
    """``(stage, storage URL)`` of every Optuna study a run's stages stored, for Optuna
    Dashboard (``optuna-dashboard URL``)."""
    return [(db.parent.name, f"sqlite:///{db.resolve()}")
            for db in sorted(Path(folder).glob("stages/*/search.db"))]
