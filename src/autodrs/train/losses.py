"""Candidate training losses on logits (the AutoLoss candidates, and the default BCE)."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def bce(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return F.binary_cross_entropy_with_logits(logits, y, reduction="none")


def focal(logits: torch.Tensor, y: torch.Tensor, gamma: float = 2.0) -> torch.Tensor:
    p = torch.sigmoid(logits)
    pt = torch.where(y > 0.5, p, 1 - p)
    return (1 - pt).pow(gamma) * bce(logits, y)


def smoothed_hinge(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    margin = (2 * y - 1) * logits
    return torch.where(margin >= 1, torch.zeros_like(margin),
                       torch.where(margin <= 0, 0.5 - margin, 0.5 * (1 - margin) ** 2))


def squared(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return (torch.sigmoid(logits) - y).pow(2)


PER_SAMPLE_LOSSES: dict[str, LossFn] = {
    "bce": bce, "focal": focal, "hinge": smoothed_hinge, "squared": squared,
}


def make_loss(name: str, params: dict[str, float] | None = None) -> LossFn:
    """A mean-reduced loss by name."""
    if name not in PER_SAMPLE_LOSSES:
        raise ValueError(f"unknown loss {name!r}; choose from {', '.join(PER_SAMPLE_LOSSES)}")
    fn = PER_SAMPLE_LOSSES[name]
    kwargs = dict(params or {})
    return lambda logits, y: fn(logits, y, **kwargs).mean()
