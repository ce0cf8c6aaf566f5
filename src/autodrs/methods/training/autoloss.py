"""AutoLoss (Zhao et al., KDD 2021): per-sample loss search.

A controller maps each example's (label, prediction) to Gumbel-softmax weights ``p`` over
candidate losses; the recommender is trained on ``sum_l p_l * loss_l``. The controller is
updated on validation batches through a one-step look-ahead of the recommender's weights:
``w' = w - xi * grad_w L_train(w, p)``, then ``grad_controller BCE_valid(w')`` (the
validation BCE depends on the controller only through ``w'``, so a plain first-order
step would give it no gradient).

What it delivers is the controller: the spec's loss becomes ``LossSpec("autoloss")`` with
the trained controller's weights and final temperature (``autodrs.train.losses``), so the
final retrain trains the recommender with the same per-example loss selection, the
controller frozen at what the search learned. The stage reports the mean weight of each
candidate.
"""

from __future__ import annotations

import time
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from autodrs.data.dataset import Batch, EncodedData
from autodrs.models.builder import CTRModel, build_model, count_parameters
from autodrs.search.base import Method, SearchContext, StageResult, register_method
from autodrs.search.gradient import ArchStep, Temperature, gumbel_softmax
from autodrs.spec import LossSpec
from autodrs.train.losses import MIXTURE_CANDIDATES as CANDIDATES
from autodrs.train.losses import LossController, controller_params
from autodrs.train.trainer import TimeLimit, Trainer


class AutoLossModel(nn.Module):
    """A recommender trained with a per-sample mixture of candidate losses."""

    def __init__(self, model: CTRModel, candidates: list[str], temperature: Temperature) -> None:
        super().__init__()
        self.model = model
        self.spec = model.spec
        self.embedding = model.embedding
        self.candidates = candidates
        self.controller = LossController(len(candidates))
        self.temperature = temperature
        self.weight_sum = torch.zeros(len(candidates))
        self.weight_count = 0

    def forward(self, batch: Batch) -> torch.Tensor:
        return self.model(batch)

    def mixture(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        scores = self.controller(y, torch.sigmoid(logits).detach())
        return gumbel_softmax(scores, self.temperature.value, training=self.training)

    def mixed_loss(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        p = self.mixture(logits, y)
        losses = torch.stack([CANDIDATES[c](logits, y) for c in self.candidates], dim=1)
        return (p * losses).sum(1).mean()

    def training_loss(self, logits: torch.Tensor, batch: Batch) -> torch.Tensor:
        assert batch.label is not None
        with torch.no_grad():
            p = self.mixture(logits, batch.label)
            self.weight_sum += p.sum(0)
            self.weight_count += len(p)
        return self.mixed_loss(logits, batch.label)

    def mean_weights(self) -> dict[str, float]:
        """Mean Gumbel-softmax weight of each candidate over all training examples seen."""
        mean = self.weight_sum / max(1, self.weight_count)
        return {c: float(w) for c, w in zip(self.candidates, mean, strict=True)}

    @torch.no_grad()
    def final_weights(self, data: EncodedData, batch_size: int = 16_384) -> dict[str, float]:
        """Mean noise-free weight of each candidate over ``data`` at the end of training."""
        was_training = self.training
        self.eval()
        total = torch.zeros(len(self.candidates))
        for batch in data.batches(batch_size):
            assert batch.label is not None
            total += self.mixture(self.model(batch), batch.label).sum(0)
        self.train(was_training)
        mean = total / len(data)
        return {c: float(w) for c, w in zip(self.candidates, mean, strict=True)}


def lookahead_loss(wrapper: AutoLossModel, train_batch: Batch, valid_batch: Batch,
                   xi: float) -> torch.Tensor:
    """Validation BCE after one virtual SGD step of the recommender on the mixed loss."""
    model = wrapper.model
    names, params = zip(*[(n, p) for n, p in model.named_parameters() if p.requires_grad],
                        strict=True)
    assert train_batch.label is not None and valid_batch.label is not None
    logits = model(train_batch)
    train_loss = wrapper.mixed_loss(logits, train_batch.label)
    grads = torch.autograd.grad(train_loss, params, create_graph=True, allow_unused=True)
    stepped = {n: p - xi * g if g is not None else p
               for n, p, g in zip(names, params, grads, strict=True)}
    valid_logits = functional_call(model, stepped, (valid_batch,))
    return F.binary_cross_entropy_with_logits(valid_logits, valid_batch.label)


class _ControllerStep(ArchStep):
    """Bi-level controller step that needs the current training batch for the look-ahead."""

    def __init__(self, wrapper: AutoLossModel, xi: float, **kwargs: Any) -> None:
        self._train_batch: Batch | None = None
        super().__init__(loss_fn=self._loss, **kwargs)
        self.wrapper = wrapper
        self.xi = xi

    def _loss(self, model: nn.Module, valid_batch: Batch) -> torch.Tensor:
        assert self._train_batch is not None
        return lookahead_loss(self.wrapper, self._train_batch, valid_batch, self.xi)

    def on_step(self, trainer: Trainer, model: nn.Module, step: int, batch: Batch,
                loss: torch.Tensor) -> None:
        self._train_batch = batch
        super().on_step(trainer, model, step, batch, loss)


@register_method
class AutoLoss(Method):
    name = "autoloss"
    component = "training"
    strategies = ("gradient",)

    def search(self, ctx: SearchContext) -> StageResult:
        strategy = self.resolve_strategy(ctx)
        t0 = time.perf_counter()
        opts = ctx.options
        candidates = list(opts.get("candidates", ["bce", "focal", "hinge", "squared"]))
        unknown = [c for c in candidates if c not in CANDIDATES]
        if unknown:
            raise ValueError(f"unknown AutoLoss candidates {unknown}; use {sorted(CANDIDATES)}")
        config = ctx.train
        torch.manual_seed(config.seed)
        ds = ctx.dataset
        temperature = Temperature()
        wrapper = AutoLossModel(build_model(ds.schema, ctx.spec), candidates, temperature)
        hook = _ControllerStep(
            wrapper, xi=float(opts.get("xi", config.lr)),
            optimizer=torch.optim.Adam(wrapper.controller.parameters(),
                                       lr=float(opts.get("controller_lr", 1e-2))),
            mode="bilevel", every=int(opts.get("every", 10)), valid=ds.valid,
            batch_size=config.batch_size, seed=config.seed, temperatures=[temperature])
        trainer = Trainer(config, [hook, TimeLimit(ctx.remaining)])
        fit = trainer.fit(wrapper, ds.train, ds.valid,
                          parameters=list(wrapper.model.parameters()))
        weights = wrapper.final_weights(ds.valid)
        ranking = sorted(weights, key=lambda c: -weights[c])
        spec = ctx.spec.copy(loss=LossSpec(name="autoloss", params=controller_params(
            wrapper.controller, candidates, temperature.value)))
        spec.provenance.append({"method": self.name, "decided": "loss",
                                "mean_weights": weights})
        spec.validate(ds.schema)
        metrics = {"valid": fit.valid, "test": trainer.evaluate(wrapper, ds.test)}
        return StageResult(
            method=self.name, strategy=strategy, spec=spec, ranking=ranking, scores=weights,
            seconds=time.perf_counter() - t0,
            extra={"metrics": metrics, "params": count_parameters(wrapper.model),
                   "controller_steps": hook.arch_steps,
                   "mean_training_weights": wrapper.mean_weights(),
                   "final_temperature": temperature.value},
        )

