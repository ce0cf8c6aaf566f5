"""AdaFS (Lin, Zhao, Wang, Xu, Wu; KDD 2022): field selection per example, no retraining.

A controller (``nn.controller.FieldController``: BN on the embeddings, then
``softmax(Dropout(ReLU(BN(Linear(F*D -> F)))))``) scores every field of every example; the
normalised embeddings are re-weighted by the scores (soft) or only each example's top
``k = F // 2`` fields are kept with re-normalised weights (hard). Update rule, as in the
official code: stage 0 (``pretrain_epochs`` = 2) trains the recommender without the
controller; stage 1 trains the recommender (Adam) on every training batch and the
controller (Adam, lr 1e-3) every ``update_every`` = 10 batches on one validation batch
(first-order bi-level). The trained controller is part of the model (``spec.controller``,
built by ``build_model``), so it selects fields at serving time too; there is no retrain.
The ranking is the mean soft weight of each field over the validation split.

Options: ``variant`` (soft | hard), ``controller_k`` (hard top-k, default F // 2),
``pretrain_epochs`` (2), ``search_epochs``, ``arch_lr`` (1e-3), ``update_every`` (10),
``min_arch_steps`` (100; see ``common.arch_interval``).
"""

from __future__ import annotations

from dataclasses import replace

import torch

from autodrs.methods.selection.common import (
    FieldScores,
    SelectionMethod,
    arch_interval,
    option,
    search_config,
)
from autodrs.models.builder import CTRModel, build_model
from autodrs.search.base import SearchContext, SearchError, register_method
from autodrs.search.gradient import ArchStep
from autodrs.spec import ArchSpec, ControllerSpec
from autodrs.train.losses import make_loss
from autodrs.train.trainer import TimeLimit, Trainer

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
        if variant == "soft":
            return ControllerSpec(k=None)
        k = option(ctx, "controller_k", max(1, n_embedded // 2), int)
        if not 1 <= k <= n_embedded:
            raise SearchError(f"option controller_k must be in 1..{n_embedded}, got {k}")
        return ControllerSpec(k=k)

    def score_fields(self, ctx: SearchContext, fields: list[str], strategy: str) -> FieldScores:
        spec = ctx.spec.copy(controller=self.controller(ctx, len(fields) + len(ctx.spec.crosses)))
        spec.validate(ctx.dataset.schema)
        torch.manual_seed(ctx.seed)
        model = build_model(ctx.dataset.schema, spec)
        controller = model.controller
        assert controller is not None
        arch = list(controller.score.parameters())
        arch_ids = {id(p) for p in arch}
        weights = [p for p in model.parameters() if id(p) not in arch_ids]
        config = search_config(ctx)
        pretrain = 1 if ctx.fast else option(ctx, "pretrain_epochs", 2, int)
        if pretrain < 0:
            raise SearchError(f"option pretrain_epochs must be >= 0, got {pretrain}")
        if pretrain:
            controller.active = False
            Trainer(replace(config, epochs=pretrain), [TimeLimit(ctx.remaining)]).fit(
                model, ctx.dataset.train, ctx.dataset.valid, parameters=weights)
            controller.active = True
        loss = make_loss(spec.loss.name, spec.loss.params)
        arch_step = ArchStep(
            torch.optim.Adam(arch, lr=option(ctx, "arch_lr", 1e-3)),
            lambda m, batch: loss(m(batch), batch.label),
            mode="bilevel", every=arch_interval(ctx, config),
            valid=ctx.dataset.valid, batch_size=config.batch_size, seed=ctx.seed)
        trainer = Trainer(config, [arch_step, TimeLimit(ctx.remaining)])
        fit = trainer.fit(model, ctx.dataset.train, ctx.dataset.valid, parameters=weights)
        weights_of = mean_field_weights(model, ctx)
        test = trainer.evaluate(model, ctx.dataset.test)
        return FieldScores(
            scores={f: weights_of[f] for f in fields}, subset=list(fields),
            extra={"controller": {"k": spec.controller.k},
                   "metrics": {"valid": fit.valid, "test": test},
                   "arch_steps": arch_step.arch_steps})

    def finish_spec(self, spec: ArchSpec, scored: FieldScores) -> ArchSpec:
        k = scored.extra["controller"]["k"]
        embedded = len(spec.fields or []) + len(spec.crosses)
        return spec.copy(controller=ControllerSpec(k=None if k is None else min(k, embedded)))
