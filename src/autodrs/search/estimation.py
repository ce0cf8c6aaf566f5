"""Cheap performance estimation for black-box trials.

- data subsampling: a trial trains on a seeded subset of train (``subsample``);
- low fidelity: few epochs, patience 1 (``low_fidelity``);
- pruning: per-epoch validation AUC reported to the Optuna trial, which a median,
  successive-halving or Hyperband pruner may stop (``ReportToTrial``);
- warm start: a candidate starts from the matching weights of a trained parent
  (``inherit_weights``);
- weight sharing: a candidate is scored by a trained supernet pinned to its subnet, with no
  training at all (``weight_sharing_evaluator``).

``Estimator`` combines them into the default ``evaluate`` of ``run_blackbox``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import optuna
import torch
from torch import nn

from autodrs.data.dataset import Dataset, EncodedData
from autodrs.experiment import with_training
from autodrs.models.builder import CTRModel, build_model, count_bytes, count_parameters
from autodrs.search.base import COST_OBJECTIVES, SearchContext, SearchError, Supernet, option
from autodrs.spec import ArchSpec
from autodrs.train.trainer import TrainConfig, Trainer, TrainHook, TrainResult

OBJECTIVES = ("auc", "logloss", *COST_OBJECTIVES)
Evaluate = Callable[[ArchSpec, optuna.Trial], float | tuple[float, ...]]


def subsample(data: EncodedData, size: float | int | None, seed: int) -> EncodedData:
    """A seeded random subset: ``size`` <= 1 is a fraction of the rows, > 1 a row count."""
    if size is None:
        return data
    n = len(data)
    if size <= 0:
        raise SearchError(f"subsample must be > 0 (a fraction or a row count), got {size}")
    rows = round(n * size) if size <= 1 else min(n, int(size))
    if rows >= n:
        return data
    idx = torch.randperm(n, generator=torch.Generator().manual_seed(seed))[: max(1, rows)]
    return data.subset(idx.sort().values)


def low_fidelity(config: TrainConfig, epochs: int | None = None) -> TrainConfig:
    """The trial's training config: at most ``epochs`` epochs, patience 1, no progress bar."""
    epochs = config.epochs if epochs is None else max(1, min(epochs, config.epochs))
    return replace(config, epochs=epochs, patience=1, progress=False, checkpoint=None)


class ReportToTrial(TrainHook):
    """Reports each epoch's validation AUC to an Optuna trial and stops the training
    (``optuna.TrialPruned``) when the study's pruner says so."""

    def __init__(self, trial: optuna.Trial) -> None:
        self.trial = trial

    def on_epoch_end(self, trainer: Trainer, model: nn.Module, epoch: int,
                     metrics: dict[str, float]) -> None:
        self.trial.report(float(metrics["auc"]), epoch)
        if self.trial.should_prune():
            raise optuna.TrialPruned(f"pruned after epoch {epoch} (valid AUC "
                                     f"{metrics['auc']:.4f})")


class BudgetExhausted(optuna.TrialPruned):
    """The search's wall-time budget ran out during a trial."""


class Deadline(TrainHook):
    """Stops a trial when the search's budget is spent, so the search ends on time; with a
    ``reserve``, as soon as only that many seconds are left (time kept for a final fit)."""

    def __init__(self, ctx: SearchContext, reserve: float = 0.0) -> None:
        self.ctx = ctx
        self.reserve = reserve

    def on_step(self, trainer: Trainer, model: nn.Module, step: int, batch: Any,
                loss: torch.Tensor) -> None:
        left = self.ctx.remaining()
        if left is not None and left <= self.reserve:
            raise BudgetExhausted("the search budget ran out during this trial" if
                                  self.reserve <= 0 else
                                  f"only the {self.reserve:.0f} s kept for the final fit are left")


def inherit_weights(model: nn.Module, state: dict[str, torch.Tensor],
                    slice_larger: bool = True) -> int:
    """Warm start: copy every tensor of ``state`` whose name matches one of ``model``'s and
    whose shape is equal (or, with ``slice_larger``, larger in every dim: the leading slice
    is copied). Returns the number of tensors copied."""
    own = model.state_dict()
    copied = 0
    with torch.no_grad():
        for name, target in own.items():
            source = state.get(name)
            if source is None or source.dim() != target.dim():
                continue
            if source.shape == target.shape:
                target.copy_(source)
            elif slice_larger and all(s >= t for s, t in zip(source.shape, target.shape,
                                                               strict=True)):
                target.copy_(source[tuple(slice(0, t) for t in target.shape)])
            else:
                continue
            copied += 1
    return copied


def train_candidate(ds: Dataset, spec: ArchSpec, config: TrainConfig, train: EncodedData,
                    valid: EncodedData, hooks: list[TrainHook] | None = None,
                    parent: dict[str, torch.Tensor] | None = None
                    ) -> tuple[CTRModel, TrainResult]:
    """Build and train one candidate on (possibly subsampled) data; optionally warm-started
    from a parent's weights."""
    config = with_training(config, spec)
    torch.manual_seed(config.seed)
    model = build_model(ds.schema, spec)
    if parent is not None:
        inherit_weights(model, parent)
    fit = Trainer(config, hooks or []).fit(model, train, valid)
    return model, fit


