"""AdaFS field controller (Lin, Zhao, Wang, Xu, Wu; KDD 2022): per-example field weights.

The embeddings are batch-normalised, a controller ``softmax(Dropout(ReLU(BN(W [e_1..e_F]))))``
scores every field for every example, and the normalised embeddings are re-weighted by
those scores (soft), or only each example's top ``k`` fields are kept with their weights
re-normalised to sum to one (hard). The controller is part of the served model: the same
module selects fields at training and at serving time.
"""

from __future__ import annotations

import torch
from torch import nn


class FieldController(nn.Module):
    """Re-weights a list of ``[B, d_f]`` field embeddings per example.

    ``active=False`` passes the normalised embeddings through unweighted (the AdaFS
    pre-training stage, where the controller is not used yet).
    """

    def __init__(self, dims: list[int], k: int | None = None, dropout: float = 0.2) -> None:
        super().__init__()
        if not dims:
            raise ValueError("a field controller needs at least one field")
        n_fields, flat = len(dims), sum(dims)
        if k is not None and not 1 <= k <= n_fields:
            raise ValueError(f"controller k must be in 1..{n_fields}, got {k}")
        self.dims = list(dims)
        self.k = k
        # one statistic per embedding coordinate of each field: fields may differ in dim,
        # so a norm shared across fields (as in the reference, one dim for all) is undefined
        self.norm = nn.BatchNorm1d(flat)
        self.score = nn.Sequential(nn.Linear(flat, n_fields), nn.BatchNorm1d(n_fields),
                                   nn.ReLU(), nn.Dropout(dropout))
        self.active = True

    def weights(self, normalised: torch.Tensor) -> torch.Tensor:
        """Soft field weights ``[B, F]`` (rows sum to one) from the normalised embeddings."""
        return torch.softmax(self.score(normalised), dim=1)

    def soft_weights(self, embeddings: list[torch.Tensor]) -> torch.Tensor:
        """The controller's soft weights for raw embeddings (before any top-k)."""
        return self.weights(self.norm(torch.cat(embeddings, dim=1)))

    def _hard(self, w: torch.Tensor) -> torch.Tensor:
        top, index = w.topk(self.k, dim=1)
        top = top / top.sum(1, keepdim=True)
        return torch.zeros_like(w).scatter(1, index, top)

    def forward(self, embeddings: list[torch.Tensor]) -> list[torch.Tensor]:
        normalised = self.norm(torch.cat(embeddings, dim=1))
        parts = list(torch.split(normalised, self.dims, dim=1))
        if not self.active:
            return parts
        w = self.weights(normalised)
        if self.k is not None and self.k < w.shape[1]:
            w = self._hard(w)
        return [e * w[:, i:i + 1] for i, e in enumerate(parts)]
