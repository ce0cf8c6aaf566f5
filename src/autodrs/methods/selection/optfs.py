"""OptFS (Lyu, Tang, Li, Guo, He, Zhang, Liu; WWW 2023, "Optimizing Feature Set for
Click-Through Rate Prediction"), as ERASE re-implements it: a learned mask per feature
value, sparsified continuously.

Every value v of a field (an id; a bucket of a numerical field at the schema's boundaries;
one mask for a whole sequence field) has a mask weight ``w_v`` (initialised to 0.5) and
scales the field's outputs of the rows holding it by ``sigmoid(temp * w_v) / sigmoid(0.5)``.
The regulariser ``reg * sum_v sigmoid(temp * w_v)`` pushes the masks to zero while
``temp`` rises geometrically from 1 to ``gamma`` (2000, ERASE's setting outside Avazu)
over the search's weight steps (ERASE raises it per epoch, which needs several search
epochs; per step the same ramp fits one). At ``temp = gamma`` a mask is a step: the value
is kept iff ``w_v > 0``.

OptFS's own output is the kept values (its "ticket"), retrained; in autodrs a selection
method outputs fields, so a field's score is the mean mask weight ``w`` its values carry
over ``optfs_rows`` training rows (frequent values count more; unlike the share of rows
kept, ``mean sigmoid(gamma w)``, reported in ``extra["kept_rows"]``, it does not tie at 0
for every field whose masks all closed). The shared ERASE rule picks the subset, retrained
from scratch; ``extra["kept_values"]`` reports the kept fraction of each vocabulary.

``level="field"`` keeps one mask per field instead (a field-level continuous
sparsification).

Options: ``search_epochs`` (1), ``gate_lr`` (the training lr), ``gamma`` (2000), ``reg``
(1e-4, ERASE's MovieLens-1M setting), ``optfs_rows`` (50,000), ``level`` (``value``).
"""

from __future__ import annotations

import torch
from torch import nn

from autodrs.data.dataset import Batch, EncodedData
from autodrs.data.schema import Schema
from autodrs.methods.selection.common import (
    FieldScores,
    SelectionMethod,
    option,
    search_config,
)
from autodrs.methods.selection.gates import FieldGate, epoch_seconds, train_gated
from autodrs.methods.selection.subset import field_column
from autodrs.search.base import SearchContext, SearchError, register_method

INIT = 0.5


class ValueMasks(FieldGate):
    """One mask weight per value of every gated field; the gate is ``[B, F]``."""

    def __init__(self, schema: Schema, fields: list[str], reg: float,
                 per_value: bool = True) -> None:
        super().__init__(len(fields))
        self.schema = schema
        self.fields = list(fields)
        self.reg = reg
        self.temp = 1.0
        self.weights = nn.ParameterList()
        self.boundaries: list[torch.Tensor | None] = []
        for name in fields:
            f = schema.field(name)
            if not per_value:
                size, bounds = 1, None
            elif f.kind == "categorical":
                size, bounds = f.vocab_size, None
            elif f.kind == "numerical":
                bounds = torch.tensor(f.boundaries or [], dtype=torch.float32)
                size = len(bounds) + 1
            else:
                size, bounds = 1, None
            self.weights.append(nn.Parameter(torch.full((size,), INIT)))
            self.boundaries.append(bounds)
        self.scale = 1.0 / torch.sigmoid(torch.tensor(INIT)).item()

    def value_ids(self, data: Batch | EncodedData, k: int) -> torch.Tensor:
        """The mask row each example reads for field ``k``: ``[B]``."""
        name = self.fields[k]
        kind = self.schema.field(name).kind
        if kind == "sequence" or self.weights[k].numel() == 1:
            return torch.zeros(len(data.label), dtype=torch.long)
        col = field_column(data, self.schema, name)
        if kind == "numerical":
            return torch.bucketize(col.float().contiguous(), self.boundaries[k])
        return col.long().clamp(max=self.weights[k].numel() - 1)

    def forward(self, embeddings: list[torch.Tensor], batch: Batch) -> torch.Tensor:
        return torch.stack([
            torch.sigmoid(self.temp * w[self.value_ids(batch, k)]) * self.scale
            for k, w in enumerate(self.weights)], dim=1)

    def regularization(self) -> torch.Tensor:
        return self.reg * sum(torch.sigmoid(self.temp * w).sum() for w in self.weights)

    @torch.no_grad()
    def row_means(self, data: EncodedData, temp: float) -> tuple[list[float], list[float]]:
        """Per field, over the rows of ``data``: the mean mask weight its values read, and
        the mean of their final masks ``sigmoid(temp * w)`` (the share of rows kept)."""
        weights = [w[self.value_ids(data, k)] for k, w in enumerate(self.weights)]
        return ([float(w.mean()) for w in weights],
                [float(torch.sigmoid(temp * w).mean()) for w in weights])


@register_method
class OptFS(SelectionMethod):
    name = "optfs"
    strategies = ("gradient",)

    def score_fields(self, ctx: SearchContext, fields: list[str], strategy: str) -> FieldScores:
        gamma = option(ctx, "gamma", 2000.0)
        reg = option(ctx, "reg", 1e-4)
        rows = option(ctx, "optfs_rows", 50_000, int)
        level = ctx.options.get("level", "value")
        if gamma < 1 or reg < 0 or rows < 1 or level not in ("value", "field"):
            raise SearchError(f"OptFS needs gamma >= 1, reg >= 0, optfs_rows >= 1 and level "
                              f"value or field; got {gamma}, {reg}, {rows}, {level!r}")
        gate = ValueMasks(ctx.dataset.schema, fields, reg, per_value=level == "value")
        config = search_config(ctx, epochs=1)
        planned = -(-len(ctx.dataset.train) // config.batch_size) * config.epochs
        if config.max_steps is not None:
            planned = min(planned, config.max_steps)
        planned = max(1, planned)

        def after_step(step: int) -> None:
            gate.temp = gamma ** min(1.0, step / planned)

        gated, fit, steps = train_gated(ctx, fields, gate, 1, after_step)
        train = ctx.dataset.train
        sample = train.subset(torch.arange(min(rows, len(train))))
        means, shares = gate.row_means(sample, gamma)
        kept = {f: round(float((w.detach() > 0).float().mean()), 4)
                for f, w in zip(fields, gate.weights, strict=True)}
        return FieldScores(scores=dict(zip(fields, means, strict=True)), extra={
            "kept_rows": dict(zip(fields, shares, strict=True)), "kept_values": kept, "temperature": gate.temp, "gate_steps": steps.steps,
            "search_valid_auc": fit.valid["auc"], "epoch_seconds": epoch_seconds(fit)})