def latency_ms(model: nn.Module, data: EncodedData, rows: int = 1024, repeats: int = 3) -> float:
    """Median wall time of one forward pass over ``rows`` rows, in milliseconds."""
    batch = data.batch(slice(0, rows))
    model.eval()
    times = []
    with torch.no_grad():
        for _ in range(repeats):
            t0 = time.perf_counter()
            model(batch)
            times.append((time.perf_counter() - t0) * 1000)
    return sorted(times)[len(times) // 2]


def cost(model: nn.Module, name: str, data: EncodedData) -> float:
    """One cost objective of a model (``base.COST_OBJECTIVES``): parameter or stored-byte
    counts, or the forward latency on ``data``'s first rows."""
    if name == "embedding_params":
        return float(count_parameters(model)["embedding"])
    if name == "params":
        return float(count_parameters(model)["total"])
    if name == "embedding_bytes":
        return float(count_bytes(model)["embedding"])
    if name == "bytes":
        return float(count_bytes(model)["total"])
    if name == "latency_ms":
        return latency_ms(model, data)
    raise SearchError(f"unknown cost objective {name!r}; choose from "
                      f"{', '.join(COST_OBJECTIVES)}")


class Estimator:
    """The default trial evaluation: train the candidate spec at low fidelity on a subsample
    of train, report per-epoch validation AUC for pruning, stop at the budget, and return
    the requested objectives (validation AUC by default).

    Options read from ``ctx.options``: ``subsample`` (default 1.0, or 0.5 with ``fast``),
    ``epochs`` (default min(train epochs, 3), 1 with ``fast``), ``warm_start``.
    """

    def __init__(self, ctx: SearchContext, objectives: tuple[str, ...] = ("auc",)) -> None:
        unknown = [o for o in objectives if o not in OBJECTIVES]
        if unknown:
            raise SearchError(f"unknown objective {unknown[0]!r}; choose from "
                              f"{', '.join(OBJECTIVES)}")
        self.ctx = ctx
        self.objectives = objectives
        size = option(ctx, "subsample", 0.5 if ctx.fast else None)
        self.train = subsample(ctx.dataset.train, size, ctx.seed)
        self.valid = ctx.dataset.valid
        epochs = option(ctx, "epochs", 1 if ctx.fast else min(ctx.train.epochs, 3), int)
        self.config = low_fidelity(ctx.train, epochs)
        self.warm_start = bool(ctx.options.get("warm_start") or False)
        self._parent: dict[str, torch.Tensor] | None = None

    def parent_state(self) -> dict[str, torch.Tensor]:
        """The weights of ``ctx.spec`` trained once at the same fidelity (for warm start)."""
        if self._parent is None:
            model, _ = train_candidate(self.ctx.dataset, self.ctx.spec, self.config,
                                       self.train, self.valid)
            self._parent = {k: v.detach().clone() for k, v in model.state_dict().items()}
        return self._parent

    def __call__(self, spec: ArchSpec, trial: optuna.Trial) -> float | tuple[float, ...]:
        hooks: list[TrainHook] = [Deadline(self.ctx)]
        if len(self.objectives) == 1:
            hooks.append(ReportToTrial(trial))
        parent = self.parent_state() if self.warm_start else None
        model, fit = train_candidate(self.ctx.dataset, spec, self.config, self.train,
                                     self.valid, hooks, parent)
        counts = count_parameters(model)
        trial.set_user_attr("valid", fit.valid)
        trial.set_user_attr("model_params", counts)
        trial.set_user_attr("epochs", len(fit.history))
        values = [float(fit.valid[name]) if name in ("auc", "logloss")
                  else cost(model, name, self.valid) for name in self.objectives]
        return values[0] if len(values) == 1 else tuple(values)


def with_costs(score: Evaluate, ds: Dataset, objectives: tuple[str, ...]) -> Evaluate:
    """``score`` (validation AUC of a candidate, e.g. by weight sharing) followed by the
    cost objectives of the candidate's model, built untrained (counts and latency do not
    depend on the weights)."""
    costs = objectives[1:]
    if not costs:
        return score

    def evaluate(spec: ArchSpec, trial: optuna.Trial) -> tuple[float, ...]:
        auc = score(spec, trial)
        model = build_model(ds.schema, spec)
        return (float(auc if not isinstance(auc, tuple) else auc[0]),
                *(cost(model, name, ds.valid) for name in costs))

    return evaluate


def weight_sharing_evaluator(supernet: Supernet, valid: EncodedData,
                             config: TrainConfig) -> Evaluate:
    """Score candidates by the trained ``supernet`` pinned to each candidate's subnet
    (validation AUC, no training). The candidate's decision is read from the trial's
    ``decision`` user attribute, which ``run_blackbox`` sets before evaluating."""
    trainer = Trainer(replace(config, progress=False))

    def evaluate(spec: ArchSpec, trial: optuna.Trial) -> float:
        decision = trial.user_attrs.get("decision")
        if decision is None:
            raise SearchError("weight sharing needs the trial's decision (run it through "
                              "run_blackbox)")
        with supernet.fixed(decision):
            return float(trainer.evaluate(supernet, valid)["auc"])

    return evaluate
