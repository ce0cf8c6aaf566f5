"""SHARK, ERASE's first-order Taylor approximation of permutation importance.

The model of ``ctx.spec`` is trained once with the shared trainer (``experiment.fit_spec``,
``search_epochs`` epochs, the run's by default) and probed in evaluation mode
(``gates.trained_probe``). Replacing a field's output ``e_f`` of one example by its mean
``E[e_f]`` changes the example's loss by about ``sum_d dL/de_fd (E[e_f] - e_fd)``. A field's
score is the mean absolute change over the validation rows, with ``E[e_f]`` their mean
output (ERASE's ``fs_run`` passes the probe its validation loader, as here). The term is
read as the gradient of a gate ``g`` per example and field that mixes the output with its
mean, ``g e + (1 - g) E[e]`` at ``g = 1``.

Options: ``search_epochs`` (the run's epochs).
"""

from __future__ import annotations

import torch

from autodrs.methods.selection.common import FieldScores, SelectionMethod
from autodrs.methods.selection.gates import trained_probe
from autodrs.search.base import SearchContext, register_method
from autodrs.train.losses import make_loss


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
