"""The training rules a spec asks for, followed by every fit of the spec (``fit_spec``).

Most specs train one way: Adam on the spec's loss with early stopping. Two searched parts
are trained by their method's own rule, so the final retrain delivers the model the search
trained rather than a look-alike:

- ``spec.controller`` with ``update_every > 0`` (AdaFS, which has no retrain in its paper):
  ``pretrain_epochs`` without the controller, then the model on every training batch and
  the controller alone on one validation batch every ``update_every`` steps (first-order
  bi-level), as the search did;
- ``spec.adaptive_l2`` (lambda-Opt, whose paper's model is the one trained alongside its
  strengths): the per-field L2 strengths start at ``init`` and are learned during the fit by
  the look-ahead update of ``autodrs.methods.training.lambdaopt``.

Both may apply at once (an AdaFS spec that lambda-Opt then tuned).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
from torch import nn

from autodrs.data.dataset import Dataset
from autodrs.models.builder import CTRModel
from autodrs.spec import ArchSpec
from autodrs.train.losses import make_loss
from autodrs.train.trainer import TrainConfig, Trainer, TrainHook, TrainResult


@dataclass
class RuleFit:
    """A fit under the spec's rules: the trainer (for evaluation), the fit of the last
    phase, how many controller and lambda updates the rules made, and the per-field L2
    strengths lambda-Opt ended with (in ``model.embedding.names`` order)."""

    trainer: Trainer
    fit: TrainResult
    arch_steps: int = 0
    lambda_steps: int = 0
    strengths: list[float] | None = None


def fit_model(model: CTRModel, spec: ArchSpec, ds: Dataset, config: TrainConfig,
              hooks: list[TrainHook]) -> RuleFit:
    """Train ``model`` (built from ``spec``) on ``ds`` under the spec's training rules."""
    # methods import the experiment module, which imports this one
    from autodrs.methods.training.lambdaopt import LambdaOptModel, LambdaStep
    from autodrs.search.gradient import ArchStep, cycle_batches

    net: nn.Module = model
    rule_hooks: list[TrainHook] = []
    lambda_step: LambdaStep | None = None
    if spec.adaptive_l2 is not None:
        a = spec.adaptive_l2
        net = LambdaOptModel(model, init=a.init)
        valid = cycle_batches(ds.valid, config.batch_size,
                              torch.Generator().manual_seed(config.seed))
        lambda_step = LambdaStep(net, valid, lr=a.lr, every=a.every)
        rule_hooks.append(lambda_step)

    def finish(trainer: Trainer, fit: TrainResult, arch_steps: int = 0) -> RuleFit:
        if lambda_step is None:
            return RuleFit(trainer, fit, arch_steps=arch_steps)
        return RuleFit(trainer, fit, arch_steps=arch_steps, lambda_steps=lambda_step.steps,
                       strengths=[float(v) for v in lambda_step.wrapper.lam.detach()])

    controller = model.controller
    bilevel = spec.controller is not None and int(spec.controller.update_every) > 0
    if not bilevel:
        trainer = Trainer(config, rule_hooks + hooks)
        # the model's own parameters only: lambda (if any) is learned by its own step
        fit = trainer.fit(net, ds.train, ds.valid, parameters=list(model.parameters()))
        return finish(trainer, fit)
    assert controller is not None and spec.controller is not None
    arch = list(controller.score.parameters())
    arch_ids = {id(p) for p in arch}
    weights = [p for p in model.parameters() if id(p) not in arch_ids]
    if spec.controller.pretrain_epochs:
        controller.active = False
        try:
            Trainer(replace(config, epochs=int(spec.controller.pretrain_epochs)),
                    rule_hooks + hooks).fit(net, ds.train, ds.valid, parameters=weights)
        finally:
            controller.active = True
    loss = make_loss(spec.loss.name, spec.loss.params)
    step = ArchStep(torch.optim.Adam(arch, lr=float(spec.controller.lr)),
                    lambda m, batch: loss(m(batch), batch.label), mode="bilevel",
                    every=int(spec.controller.update_every), valid=ds.valid,
                    batch_size=config.batch_size, seed=config.seed)
    trainer = Trainer(config, [step, *rule_hooks, *hooks])
    fit = trainer.fit(net, ds.train, ds.valid, parameters=weights)
    return finish(trainer, fit, step.arch_steps)
