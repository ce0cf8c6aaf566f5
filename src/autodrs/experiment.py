"""Train a spec on a dataset and measure it: the shared path of ``train``, ``bench`` and
every search's final retrain, so baselines and searched models are measured alike.

Inside ``shared_fits()`` a fit is remembered by (dataset, spec as the model sees it,
training config): the same fit asked for again (the pipeline's DeepFM baseline after ERASE
retrained every field, the final retrain of a spec the validation guard already trained)
is returned instead of trained twice. Training is deterministic under the config's seed, so
the reused outcome is the one a second fit would give. Fits a hook stopped early are not
remembered.
"""

from __future__ import annotations

import json
import platform
import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import torch

from autodrs.data.dataset import Dataset
from autodrs.models.builder import CTRModel, build_model, count_parameters
from autodrs.spec import ArchSpec
from autodrs.train.trainer import TrainConfig, TrainHook, TrainResult


@dataclass
class Outcome:
    model: CTRModel
    fit: TrainResult
    metrics: dict[str, dict[str, float]]
    params: dict[str, int]
    seconds: float
    extra: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        return {
            "metrics": self.metrics,
            "params": self.params,
            "best_epoch": self.fit.best_epoch,
            "still_improving": self.fit.still_improving,
            "seconds": round(self.seconds, 3),
            "train_samples_per_second": round(self.fit.samples_per_second, 1),
        }


def still_improving(outcomes: dict[str, Outcome]) -> list[str]:
    """The names of the fits the epoch cap ended while validation AUC still rose."""
    return [name for name, o in outcomes.items() if o.fit.still_improving]


def epoch_cap_note(names: list[str], epochs: int) -> str:
    """The note a command prints for ``still_improving`` fits."""
    return (f"note: {', '.join(names)} validated best at the last of {epochs} epochs, so "
            "they were still improving when training stopped; a larger --epochs may give "
            "a better model (early stopping still picks the best epoch)")


_SHARED: ContextVar[dict[str, tuple[Dataset, Outcome]] | None] = ContextVar(
    "autodrs_shared_fits", default=None)


@contextmanager
def shared_fits() -> Iterator[None]:
    """Within the block, ``fit_spec`` returns a remembered outcome for a fit it has done."""
    token = _SHARED.set({})
    try:
        yield
    finally:
        _SHARED.reset(token)


def fit_key(ds: Dataset, spec: ArchSpec, config: TrainConfig) -> str:
    """What decides a fit's outcome: the spec without its provenance (all fields spelt out)
    and the training config without its display settings."""
    data = spec.to_dict()
    data.pop("provenance", None)
    data["fields"] = spec.used_fields(ds.schema)
    cfg = asdict(config)
    cfg.pop("progress", None)
    return json.dumps([data, cfg], sort_keys=True, default=str)


def cached_fit(ds: Dataset, spec: ArchSpec, config: TrainConfig) -> Outcome | None:
    """The outcome ``fit_spec`` would hand back without training, if ``shared_fits`` holds
    one (None outside the block, or for a fit not done yet)."""
    shared = _SHARED.get()
    if shared is None:
        return None
    entry = shared.get(fit_key(ds, spec, with_training(config, spec)))
    return entry[1] if entry is not None and entry[0] is ds else None


def fit_spec(ds: Dataset, spec: ArchSpec, config: TrainConfig,
             hooks: list[TrainHook] | None = None) -> Outcome:
    """Build ``spec`` over the dataset's schema, train it with early stopping on validation
    AUC, and evaluate the best weights on the validation and test splits."""
    t0 = time.perf_counter()
    config = with_training(config, spec)
    done = cached_fit(ds, spec, config)
    if done is not None:
        return done
    torch.manual_seed(config.seed)
    model = build_model(ds.schema, spec)
    # the spec's training rules (an AdaFS controller's bi-level schedule, lambda-Opt's
    # learned strengths) are followed here, so every fit of a spec trains it the same way
    from autodrs.methods.training.rules import fit_model  # methods import this module

    ruled = fit_model(model, spec, ds, config, hooks or [])
    trainer, fit = ruled.trainer, ruled.fit
    metrics = {"valid": fit.valid, "test": trainer.evaluate(model, ds.test)}
    outcome = Outcome(model=model, fit=fit, metrics=metrics, params=count_parameters(model),
                      seconds=time.perf_counter() - t0)
    shared = _SHARED.get()
    if shared is not None and not fit.stopped_by_hook:
        # holding ds keeps its id from being reused
        shared[fit_key(ds, spec, config)] = (ds, outcome)
    return outcome


# beyond these a model is unreasonable for its data: CTR models are built over tens to
# hundreds of fields, and a model with this many parameters per training row only memorises
MAX_FIELDS = 1000
MAX_PARAMS_PER_ROW = 1000


def scale_warning(ds: Dataset, spec: ArchSpec) -> str | None:
    """A warning when the model ``spec`` implies on this data is unreasonable for its size
    (far more fields than a CTR model handles, or parameters far beyond the training rows),
    saying what training it will mean; None when it is reasonable. The model is built on
    PyTorch's meta device: shapes only, no memory, no time."""
    fields = len(spec.used_fields(ds.schema))
    rows = len(ds.train)
    if fields > MAX_FIELDS:  # unreasonable already; building it would take seconds
        problem = (f"{fields:,} fields for {rows:,} training rows (CTR models are built for "
                   "tens to hundreds of fields)")
    else:
        try:
            with torch.device("meta"):
                params = count_parameters(build_model(ds.schema, spec))["total"]
        except (ValueError, RuntimeError, NotImplementedError):
            return None  # a model the meta device cannot build is measured when trained
        if params <= MAX_PARAMS_PER_ROW * rows:
            return None
        problem = f"{params:,} parameters for {rows:,} training rows ({fields:,} fields)"
    return (f"the model this data implies is unreasonable for its size: {problem}; each "
            "training step touches every field, so an "
            "epoch may take minutes and the model can only memorise the rows. Training goes "
            "on; to avoid this, keep fewer fields (a --schema file with drop:, or "
            "--categorical/--numerical) or use more rows")


def with_training(config: TrainConfig, spec: ArchSpec) -> TrainConfig:
    """``config`` with the training hyper-parameters the spec sets (a searched lr, batch
    size or weight decay) in place of the command's."""
    t = spec.training
    changes = {k: v for k, v in (("lr", t.lr), ("batch_size", t.batch_size),
                                 ("weight_decay", t.weight_decay)) if v is not None}
    return replace(config, **changes) if changes else config


def machine_info(config: TrainConfig | None = None) -> dict[str, Any]:
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "device": config.device if config else "auto",
    }


def config_dict(config: TrainConfig) -> dict[str, Any]:
    return asdict(config)
