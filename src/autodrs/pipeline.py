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

Each stage of the default pipeline is guarded on validation data (``ValidationGuard``): the
spec a stage proposes is retrained with the run's trainer and kept only when its validation
AUC is at least that of the spec the stage started from, so a stage whose search went wrong
(an embedding search that shrank every table, a selection that dropped a useful field)
cannot make the pipeline's model worse than its input. The retrains are shared with the rest of the
run (``experiment.shared_fits``): feature selection's ERASE retrains serve the first
decision, the first stage's input is the DeepFM baseline and the last kept spec the final
retrain. The test split is never looked at.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from autodrs.data.dataset import Dataset
from autodrs.data.errors import DataError
from autodrs.experiment import Outcome, fit_key, fit_spec
from autodrs.search.base import StageResult
from autodrs.spec import ArchSpec
from autodrs.train.trainer import TrainConfig

DEFAULT_PIPELINE = ("autofield", "autodim", "autofis")
DEFAULT_BASELINES = "deepfm,fm,widedeep,dcnv2,ipnn"
STAGE_WEIGHTS = {"autofield": 3.0, "autodim": 2.0, "autofis": 1.0}
RETRAIN_SHARE = 0.2
GUARD_TOLERANCE = 0.0  # a stage's spec may validate this much worse and still be kept
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


class ValidationGuard:
    """Keep a stage's spec only when it validates at least as well as the stage's input.

    Called by ``run_stages`` with the input spec and the stage's result; returns the spec
    the next stage starts from and records the decision in ``result.extra["guard"]``. Both
    specs are retrained from scratch by ``fit_spec`` with the run's config (so the figures
    are those of the final retrain and of the baselines); outcomes are cached by spec.
    Under a budget the guard does not start retrains the time left (less ``reserve``) cannot
    pay for, judged by the longest retrain so far; it then keeps the stage's spec unchecked
    and says so.
    """

    def __init__(self, dataset: Dataset, config: TrainConfig, tolerance: float = GUARD_TOLERANCE,
                 remaining: Callable[[], float | None] | None = None,
                 reserve: float = 0.0) -> None:
        self.dataset = dataset
        self.config = config
        self.tolerance = tolerance
        self.remaining = remaining or (lambda: None)
        self.reserve = reserve
        self.outcomes: dict[str, Outcome] = {}
        self.longest = 0.0

    def key(self, spec: ArchSpec) -> str:
        """The spec as the model sees it: provenance dropped, all fields spelt out."""
        return fit_key(self.dataset, spec, self.config)

    def outcome(self, spec: ArchSpec) -> Outcome | None:
        """The cached retrain of ``spec``, if the guard trained it."""
        return self.outcomes.get(self.key(spec))

    def fit(self, spec: ArchSpec) -> Outcome:
        key = self.key(spec)
        if key not in self.outcomes:  # fit_spec may hand back a fit the run already did
            self.outcomes[key] = fit_spec(self.dataset, spec, self.config)
            self.longest = max(self.longest, self.outcomes[key].seconds)
        return self.outcomes[key]

    def __call__(self, before: ArchSpec, result: StageResult) -> ArchSpec:
        proposed = result.spec
        if self.key(before) == self.key(proposed):
            result.extra["guard"] = {"kept": True, "reason": "the stage left the spec as it was"}
            return proposed
        todo = sum(self.key(s) not in self.outcomes for s in (before, proposed))
        left = self.remaining()
        if left is not None and self.longest > 0 and left - self.reserve < todo * self.longest:
            result.extra["guard"] = {
                "kept": True, "checked": False,
                "reason": f"{todo} retrain(s) of about {self.longest:.0f}s do not fit in the "
                          f"{max(0.0, left - self.reserve):.0f}s left"}
            return proposed
        t0 = time.perf_counter()
        base = self.fit(before).metrics["valid"]["auc"]
        new = self.fit(proposed).metrics["valid"]["auc"]
        kept = new >= base - self.tolerance
        result.extra["guard"] = {
            "kept": kept, "checked": True, "input_valid_auc": round(base, 6),
            "stage_valid_auc": round(new, 6), "tolerance": self.tolerance,
            "seconds": round(time.perf_counter() - t0, 3),
            "reason": ("the stage's spec validates at least as well as its input" if kept
                       else "the stage's spec validates worse than its input, which is kept"),
        }
        if kept:
            return proposed
        result.extra["guard"]["rejected"] = [line for line in before.diff(proposed)
                                             if not line.startswith("provenance")]
        spec = before.copy()
        spec.provenance.append({"method": "guard", "rejected": result.method,
                                "input_valid_auc": round(base, 6),
                                "stage_valid_auc": round(new, 6)})
        # the cached outcome is keyed without provenance, so it still serves this spec
        return spec
