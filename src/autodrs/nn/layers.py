"""Interaction operators and the MLP used by the hand-crafted towers. Their linear layers
start xavier-normal with zero biases (``autodrs.nn.init``), as in the reference libraries."""

from __future__ import annotations

import torch
from torch import nn

from autodrs.nn.init import init_linear, linear


class MLP(nn.Module):
    def __init__(self, in_dim: int, widths: list[int], dropout: float = 0.0,
                 batch_norm: bool = False) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        d = in_dim
        for w in widths:
            layers.append(linear(d, w))
            if batch_norm:
                layers.append(nn.BatchNorm1d(w))
            layers.append(nn.ReLU())
            if dropout:
                layers.append(nn.Dropout(dropout))
            d = w
        self.net = nn.Sequential(*layers)
        self.out_dim = d

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class PairProducts(nn.Module):
    """Inner products <e_i, e_j> of chosen field pairs: ``[B, F, D] -> [B, P]``.

    The pairs' embeddings are gathered ``[B, P, D]`` twice, which for many fields and a
    large evaluation batch is gigabytes (39 fields, 741 pairs, 16 dims, 16,384 rows: 0.8 GB
    a copy); above ``CHUNK_ELEMENTS`` elements the pairs are taken a slice at a time, with
    the same products and sums, so the result is unchanged."""

    CHUNK_ELEMENTS = 1 << 24

    def __init__(self, pairs: list[tuple[int, int]]) -> None:
        super().__init__()
        self.register_buffer("left", torch.tensor([p[0] for p in pairs], dtype=torch.long),
                             persistent=False)
        self.register_buffer("right", torch.tensor([p[1] for p in pairs], dtype=torch.long),
                             persistent=False)

    def forward(self, stacked: torch.Tensor) -> torch.Tensor:
        b, _, d = stacked.shape
        step = max(1, self.CHUNK_ELEMENTS // max(1, b * d))
        if step >= len(self.left):
            return (stacked.index_select(1, self.left)
                    * stacked.index_select(1, self.right)).sum(-1)
        return torch.cat([(stacked.index_select(1, self.left[i:i + step])
                           * stacked.index_select(1, self.right[i:i + step])).sum(-1)
                          for i in range(0, len(self.left), step)], 1)


class FactorizationMachine(nn.Module):
    """Second-order FM term. Over all pairs it uses the O(F D) identity
    ``0.5 * ((sum e)^2 - sum e^2)``; over a chosen pair list it sums the pairs' products,
    each optionally batch-normalised without affine (``norm``) and scaled by a trainable
    weight (AutoFIS keeps its gates as attention on normalised products)."""

    def __init__(self, pairs: list[tuple[int, int]] | None,
                 weights: list[float] | None = None, norm: bool = False) -> None:
        super().__init__()
        if norm and pairs is None:
            raise ValueError("a normalised FM term needs its pair list")
        self.products = PairProducts(pairs) if pairs is not None else None
        self.weight = nn.Parameter(torch.tensor(weights)) if weights is not None else None
        self.norm = nn.BatchNorm1d(len(pairs), affine=False) if norm and pairs else None

    def forward(self, stacked: torch.Tensor) -> torch.Tensor:
        if self.products is None:
            square_of_sum = stacked.sum(1).pow(2)
            sum_of_square = stacked.pow(2).sum(1)
            return 0.5 * (square_of_sum - sum_of_square).sum(1)
        products = self.products(stacked)
        if self.norm is not None:
            products = self.norm(products)
        if self.weight is not None:
            products = products * self.weight
        return products.sum(1)


class CrossNetV2(nn.Module):
    """DCN-V2 cross layers: ``x_{l+1} = x_0 * (W_l x_l + b_l) + x_l`` with full-rank W."""

    def __init__(self, dim: int, layers: int) -> None:
        super().__init__()
        self.layers = nn.ModuleList(linear(dim, dim) for _ in range(layers))
        self.out_dim = dim

    def forward(self, x0: torch.Tensor) -> torch.Tensor:
        x = x0
        for layer in self.layers:
            x = x0 * layer(x) + x
        return x


class SelfAttentionInteraction(nn.Module):
    """AutoInt: multi-head self-attention over field embeddings with residual connections."""

    def __init__(self, dim: int, n_fields: int, layers: int, heads: int,
                 att_dim: int | None = None) -> None:
        super().__init__()
        att_dim = att_dim or dim
        if att_dim % heads:
            att_dim = heads * max(1, att_dim // heads)
        self.blocks = nn.ModuleList()
        d = dim
        for _ in range(layers):
            attn = nn.MultiheadAttention(att_dim, heads, batch_first=True)
            with torch.no_grad():  # query, key and value projections each xavier-normal
                for chunk in attn.in_proj_weight.chunk(3):
                    nn.init.xavier_normal_(chunk)
                attn.in_proj_bias.zero_()
            init_linear(attn.out_proj)
            self.blocks.append(nn.ModuleDict({
                "attn": attn,
                "inp": linear(d, att_dim, bias=False),
                "res": linear(d, att_dim, bias=False),
            }))
            d = att_dim
        self.out_dim = n_fields * d

    def forward(self, stacked: torch.Tensor) -> torch.Tensor:
        x = stacked
        for block in self.blocks:
            h = block["inp"](x)
            attended, _ = block["attn"](h, h, h, need_weights=False)
            x = torch.relu(attended + block["res"](x))
        return x.flatten(1)
