"""One-shot gradient search: temperature schedules, Gumbel relaxations and the
architecture-step hook that turns the Trainer into a DARTS-style search loop.

Whether architecture steps use a validation batch every k weight steps (first-order
bi-level DARTS: AutoField, AdaFS, AutoDim) or the same training batch (single level:
AutoFIS, AutoGroup, OptInter) is a per-method setting (``ArchStep.mode``), never hard-coded.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from autodrs.data.dataset import Batch, EncodedData
from autodrs.search.base import SearchContext, SearchError, SearchSpace, Supernet, option
from autodrs.spec import ArchSpec
from autodrs.train.losses import make_loss
from autodrs.train.trainer import Trainer, TrainHook, TrainResult


@dataclass
class Temperature:
    """tau(t) = max(floor, start - decay * t), with t counted per architecture-relevant
    optimiser step (not per forward call; see methods.md, checklist item 2)."""

    start: float = 1.0
    decay: float = 5e-5
    floor: float = 0.01
    step: int = 0

    @property
    def value(self) -> float:
        return max(self.floor, self.start - self.decay * self.step)

    def advance(self) -> None:
        self.step += 1


def gumbel_softmax(logits: torch.Tensor, tau: float, hard: bool = False,
                   training: bool = True) -> torch.Tensor:
    """Gumbel-softmax over the last dim; without noise (plain softmax) when not training.
    ``hard`` gives the straight-through estimator (one-hot forward, soft gradient)."""
    if training:
        return F.gumbel_softmax(logits, tau=tau, hard=hard, dim=-1)
    soft = torch.softmax(logits / tau, dim=-1)
    if not hard:
        return soft
    index = soft.argmax(-1, keepdim=True)
    return torch.zeros_like(soft).scatter_(-1, index, 1.0)


def straight_through(soft: torch.Tensor) -> torch.Tensor:
    """Hard one-hot in the forward pass, gradient of ``soft`` in the backward pass."""
    index = soft.argmax(-1, keepdim=True)
    hard = torch.zeros_like(soft).scatter_(-1, index, 1.0)
    return (hard - soft).detach() + soft


def cycle_batches(data: EncodedData, batch_size: int,
                  generator: torch.Generator) -> Iterator[Batch]:
    while True:
        yield from data.batches(batch_size, shuffle=True, generator=generator)


class ArchStep(TrainHook):
    """Updates architecture parameters inside the Trainer's loop.

    ``mode="bilevel"``: every ``every`` weight steps, one step of ``optimizer`` on the loss
    of one *validation* batch (first-order DARTS). ``mode="same_batch"``: after every weight
    step, one step on the loss of the same training batch (single-level). ``loss_fn`` maps
    (model, batch) to the architecture loss; temperatures advance once per weight step.
    """

    def __init__(self, optimizer: torch.optim.Optimizer,
                 loss_fn: Callable[[nn.Module, Batch], torch.Tensor],
                 mode: str = "bilevel", every: int = 10, valid: EncodedData | None = None,
                 batch_size: int = 1024, seed: int = 0,
                 temperatures: list[Temperature] | None = None) -> None:
        if mode not in ("bilevel", "same_batch"):
            raise ValueError(f"unknown architecture-step mode {mode!r}")
        if mode == "bilevel" and valid is None:
            raise ValueError("bi-level architecture steps need validation data")
        self.optimizer = optimizer
        self.loss_fn = loss_fn
        self.mode = mode
        self.every = max(1, every)
        self.temperatures = temperatures or []
        self.arch_steps = 0
        self._valid = (cycle_batches(valid, batch_size, torch.Generator().manual_seed(seed))
                       if valid is not None else None)

    def on_step(self, trainer: Trainer, model: nn.Module, step: int, batch: Batch,
                loss: torch.Tensor) -> None:
        for t in self.temperatures:
            t.advance()
        if self.mode == "bilevel":
            if step % self.every:
                return
            assert self._valid is not None
            arch_batch = next(self._valid)
            if trainer.device.type != "cpu":
                arch_batch = arch_batch.to(trainer.device)
        else:
            arch_batch = batch
        self.optimizer.zero_grad(set_to_none=True)
        arch_loss = self.loss_fn(model, arch_batch)
        arch_loss.backward()
        self.optimizer.step()
        self.arch_steps += 1


@dataclass
class GradientResult:
    """What a one-shot search derived, and the trained supernet (for weight sharing)."""

    decision: dict[str, Any]
    spec: ArchSpec
    supernet: Supernet
    fit: TrainResult | None
    arch_steps: int
    stopped_by_budget: bool = False


def run_gradient(space: SearchSpace, ctx: SearchContext, mode: str = "bilevel",
                 every: int = 10, arch_lr: float = 3e-3,
                 epochs: int | None = None) -> GradientResult:
    """One-shot search of ``space``'s relaxed face (DARTS, Liu et al., ICLR 2019, first
    order): weights w take Adam steps on training batches, architecture parameters a take
    steps of their own Adam optimiser on ``grad_a L(w, a)`` over a validation batch every
    ``every`` steps (``bilevel``) or over the same training batch (``same_batch``).
    Temperatures the supernet exposes as ``temperatures`` advance per weight step. The
    decision is ``supernet.derive()``, written into ``ctx.spec`` by ``space.apply``."""
    from autodrs.search.estimation import BudgetExhausted, Deadline, low_fidelity

    torch.manual_seed(ctx.seed)
    supernet = space.supernet(ctx)
    arch = supernet.arch_parameters()
    if not arch:
        raise SearchError(f"the supernet of {space.name!r} has no architecture parameters")
    optimizer = torch.optim.Adam(arch, lr=arch_lr)
    loss = make_loss(ctx.spec.loss.name, ctx.spec.loss.params)

    def arch_loss(model: nn.Module, batch: Batch) -> torch.Tensor:
        value = loss(model(batch), batch.label)
        reg = getattr(model, "regularization", None)
        return value + reg() if reg is not None else value

    default_epochs = 1 if ctx.fast else ctx.train.epochs
    config = low_fidelity(ctx.train, epochs or option(ctx, "epochs", default_epochs, int))
    config = replace(config, patience=max(2, ctx.train.patience))
    hook = ArchStep(optimizer, arch_loss, mode=mode, every=every,
                    valid=ctx.dataset.valid if mode == "bilevel" else None,
                    batch_size=config.batch_size, seed=ctx.seed,
                    temperatures=list(getattr(supernet, "temperatures", [])))
    trainer = Trainer(config, [hook, Deadline(ctx)])
    fit, stopped = None, False
    try:
        fit = trainer.fit(supernet, ctx.dataset.train, ctx.dataset.valid,
                          parameters=supernet.weight_parameters())
    except BudgetExhausted:
        stopped = True  # derive from the architecture parameters reached so far
    decision = supernet.derive()
    spec = space.apply(ctx.spec, decision)
    return GradientResult(decision, spec, supernet, fit, hook.arch_steps, stopped)
