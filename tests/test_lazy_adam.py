"""``LazyAdam`` steps the lookup tables lazily and hands every other parameter to
``torch.optim.Adam``: the same update, bit for bit, under each group's settings as they
stand at each step, with one state for both."""

from __future__ import annotations

import torch
from torch import nn

from autodrs.train.lazy import LazyAdam


def test_non_table_parameters_take_exactly_torch_adams_steps() -> None:
    g = torch.Generator().manual_seed(0)
    table = nn.Parameter(torch.randn(10, 4, generator=g))
    weight = nn.Parameter(torch.randn(5, 3, generator=g))
    bias = nn.Parameter(torch.randn(3, generator=g))
    ref_weight = nn.Parameter(weight.detach().clone())
    ref_bias = nn.Parameter(bias.detach().clone())
    lazy = LazyAdam([{"params": [table, weight], "weight_decay": 0.1},
                     {"params": [bias], "weight_decay": 0.0}], [table], lr=0.01,
                    betas=(0.8, 0.99), eps=1e-6)
    ref = torch.optim.Adam([{"params": [ref_weight], "weight_decay": 0.1},
                            {"params": [ref_bias], "weight_decay": 0.0}], lr=0.01,
                           betas=(0.8, 0.99), eps=1e-6)
    start = table.detach().clone()
    for step in range(8):
        if step == 4:  # a schedule changes the groups' settings
            for group in lazy.param_groups + ref.param_groups:
                group["lr"] *= 0.3
        if step == 6:  # saved and loaded mid-run
            saved = lazy.state_dict()
            lazy = LazyAdam([{"params": [table, weight], "weight_decay": 0.1},
                             {"params": [bias], "weight_decay": 0.0}], [table])
            lazy.load_state_dict(saved)
        grad_w, grad_b = torch.randn(5, 3, generator=g), torch.randn(3, generator=g)
        weight.grad, ref_weight.grad = grad_w.clone(), grad_w.clone()
        bias.grad, ref_bias.grad = grad_b.clone(), grad_b.clone()
        table.grad = torch.zeros(10, 4)
        table.grad[[1, 2]] = torch.randn(2, 4, generator=g)
        lazy.step()
        ref.step()
        assert torch.equal(weight, ref_weight) and torch.equal(bias, ref_bias), step
    # the table stays lazy: the rows never in a batch did not move
    assert torch.equal(table[[0, 3, 4]], start[[0, 3, 4]])
    assert not torch.equal(table[[1, 2]], start[[1, 2]])
    # one state: clearing the optimiser's (as the trainer does) clears the dense Adam's
    assert lazy.dense is not None and lazy.dense.state
    lazy.state.clear()
    assert not lazy.dense.state


def test_only_tables_need_no_dense_adam() -> None:
    table = nn.Parameter(torch.ones(4, 2))
    lazy = LazyAdam([table], [table], lr=0.1)
    assert lazy.dense is None
    table.grad = torch.zeros(4, 2)
    table.grad[0] = 1.0
    lazy.step()
    assert torch.equal(table[1:], torch.ones(3, 2)) and not torch.equal(table[0], torch.ones(2))
