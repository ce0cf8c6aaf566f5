"""SFS, ERASE's single-shot field saliency (SNIP-like): how strongly the loss of a trained
model reacts to scaling each field's outputs.

The model of ``ctx.spec`` is trained once with the shared trainer (``experiment.fit_spec``,
``search_epochs`` epochs, the run's by default), then probed in evaluation mode through a
mask ``m = 1`` on every field (``gates.trained_probe``; with m = 1 the model computes
exactly what it learned). A field's score is the mean of ``|dL/dm_f|`` over the first
``batches`` (100) validation batches, normalised to sum to 1 (ERASE's ``fs_run`` passes
the probe its validation loader).

Options: ``search_epochs`` (the run's epochs), ``batches`` (100).
"""

from __future__ import annotations

import torch

from autodrs.methods.selection.common import FieldScores, SelectionMethod, option
from autodrs.methods.selection.gates import trained_probe
from autodrs.search.base import SearchContext, SearchError, register_method
from autodrs.train.losses import make_loss


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
