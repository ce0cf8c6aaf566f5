"""The initialisation of every backbone's layers, as the reference CTR libraries set it.

FuxiCTR (``BaseModel.reset_parameters`` and ``FeatureEmbedding``) draws embedding tables
from N(0, 1e-4) and every linear layer, the read-out head included, xavier-normal with zero
biases; DeepCTR-Torch draws its tables from N(0, 1e-4) too. PyTorch's default ``nn.Linear``
init (Kaiming-uniform with a = sqrt(5), uniform biases) gives a ReLU MLP smaller weights and
random biases, and on MovieLens-100k a DeepFM trained that way lost AUC against both
libraries and spread wider over seeds (docs/backbones.md has the measurement).
"""

from __future__ import annotations

import torch
from torch import nn

EMBEDDING_STD = 1e-4


def init_linear(layer: nn.Linear) -> nn.Linear:
    """Xavier-normal weights, zero bias; returns the layer."""
    nn.init.xavier_normal_(layer.weight)
    if layer.bias is not None:
        nn.init.zeros_(layer.bias)
    return layer


def linear(in_dim: int, out_dim: int, bias: bool = True) -> nn.Linear:
    """An ``nn.Linear`` initialised by ``init_linear``."""
    return init_linear(nn.Linear(in_dim, out_dim, bias=bias))


def init_embedding(table: nn.Embedding, std: float = EMBEDDING_STD) -> nn.Embedding:
    """N(0, std) rows; the padding row, if any, stays zero. Returns the table."""
    nn.init.normal_(table.weight, std=std)
    if table.padding_idx is not None:
        with torch.no_grad():
            table.weight[table.padding_idx].zero_()
    return table
