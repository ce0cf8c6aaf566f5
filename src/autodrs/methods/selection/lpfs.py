"""LPFS (Guo, Liu, Tan, et al.; KDD 2022, "LPFS: Learnable Polarizing Feature Selection for
Click-Through Rate Prediction"), as ERASE re-implements it (the LPFS++ gate).

Each field f has a learnable ``x_f`` (initialised to 1) and scales its outputs by the
smoothed-L0 gate ``g(x) = sign(x) x^2 / (x^2 + eps) + alpha eps^(1/tau) atan(x)``
(alpha 10, tau 2). ``eps`` starts at ``epsilon`` (0.1) and is multiplied by ``eps_decay``
(0.9978) every 100 weight steps, so the gate polarises towards 0 or 1 as training goes on.
The gates learn with the model, single-level (``gates.train_gated``), and after each of
their Adam steps a proximal L1 step zeroes the small ones:
``x <- sign(x) max(|x| - l1 * gate_lr, 0)``. Fields are ranked by ``x``; the shared ERASE
rule picks the subset, retrained from scratch.

Options: ``search_epochs`` (1, as AutoField: every batch new to the model, so a gate
measures the field's use, not how well its embedding memorised the training rows), ``gate_lr`` (the training lr), ``epsilon``
(0.1), ``eps_decay`` (0.9978), ``l1`` (0.01).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from autodrs.data.dataset import Batch
from autodrs.methods.selection.common import FieldScores, SelectionMethod, option
from autodrs.methods.selection.gates import FieldGate, epoch_seconds, train_gated
from autodrs.search.base import SearchContext, SearchError, register_method

ALPHA, TAU, EPS_EVERY = 10.0, 2.0, 100


def polarizing_gate(x: torch.Tensor, eps: float) -> torch.Tensor:
    """LPFS++'s gate: ``sign(x) x^2 / (x^2 + eps) + ALPHA eps^(1/TAU) atan(x)``."""
    smooth_l0 = x * x / (x * x + eps)
    slope = ALPHA * eps ** (1.0 / TAU) * torch.atan(x)
    return torch.where(x > 0, slope + smooth_l0, slope - smooth_l0)


class PolarizingGate(FieldGate):
    def __init__(self, n_fields: int, eps: float) -> None:
        super().__init__(n_fields)
        self.x = nn.Parameter(torch.ones(n_fields))
        self.eps = eps

    def forward(self, embeddings: list[torch.Tensor], batch: Batch) -> torch.Tensor:
        return polarizing_gate(self.x, self.eps)

    def scores(self) -> torch.Tensor:
        return self.x.detach().clone()

    @torch.no_grad()
    def proximal(self, shrink: float) -> None:
        self.x.copy_(torch.sign(self.x) * torch.clamp(self.x.abs() - shrink, min=0.0))


@register_method
class LPFS(SelectionMethod):
    name = "lpfs"
    strategies = ("gradient",)

    def score_fields(self, ctx: SearchContext, fields: list[str], strategy: str) -> FieldScores:
        eps = option(ctx, "epsilon", 0.1)
        decay = option(ctx, "eps_decay", 0.9978)
        l1 = option(ctx, "l1", 0.01)
        if eps <= 0 or not 0 < decay <= 1 or l1 < 0:
            raise SearchError(f"LPFS needs epsilon > 0, eps_decay in (0, 1] and l1 >= 0; got "
                              f"{eps}, {decay}, {l1}")
        gate = PolarizingGate(len(fields), eps)
        shrink = l1 * option(ctx, "gate_lr", ctx.train.lr)

        def after_step(step: int) -> None:
            gate.proximal(shrink)
            if step % EPS_EVERY == 0:
                gate.eps *= decay

        gated, fit, steps = train_gated(ctx, fields, gate, 1, after_step)
        x = gate.scores()
        return FieldScores(scores=dict(zip(fields, x.tolist(), strict=True)), extra={
            "gate": dict(zip(fields, polarizing_gate(x, gate.eps).tolist(), strict=True)),
            "epsilon": gate.eps, "zeroed": [f for f, v in zip(fields, x.tolist(), strict=True)
                                            if v == 0.0 or not math.isfinite(v)],
            "gate_steps": steps.steps, "search_valid_auc": fit.valid["auc"],
            "epoch_seconds": epoch_seconds(fit)})
