"""Per-field L2 regularisation of embedding tables (lambda-Opt's granularity)."""

from __future__ import annotations

import torch
from torch import nn

from autodrs.nn.embedding import FieldEmbedding


def owned_parameters(embedding: FieldEmbedding) -> list[tuple[nn.Parameter, torch.Tensor]]:
    """Each embedding parameter with the index (into ``embedding.names``) of the field that
    owns each of its rows: a ``[rows]`` tensor, or a scalar tensor when one field owns all."""
    index = {n: i for i, n in enumerate(embedding.names)}
    owned: list[tuple[nn.Parameter, torch.Tensor]] = []
    for d, table, slots in zip(embedding.group_dims, embedding.tables,
                               embedding._group_slots, strict=True):
        offsets = getattr(embedding, f"offsets_{d}").tolist() + [table.num_embeddings]
        owner = torch.empty(table.num_embeddings, dtype=torch.long)
        for k, (name, _) in enumerate(slots):
            owner[offsets[k]:offsets[k + 1]] = index[name]
        owned.append((table.weight, owner))
    for group in (embedding.sequences, embedding.numericals,
                  getattr(embedding, "pruned", nn.ModuleDict())):
        for name, module in group.items():
            for p in module.parameters():
                owned.append((p, torch.tensor(index[name])))
    return owned


def field_l2_penalty(owned: list[tuple[nn.Parameter, torch.Tensor]],
                     strengths: torch.Tensor,
                     params: dict[int, torch.Tensor] | None = None) -> torch.Tensor:
    """``sum_f lambda_f * ||theta_f||^2`` over every row of every embedding parameter.
    ``params`` optionally substitutes tensors (by ``id`` of the parameter) for a look-ahead."""
    total = strengths.new_zeros(())
    for p, owner in owned:
        theta = params.get(id(p), p) if params is not None else p
        lam = strengths.to(theta.device)[owner.to(theta.device)]
        sq = theta.pow(2)
        if owner.dim() == 0:
            total = total + lam * sq.sum()
        else:
            total = total + (lam * sq.reshape(sq.shape[0], -1).sum(1)).sum()
    return total
