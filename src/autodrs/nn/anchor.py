"""Anchor & Transform tables (ANT; Liang, Zaheer, Wang, Ahmed, ICLR 2021): a field's values
embedded as sparse non-negative combinations of a few anchor embeddings, ``E = T A``.

``A`` ([K, d], dense) holds the anchors; ``T`` ([vocab, K]) is stored sparsely, its kept
entries only (``nn.pruned.PrunedTable``, CSR), so the table costs ``K d`` anchors plus the
non-zeros of T and their index. Which entries of T are kept is written in the spec
(``ArchSpec.anchors``: the anchor count and the compact mask of ``nn.pruned.encode_mask``),
so ``build_model`` rebuilds the structure. The combination weights are ``|values|``: a
delivered transform stays non-negative, as the search's proximal steps kept it, without a
projection in training. Initial draws are seeded per field (``nn.pruned.field_generator``).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from autodrs.nn.pruned import MaskError, PrunedTable, decode_mask, field_generator

ANCHOR_TAG = "@anchors"


def anchor_mask(entry: Any, rows: int, name: str) -> torch.Tensor:
    """The ``[rows, K]`` mask of T from a spec entry ``{"count": K, "mask": text}``; a clear
    error (``MaskError``) when it is not one."""
    if not isinstance(entry, dict) or set(entry) != {"count", "mask"}:
        raise MaskError(f"anchors of {name!r} must be {{'count': K, 'mask': ...}}, got "
                        f"{entry!r:.80}")
    count = entry["count"]
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise MaskError(f"anchor count of {name!r} must be a positive integer, got {count!r}")
    return decode_mask(entry["mask"], rows, count, name)


class AnchorTable(nn.Module):
    """``forward(ids) -> [*, dim]``: ``|T[ids]| @ A`` with T's kept entries only."""

    def __init__(self, mask: torch.Tensor, dim: int, seed: int = 0, name: str = "") -> None:
        super().__init__()
        if mask.dim() != 2:
            raise MaskError(f"an anchor transform mask is 2-d [rows, K], got shape "
                            f"{tuple(mask.shape)}")
        mask = mask.to(torch.bool).cpu()
        rows_kept = mask.sum(1, keepdim=True).clamp_min(1).float()
        generator = field_generator(seed, name + ANCHOR_TAG)
        anchors = torch.randn(int(mask.shape[1]), dim, generator=generator) * 0.01
        # each value starts as the mean of its kept anchors, jittered
        start = (1.0 + 0.1 * torch.rand(mask.shape, generator=generator)) / rows_kept
        self.transform = PrunedTable(mask, start[mask])
        self.anchors = nn.Parameter(anchors)
        self.rows, self.dim = int(mask.shape[0]), int(dim)

    @property
    def nnz(self) -> int:
        return self.transform.nnz

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        flat = ids.reshape(-1)
        weights = self.transform(flat).abs()
        return (weights @ self.anchors).reshape(*ids.shape, self.dim)

    def extra_repr(self) -> str:
        return f"rows={self.rows}, anchors={self.anchors.shape[0]}, dim={self.dim}, " \
               f"nonzeros={self.nnz}"
