"""What keeps memory bounded on large tables: pair products taken a slice of pairs at a
time give the very products of the one-shot path (and its gradients, up to the order of a sum)."""

from __future__ import annotations

import itertools

import torch

from autodrs.nn.layers import PairProducts


def test_pair_products_in_slices_equal_one_shot(monkeypatch):
    torch.manual_seed(0)
    fields, dim, rows = 9, 5, 7
    pairs = list(itertools.combinations(range(fields), 2))  # 36 pairs
    layer = PairProducts(pairs)
    x = torch.randn(rows, fields, dim, requires_grad=True)
    whole = layer(x)
    (g_whole,) = torch.autograd.grad(whole.square().sum(), x)
    expected = torch.stack([(x[:, i] * x[:, j]).sum(-1) for i, j in pairs], 1)
    assert torch.equal(whole, expected)
    # 3 pairs a slice: 12 slices, the last one short
    monkeypatch.setattr(PairProducts, "CHUNK_ELEMENTS", rows * dim * 3)
    sliced = layer(x)
    (g_sliced,) = torch.autograd.grad(sliced.square().sum(), x)
    assert sliced.shape == (rows, len(pairs))
    assert torch.equal(sliced, whole)
    # the gradient sums the same terms in another order
    assert torch.allclose(g_sliced, g_whole, rtol=1e-5, atol=1e-6)
    with torch.no_grad():
        assert torch.equal(layer(x), whole)
