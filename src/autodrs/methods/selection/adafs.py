"""AdaFS (Lin, Zhao, Wang, Xu, Wu; KDD 2022): field selection per example, no retraining.

A controller (``nn.controller.FieldController``: BN on the embeddings, then
``softmax(Dropout(ReLU(BN(Linear(F*D -> F)))))``) scores every field of every example; the
normalised embeddings are re-weighted by the scores (soft) or only each example's top
``k = F // 2`` fields are kept with re-normalised weights (hard). Update rule, as in the
official code: stage 0 (``pretrain_epochs`` = 2) trains the recommender without the
controller; stage 1 trains the recommender (Adam) on every training batch and the
controller (Adam, lr 1e-3) every ``update_every`` = 10 batches on one validation batch
(first-order bi-level). The trained controller is part of the model (``spec.controller``,
built by ``build_model``), so it selects fields at serving time too. The paper has no
retrain: the model trained by this schedule is the result. So the spec carries the schedule
(``pretrain_epochs``, ``update_every``, ``lr``) and every fit of it, the final one included,
trains by the same rule (``autodrs.methods.training.rules``); under the same seed and
config it is the searched model. The ranking is the mean soft weight of each field over the
validation split.

Options: ``variant`` (soft | hard), ``controller_k`` (hard top-k, default F // 2),
``pretrain_epochs`` (2), ``search_epochs``, ``arch_lr`` (1e-3), ``update_every`` (10),
``min_arch_steps`` (100; see ``common.arch_interval``).
"""

from __future__ import annotations

from dataclasses import asdict, replace

import torch

from autodrs.methods.selection.common import (
    FieldScores,
    SelectionMethod,
    arch_interval,
    option,
    search_config,
)
from autodrs.methods.training.rules import fit_model
from autodrs.models.builder import CTRModel, build_model
from autodrs.search.base import SearchContext, SearchError, register_method
from autodrs.spec import ArchSpec, ControllerSpec
from autodrs.train.trainer import TimeLimit

VARIANTS = ("soft", "hard")


@torch.no_grad()
def mean_field_weights(model: CTRModel, ctx: SearchContext) -> dict[str, float]:
    """Mean soft controller weight of every embedded field over the validation split."""
    assert model.controller is not None
    model.eval()
    total = torch.zeros(len(model.field_names))
    for batch in ctx.dataset.valid.batches(ctx.train.eval_batch_size):
        total += model.controller.soft_weights(model.embedding(batch)).sum(0)
    mean = total / len(ctx.dataset.valid)
    return {n: float(w) for n, w in zip(model.field_names, mean, strict=True)}


@register_method
class AdaFS(SelectionMethod):
    name = "adafs"
    retrains_its_choice = False  # its spec adds the controller to the ERASE point
    strategies = ("gradient",)
    decides = ("fields", "controller")

    def controller(self, ctx: SearchContext, n_embedded: int) -> ControllerSpec:
        variant = str(ctx.options.get("variant", "soft"))
        if variant not in VARIANTS:
            raise SearchError(f"AdaFS variant must be one of {VARIANTS}, got {variant!r}")
        k = None
        if variant == "hard":
            k = option(ctx, "controller_k", max(1, n_embedded // 2), int)
            if not 1 <= k <= n_embedded:
                raise SearchError(f"option controller_k must be in 1..{n_embedded}, got {k}")
        pretrain = 1 if ctx.fast else option(ctx, "pretrain_epochs", 2, int)
        if pretrain < 0:
            raise SearchError(f"option pretrain_epochs must be >= 0, got {pretrain}")
        return ControllerSpec(k=k, pretrain_epochs=pretrain,
                              update_every=arch_interval(ctx, search_config(ctx)),
                              lr=option(ctx, "arch_lr", 1e-3))

    def score_fields(self, ctx: SearchContext, fields: list[str], strategy: str) -> FieldScores:
        controller = self.controller(ctx, len(fields) + len(ctx.spec.crosses))
        spec = ctx.spec.copy(controller=controller)
        spec.validate(ctx.dataset.schema)
        torch.manual_seed(ctx.seed)
        model = build_model(ctx.dataset.schema, spec)
        config = search_config(ctx)
        ruled = fit_model(model, spec, ctx.dataset, config, [TimeLimit(ctx.remaining)])
        weights_of = mean_field_weights(model, ctx)
        test = ruled.trainer.evaluate(model, ctx.dataset.test)
        return FieldScores(
            scores={f: weights_of[f] for f in fields}, subset=list(fields),
            extra={"controller": asdict(controller),
                   "metrics": {"valid": ruled.fit.valid, "test": test},
                   "arch_steps": ruled.arch_steps})

    def finish_spec(self, spec: ArchSpec, scored: FieldScores) -> ArchSpec:
        controller = ControllerSpec(**scored.extra["controller"])
        k = controller.k
        embedded = len(spec.fields or []) + len(spec.crosses)
        return spec.copy(controller=replace(controller,
                                            k=None if k is None else min(k, embedded)))
