"""Candidate training losses on logits (the AutoLoss candidates, and the default BCE), and
the AutoLoss mixture: a searched controller that weights the candidates per example.

``LossSpec(name="autoloss", params={"candidates": [...], "temperature": t, "hidden": h,
"controller": {...}})`` is what the AutoLoss stage delivers: the trained controller (an MLP
over each example's label and predicted probability) in JSON, so a retrain of the spec
trains with the same per-example loss selection the search learned, the controller frozen.
Its weights are the noise-free ``softmax(scores / t)`` at the search's final temperature.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

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


def flipped(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """A deliberately harmful AutoLoss candidate (BCE against the flipped label): a
    controller that learns should give it no weight."""
    return F.binary_cross_entropy_with_logits(logits, 1 - y, reduction="none")


PER_SAMPLE_LOSSES: dict[str, LossFn] = {
    "bce": bce, "focal": focal, "hinge": smoothed_hinge, "squared": squared,
}
# what an AutoLoss controller may mix (``flipped`` only there: it is no loss to train with)
MIXTURE_CANDIDATES: dict[str, LossFn] = PER_SAMPLE_LOSSES | {"flipped": flipped}


class LossController(nn.Module):
    """MLP over (label, predicted probability) -> scores over candidate losses."""

    def __init__(self, n_losses: int, hidden: int = 16) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(2, hidden), nn.ReLU(), nn.Linear(hidden, n_losses))

    def forward(self, y: torch.Tensor, prob: torch.Tensor) -> torch.Tensor:
        return self.net(torch.stack([y, prob], dim=1))


def controller_params(controller: LossController, candidates: list[str],
                      temperature: float) -> dict[str, Any]:
    """The ``LossSpec.params`` of an AutoLoss mixture: the controller's weights as lists."""
    return {"candidates": list(candidates), "temperature": float(temperature),
            "hidden": int(controller.net[0].out_features),
            "controller": {k: v.detach().cpu().tolist()
                           for k, v in controller.state_dict().items()}}


def load_controller(params: dict[str, Any]) -> tuple[LossController, list[str], float]:
    """The frozen controller, candidates and temperature of an AutoLoss mixture's params;
    ``ValueError`` naming what is wrong with them."""
    candidates = params.get("candidates")
    if not isinstance(candidates, list) or not candidates:
        raise ValueError("an autoloss loss needs params.candidates, a list of losses")
    unknown = [c for c in candidates if c not in MIXTURE_CANDIDATES]
    if unknown:
        raise ValueError(f"unknown autoloss candidates {unknown}; use "
                         f"{', '.join(MIXTURE_CANDIDATES)}")
    try:
        temperature = float(params.get("temperature", 1.0))
        hidden = int(params.get("hidden", 16))
    except (TypeError, ValueError) as e:
        raise ValueError(f"autoloss params temperature/hidden must be numbers: {e}") from e
    if not temperature > 0 or hidden < 1:
        raise ValueError("autoloss params need temperature > 0 and hidden >= 1")
    controller = LossController(len(candidates), hidden)
    state = params.get("controller")
    if not isinstance(state, dict):
        raise ValueError("an autoloss loss needs params.controller, the controller's weights")
    try:
        controller.load_state_dict({k: torch.tensor(v, dtype=torch.float32)
                                    for k, v in state.items()})
    except (RuntimeError, TypeError, ValueError) as e:
        raise ValueError(f"autoloss params.controller does not fit {len(candidates)} "
                         f"candidates and hidden={hidden}: {e}") from e
    controller.requires_grad_(False)
    return controller.eval(), list(candidates), temperature


def mixture_weights(controller: LossController, temperature: float, logits: torch.Tensor,
                    y: torch.Tensor) -> torch.Tensor:
    """Per-example weights ``[B, L]`` of a frozen controller (noise-free, at ``temperature``)."""
    with torch.no_grad():
        scores = controller.to(logits.device)(y.float(), torch.sigmoid(logits.detach().float()))
        return torch.softmax(scores / temperature, dim=1)


def mixture_loss(params: dict[str, Any]) -> LossFn:
    """The AutoLoss mixture ``mean_b sum_l p_l(y_b, p_b) * loss_l(b)`` of a searched
    controller."""
    controller, candidates, temperature = load_controller(params)
    fns = [MIXTURE_CANDIDATES[c] for c in candidates]

    def loss(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        p = mixture_weights(controller, temperature, logits, y)
        losses = torch.stack([fn(logits, y) for fn in fns], dim=1)
        return (p * losses).sum(1).mean()

    return loss


def make_loss(name: str, params: dict[str, Any] | None = None) -> LossFn:
    """A mean-reduced loss by name (``autoloss``: a searched mixture, see the module)."""
    if name == "autoloss":
        return mixture_loss(params or {})
    if name not in PER_SAMPLE_LOSSES:
        raise ValueError(f"unknown loss {name!r}; choose from {', '.join(PER_SAMPLE_LOSSES)}, "
                         "autoloss")
    fn = PER_SAMPLE_LOSSES[name]
    kwargs = dict(params or {})
    return lambda logits, y: fn(logits, y, **kwargs).mean()
