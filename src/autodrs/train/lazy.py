"""Lazy Adam for embedding tables (``TrainConfig.lazy_tables``, opt-in).

A dense Adam steps every row of a table at every step: a row whose value is not in the batch
still moves by its momentum and, with weight decay, shrinks by about the learning rate a step
whatever the decay's size (Adam normalises it). With heavy-tailed vocabularies a rare value's
row is then driven to zero between its appearances. ``LazyAdam`` steps a lookup table's rows
only when they have a gradient: a row of a 2-d table (an entry of a 1-d kept-entries table)
with any non-zero gradient is a row in the batch. Its moments, its coupled L2 decay and its
bias correction (a step count per row) see only the steps it was in, as if Adam had been run
on that row's batches alone. Every other parameter takes plain Adam steps (coupled L2, as
``torch.optim.Adam``)."""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn


def lookup_parameters(model: nn.Module) -> list[nn.Parameter]:
    """The model's lookup tables: every ``nn.Embedding``'s weight, the kept values of pruned
    tables (``nn.pruned``) and whatever a module lists in a ``lookup_parameters()`` method
    (searched embeddings whose tables are plain parameters, e.g. PEP's)."""
    from autodrs.nn.pruned import PrunedColumn, PrunedTable

    found: dict[int, nn.Parameter] = {}
    for module in model.modules():
        if isinstance(module, nn.Embedding):
            found[id(module.weight)] = module.weight
        elif isinstance(module, PrunedTable | PrunedColumn):
            found[id(module.values)] = module.values
        own = getattr(module, "lookup_parameters", None)
        if callable(own) and module is not model:
            for p in own():
                found[id(p)] = p
    return list(found.values())


def touched(grad: torch.Tensor) -> torch.Tensor:
    """Indices (along dim 0) of the rows of ``grad`` with a non-zero entry."""
    nonzero = grad.ne(0)
    if grad.dim() > 1:
        nonzero = nonzero.flatten(1).any(1)
    return nonzero.nonzero().squeeze(1)


class LazyAdam(torch.optim.Optimizer):
    """Adam; the parameters in ``lazy`` step only the rows that have a gradient."""

    def __init__(
        self,
        params: Iterable[nn.Parameter] | Iterable[dict],
        lazy: Iterable[nn.Parameter],
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
    ) -> None:
        super().__init__(
            params, {"lr": lr, "betas": betas, "eps": eps, "weight_decay": weight_decay}
        )
        self.lazy = {id(p) for p in lazy}

    @torch.no_grad()
    def step(self, closure=None):  # type: ignore[no-untyped-def]
        loss = closure() if closure is not None else None
        for group in self.param_groups:
            b1, b2 = group["betas"]
            lr, eps, wd = group["lr"], group["eps"], group["weight_decay"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if not state:
                    state["m"] = torch.zeros_like(p)
                    state["v"] = torch.zeros_like(p)
                    state["steps"] = torch.zeros(
                        p.shape[:1] if id(p) in self.lazy else (), device=p.device
                    )
                m, v, steps = state["m"], state["v"], state["steps"]
                if id(p) not in self.lazy:
                    g = p.grad + wd * p if wd else p.grad
                    steps += 1
                    m.mul_(b1).add_(g, alpha=1 - b1)
                    v.mul_(b2).addcmul_(g, g, value=1 - b2)
                    k = float(steps)
                    denom = (v / (1 - b2**k)).sqrt_().add_(eps)
                    p.addcdiv_(m, denom, value=-lr / (1 - b1**k))
                    continue
                rows = touched(p.grad)
                if rows.numel() == 0:
                    continue
                g = p.grad.index_select(0, rows)
                w = p.index_select(0, rows)
                if wd:
                    g = g + wd * w
                k = steps.index_select(0, rows) + 1
                steps.index_copy_(0, rows, k)
                m_rows = m.index_select(0, rows).mul_(b1).add_(g, alpha=1 - b1)
                v_rows = v.index_select(0, rows).mul_(b2).addcmul_(g, g, value=1 - b2)
                m.index_copy_(0, rows, m_rows)
                v.index_copy_(0, rows, v_rows)
                shape = (-1,) + (1,) * (p.dim() - 1)
                c1 = (1 - b1**k).view(shape)
                c2 = (1 - b2**k).view(shape)
                update = (m_rows / c1) / ((v_rows / c2).sqrt_().add_(eps))
                p.index_copy_(0, rows, w - lr * update)
        return loss
