"""Gradient saliency of the fields of a trained model: ERASE's SFS and SHARK baselines.

Both train the model of ``ctx.spec`` once with the shared trainer (``experiment.fit_spec``,
``search_epochs`` epochs), then probe it in evaluation mode through a gate on every field
(``gates.GatedModel``; the gate is 1, so the model computes exactly what it learned).

``sfs``: single-shot field saliency (SNIP-like, as ERASE's ``sfs``): a mask ``m = 1`` per
field scales the field's outputs; a field's score is the mean of ``|dL/dm_f|`` over the
first ``batches`` (100) validation batches, normalised to sum to 1.

``shark``: a first-order Taylor approximation of permutation importance (SHARK, as ERASE's
``shark``): replacing a field's output ``e_f`` of one example by its mean ``E[e_f]`` changes
the example's loss by about ``sum_d dL/de_fd (E[e_f] - e_fd)``. A field's score is the mean
absolute change over the validation rows, with ``E[e_f]`` their mean output (ERASE's
``fs_run`` passes both probes its validation loader, as here).

Options: ``search_epochs`` (the run's epochs), ``batches`` (sfs, 100).
"""

from __future__ import annotations

import copy

import torch

from autodrs.data.dataset import Batch
from autodrs.experiment import fit_spec
from autodrs.methods.selection.common import (
    FieldScores,
    SelectionMethod,
    option,
    search_config,
)
from autodrs.methods.selection.gates import FieldGate, GatedModel
from autodrs.search.base import SearchContext, SearchError, register_method
from autodrs.train.losses import make_loss


class ProbeGate(FieldGate):
    """Returns ``value`` (set by the probe before each forward pass), else 1."""

    def __init__(self, n_fields: int) -> None:
        super().__init__(n_fields)
        self.value: torch.Tensor | None = None

    def forward(self, embeddings: list[torch.Tensor], batch: Batch) -> torch.Tensor:
        return self.ones if self.value is None else self.value


def trained_probe(ctx: SearchContext, fields: list[str]) -> tuple[GatedModel, ProbeGate, dict]:
    """The model of ``ctx.spec`` trained once, gated for probing (a copy: a fit reused from
    the run's cache stays as it was)."""
    config = search_config(ctx)
    outcome = fit_spec(ctx.dataset, ctx.spec, config)
    gate = ProbeGate(len(fields))
    gated = GatedModel(ctx.dataset.schema, ctx.spec, fields, gate,
                       model=copy.deepcopy(outcome.model)).eval()
    return gated, gate, {"search_valid_auc": outcome.metrics["valid"]["auc"]}


@register_method
class SFS(SelectionMethod):
    name = "sfs"
    strategies = ("importance",)

    def score_fields(self, ctx: SearchContext, fields: list[str], strategy: str) -> FieldScores:
        n_batches = option(ctx, "batches", 10 if ctx.fast else 100, int)
        if n_batches < 1:
            raise SearchError(f"option batches must be >= 1, got {n_batches}")
        gated, gate, extra = trained_probe(ctx, fields)
        loss_fn = make_loss(ctx.spec.loss.name, ctx.spec.loss.params)
        total = torch.zeros(len(fields))
        seen = 0
        for batch in ctx.dataset.valid.batches(ctx.train.batch_size):
            if seen == n_batches:
                break
            gate.value = torch.ones(len(fields), requires_grad=True)
            loss = loss_fn(gated(batch), batch.label)
            (grad,) = torch.autograd.grad(loss, gate.value)
            total += grad.abs()
            seen += 1
        gate.value = None
        mean = total / seen
        scores = mean / mean.sum() if float(mean.sum()) > 0 else mean
        return FieldScores(scores=dict(zip(fields, scores.tolist(), strict=True)),
                           extra={**extra, "batches": seen})


@register_method
class Shark(SelectionMethod):
    name = "shark"
    strategies = ("importance",)

    def score_fields(self, ctx: SearchContext, fields: list[str], strategy: str) -> FieldScores:
        gated, gate, extra = trained_probe(ctx, fields)
        batch_size = ctx.train.eval_batch_size
        valid = ctx.dataset.valid
        gated.set_mean_base(valid, batch_size, len(valid))
        loss_fn = make_loss(ctx.spec.loss.name, ctx.spec.loss.params)
        total = torch.zeros(len(fields))
        seen = 0
        for batch in valid.batches(batch_size):
            # with g = 1 the model is unchanged; dL_i/dg_if = sum_d dL_i/de_fd (e_fd - E[e_f])
            # per example i, since an example's output depends on its own gates only
            gate.value = torch.ones(len(batch), len(fields), requires_grad=True)
            loss = loss_fn(gated(batch), batch.label) * len(batch)
            (grad,) = torch.autograd.grad(loss, gate.value)
            total += grad.abs().sum(0)
            seen += len(batch)
        gate.value = None
        scores = total / max(1, seen)
        return FieldScores(scores=dict(zip(fields, scores.tolist(), strict=True)),
                           extra=extra)
