"""One-shot gradient search: temperature schedules, Gumbel relaxations and the
architecture-step hook that turns the Trainer into a DARTS-style search loop.

Whether architecture steps use a validation batch every k weight steps (first-order
bi-level DARTS: AutoField, AdaFS, AutoDim) or the same training batch (single level:
AutoFIS, AutoGroup, OptInter) is a per-method setting (``ArchStep.mode``), never hard-coded.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from autodrs.data.dataset import Batch, EncodedData
from autodrs.train.trainer import Trainer, TrainHook


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
