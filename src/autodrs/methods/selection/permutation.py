"""Permutation importance: how much validation AUC a trained model loses when one field's
column is shuffled (Breiman 2001; Fisher, Rudin, Dominici 2019).

The model of ``ctx.spec`` is trained once with the shared trainer (``experiment.fit_spec``);
then, for each field and each of ``repeats`` seeded shuffles, the field's validation column
is permuted (the other columns untouched) and the drop of validation AUC is recorded. A
field's score is the mean drop. ERASE measures accuracy on the training set with a 10-tree
random forest instead; AUC on held-out rows measures what the recommender itself uses and
does not reward memorised noise.

Options: ``repeats`` (3).
"""

from __future__ import annotations

import numpy as np
import torch

from autodrs.experiment import fit_spec
from autodrs.methods.selection.common import (
    FieldScores,
    SelectionMethod,
    option,
    search_config,
)
from autodrs.methods.selection.subset import permuted
from autodrs.search.base import SearchContext, SearchError, register_method
from autodrs.train.metrics import auc
from autodrs.train.trainer import Trainer


@register_method
class Permutation(SelectionMethod):
    name = "permutation"
    strategies = ("importance",)

    def score_fields(self, ctx: SearchContext, fields: list[str], strategy: str) -> FieldScores:
        repeats = option(ctx, "repeats", 1 if ctx.fast else 3, int)
        if repeats < 1:
            raise SearchError(f"option repeats must be >= 1, got {repeats}")
        config = search_config(ctx)
        outcome = fit_spec(ctx.dataset, ctx.spec, config)
        trainer = Trainer(config)
        valid = ctx.dataset.valid
        labels = valid.label.numpy()
        base = auc(labels, trainer.predict(outcome.model, valid))
        generator = torch.Generator().manual_seed(ctx.seed)
        drops: dict[str, float] = {}
        for f in fields:
            shuffled = [auc(labels, trainer.predict(
                outcome.model, permuted(valid, ctx.dataset.schema, f, generator)))
                for _ in range(repeats)]
            drops[f] = float(base - np.mean(shuffled))
        return FieldScores(scores=drops, extra={"base_valid_auc": base, "repeats": repeats})
