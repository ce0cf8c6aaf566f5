"""The default search pipeline and YAML run configuration.

``autodrs search`` without ``--methods`` runs the default pipeline: feature selection, then
embedding dims, then interactions, each stage refining the spec, then a retrain from
scratch evaluated next to hand-crafted baselines.

``--budget`` covers the stages and the retrain (the baselines are trained after it, on
their own time). ``RETRAIN_SHARE`` of it is kept back for the retrain, which may also use
whatever the stages leave; the rest goes to the stages in proportion to ``STAGE_WEIGHTS``,
each stage's unused time passing to the stages after it. The weights follow what each stage
spends its time on: feature selection retrains the model once per ERASE point (log2 n
retrains by bisection under a budget), AutoDim trains a supernet with a table per candidate
dim, AutoFIS trains its gated supernet for two epochs. Settings can come from a YAML file
(``--config``) whose keys are the command's option names; flags given on the command line
win, and the effective configuration is saved in the run folder.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from autodrs.data.errors import DataError

DEFAULT_PIPELINE = ("autofield", "autodim", "autofis")
DEFAULT_BASELINES = "deepfm,fm,widedeep,dcnv2,ipnn"
STAGE_WEIGHTS = {"autofield": 3.0, "autodim": 2.0, "autofis": 1.0}
RETRAIN_SHARE = 0.2
CONFIG_FILE = "config.yaml"


def stage_weights(methods: list[str]) -> list[float]:
    """Relative budget shares of ``methods`` as stages: ``STAGE_WEIGHTS`` for the default
    pipeline's methods, the mean weight (2) for any other."""
    default = sum(STAGE_WEIGHTS.values()) / len(STAGE_WEIGHTS)
    return [STAGE_WEIGHTS.get(m, default) for m in methods]


def load_config(path: str | Path) -> dict[str, Any]:
    p = Path(path)
    if not p.exists():
        raise DataError(f"config file {p} not found")
    try:
        data = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as e:
        raise DataError(f"config file {p} is not valid YAML: {e}") from e
    if not isinstance(data, dict):
        raise DataError(f"config file {p} must be a mapping of option names to values")
    return {str(k).replace("-", "_"): v for k, v in data.items()}


def merge_config(ctx: Any, params: dict[str, Any],
                 config: dict[str, Any]) -> dict[str, Any]:
    """``params`` with values from ``config`` for every option not given on the command
    line (flags win). ``ctx`` is the command's (typer's) click context; unknown keys are an
    error naming them."""
    aliases = {"time": "time_col", "out": "out_dir"}
    config = {aliases.get(k, k): v for k, v in config.items()}
    unknown = sorted(k for k in config if k not in params)
    if unknown:
        raise DataError(f"unknown config keys: {', '.join(unknown)}")
    merged = dict(params)
    for key, value in config.items():
        source = ctx.get_parameter_source(key)
        # typer vendors its own click: compare the source by name
        if source is None or source.name in ("DEFAULT", "DEFAULT_MAP"):
            if isinstance(value, list):
                value = ",".join(str(v) for v in value)
            merged[key] = Path(value) if isinstance(params[key], Path) else value
    return merged


def save_config(folder: Path, params: dict[str, Any]) -> None:
    clean = {k: (str(v) if isinstance(v, Path) else v) for k, v in params.items()}
    (folder / CONFIG_FILE).write_text(yaml.safe_dump(clean, sort_keys=True))
