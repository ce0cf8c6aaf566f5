"""MvFS (Lee, Jeong, Kim, Park, Lee; SIGIR 2023, "MvFS: Multi-view Feature Selection for
Recommender System"), as ERASE re-implements it: several views of field importance, mixed
per example by a gate.

``views`` (6) sub-networks each map the concatenated field embeddings of an example to a
softmax over the fields, ``C_k = softmax(Linear_k(e))`` ``[B, F]``; a gating layer turns the
concatenated views into view weights ``r = softmax(W [C_1..C_K] + b)`` ``[B, K]``; the
importance is ``I = sum_k r_k C_k``, and each field's outputs are scaled by
``s = 0.5 (1 + tanh(t (I - l)))`` with threshold ``l`` (0.2) and a sharpness ``t`` that
starts at 5 and grows by 0.001 per weight step once past 5 (ERASE's ``t`` counter starts at
1, so the first 4,000 steps use 5). The selector learns with the model, single-level
(``gates.train_gated``). ERASE's MvFS selects per example and is not retrained; autodrs
ranks fields by their mean importance ``I`` over the validation rows, and the shared ERASE
rule picks the subset, retrained from scratch.

Options: ``search_epochs`` (1, as AutoField: every batch new to the model, so a gate
measures the field's use, not how well its embedding memorised the training rows), ``gate_lr`` (the training lr), ``views``
(6), ``threshold`` (0.2).
"""

from __future__ import annotations

import torch
from torch import nn

from autodrs.data.dataset import Batch, EncodedData
from autodrs.methods.selection.common import FieldScores, SelectionMethod, option
from autodrs.methods.selection.gates import (
    FieldGate,
    GatedModel,
    epoch_seconds,
    train_gated,
)
from autodrs.search.base import SearchContext, SearchError, register_method

START, GROWTH = 5.0, 1e-3


class MultiView(FieldGate):
    def __init__(self, n_fields: int, in_dim: int, views: int, threshold: float) -> None:
        super().__init__(n_fields)
        self.views = nn.ModuleList(nn.Linear(in_dim, n_fields) for _ in range(views))
        self.mix = nn.Linear(views * n_fields, views)
        nn.init.xavier_uniform_(self.mix.weight)
        nn.init.zeros_(self.mix.bias)
        self.threshold = threshold
        self.sharpness = START
        self.last_importance: torch.Tensor | None = None

    def importance(self, embeddings: list[torch.Tensor]) -> torch.Tensor:
        flat = torch.cat(embeddings, dim=1)
        views = torch.stack([torch.softmax(v(flat), dim=1) for v in self.views], dim=1)
        weights = torch.softmax(self.mix(views.flatten(1)), dim=1)  # [B, K]
        return (weights.unsqueeze(2) * views).sum(1)  # [B, F]

    def forward(self, embeddings: list[torch.Tensor], batch: Batch) -> torch.Tensor:
        importance = self.importance(embeddings)
        self.last_importance = importance.detach()
        return 0.5 * (1 + torch.tanh(self.sharpness * (importance - self.threshold)))


@torch.no_grad()
def mean_importance(gated: GatedModel, gate: MultiView, data: EncodedData,
                    batch_size: int) -> torch.Tensor:
    gated.eval()
    total = torch.zeros(gate.n_fields)
    for batch in data.batches(batch_size):
        gated(batch)
        assert gate.last_importance is not None
        total += gate.last_importance.sum(0)
    return total / max(1, len(data))


@register_method
class MvFS(SelectionMethod):
    name = "mvfs"
    strategies = ("gradient",)

    def score_fields(self, ctx: SearchContext, fields: list[str], strategy: str) -> FieldScores:
        views = option(ctx, "views", 6, int)
        threshold = option(ctx, "threshold", 0.2)
        if views < 1 or not 0 < threshold < 1:
            raise SearchError(f"MvFS needs views >= 1 and threshold in (0, 1); got {views} "
                              f"and {threshold}")
        spec = ctx.spec
        in_dim = sum(spec.dim_of(f) for f in fields)
        gate = MultiView(len(fields), in_dim, views, threshold)
        def after_step(step: int) -> None:
            # ERASE's counter: 1 + 0.001 per step, used once it passes 5
            gate.sharpness = max(START, 1.0 + GROWTH * step)

        gated, fit, steps = train_gated(ctx, fields, gate, 1, after_step)
        scores = mean_importance(gated, gate, ctx.dataset.valid, ctx.train.eval_batch_size)
        return FieldScores(scores=dict(zip(fields, scores.tolist(), strict=True)), extra={
            "sharpness": gate.sharpness, "gate_steps": steps.steps,
            "search_valid_auc": fit.valid["auc"], "epoch_seconds": epoch_seconds(fit)})
