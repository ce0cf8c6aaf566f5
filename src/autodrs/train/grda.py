"""GRDA: generalized regularized dual averaging (Chao, Wang, Xing, Cheng; "Directional
pruning of deep neural networks", NeurIPS 2020), the sparsity-inducing optimiser AutoFIS
trains its interaction gates with (Liu et al., KDD 2020).

Per parameter, with learning rate gamma, step t = 0, 1, ... and gradient g_t:

    v_t   = v_{t-1} + 1[t = 0] * w_0 - gamma * g_t          (dual accumulator, v_{-1} = 0)
    l1(t) = c * gamma^(0.5 + mu) * (t + 1)^mu               (soft threshold, grows with t)
    w_t   = sign(v_t) * max(|v_t| - l1(t), 0)

Unlike a proximal step on ``w``, the threshold applies to the *accumulated* gradient, so a
weight that no gradient keeps pushing away from zero is set to exactly zero and stays
there, while one with a consistent gradient survives: exact zeros, not small values.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch


class GRDA(torch.optim.Optimizer):
    """GRDA optimiser: dual averaging with a growing l1 threshold (see module docstring).

    ``c`` scales the threshold and ``mu`` (in (0.5, 1)) sets how fast it grows; AutoFIS uses
    ``lr=1.0, c=5e-4, mu=0.8`` on DeepFM and ``c=5e-3, mu=0.6`` on FM.
    """

    def __init__(self, params: Iterable[torch.nn.Parameter] | Iterable[dict[str, Any]],
                 lr: float = 1.0, c: float = 5e-4, mu: float = 0.8) -> None:
        if lr <= 0:
            raise ValueError(f"GRDA learning rate must be > 0, got {lr}")
        if c < 0:
            raise ValueError(f"GRDA c must be >= 0, got {c}")
        if not 0.0 < mu < 1.0:
            raise ValueError(f"GRDA mu must be in (0, 1), got {mu}")
        super().__init__(params, {"lr": lr, "c": c, "mu": mu})

    def threshold(self, group: dict[str, Any], step: int) -> float:
        """l1(t) at step ``t`` (0-based) for a parameter group."""
        return group["c"] * group["lr"] ** (0.5 + group["mu"]) * (step + 1) ** group["mu"]

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:  # type: ignore[override]
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if not state:
                    # the 1[t = 0] * w_0 term: the accumulator starts from the initial weights
                    state["step"] = 0
                    state["accumulator"] = p.detach().clone()
                v = state["accumulator"]
                v.add_(p.grad, alpha=-group["lr"])
                l1 = self.threshold(group, state["step"])
                p.copy_(torch.sign(v) * (v.abs() - l1).clamp_(min=0.0))
                state["step"] += 1
        return loss
