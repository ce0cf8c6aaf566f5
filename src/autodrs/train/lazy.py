"""Lazy Adam for embedding tables (``TrainConfig.lazy_tables``, opt-in).

A dense Adam steps every row of a table at every step: a row whose value is not in the batch
still moves by its momentum and, with weight decay, shrinks by about the learning rate a step
whatever the decay's size (Adam normalises it). With heavy-tailed vocabularies a rare value's
row is then driven to zero between its appearances. ``LazyAdam`` steps a lookup table's rows
only when they have a gradient: a row of a 2-d table (an entry of a 1-d kept-entries table)
with any non-zero gradient is a row in the batch. Its moments, its coupled L2 decay and its
bias correction (a step count per row) see only the steps it was in, as if Adam had been run
on that row's batches alone. Every other parameter is stepped by a ``torch.optim.Adam``
inside (coupled L2; the group's settings as they stand at each step, one state dict for
both), so there is one Adam for them, torch's."""

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
    """Adam; the parameters in ``lazy`` step only the rows that have a gradient, the others
    take ``torch.optim.Adam``'s steps (``self.dense``, over the same groups' other
    parameters)."""

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
        # the groups (by index: loading a state replaces the group dicts) with other
        # parameters, each with a group of the dense Adam
        self._outer = [i for i, g in enumerate(self.param_groups)
                       if any(id(p) not in self.lazy for p in g["params"])]
        self.dense: torch.optim.Adam | None = None
        if self._outer:
            self.dense = torch.optim.Adam(
                [{"params": [p for p in self.param_groups[i]["params"] if id(p) not in self.lazy]}
                 for i in self._outer], lr=lr, betas=betas, eps=eps, weight_decay=weight_decay)
            self.dense.state = self.state  # one state: cleared, saved and loaded together

    def load_state_dict(self, state_dict: dict) -> None:  # type: ignore[override]
        super().load_state_dict(state_dict)
        if self.dense is not None:
            self.dense.state = self.state

    @torch.no_grad()
    def step(self, closure=None):  # type: ignore[no-untyped-def]
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        if self.dense is not None:
            # the groups' settings as they stand (a schedule may have changed them)
            for i, inner in zip(self._outer, self.dense.param_groups, strict=True):
                for key in ("lr", "betas", "eps", "weight_decay"):
                    inner[key] = self.param_groups[i][key]
            self.dense.step()
        for group in self.param_groups:
            b1, b2 = group["betas"]
            lr, eps, wd = group["lr"], group["eps"], group["weight_decay"]
            for p in group["params"]:
                if p.grad is None or id(p) not in self.lazy:
                    continue
                state = self.state[p]
                if not state:
                    state["m"] = torch.zeros_like(p)
                    state["v"] = torch.zeros_like(p)
                    state["steps"] = torch.zeros(p.shape[:1], device=p.device)
                m, v, steps = state["m"], state["v"], state["steps"]
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
