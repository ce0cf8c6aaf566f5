"""lambda-Opt (Chen et al., KDD 2019): fine-grained regularisation strengths learned on
validation data through a one-step look-ahead of the recommender's optimiser.

Per training step: the recommender takes its Adam step on ``BCE + sum_f lambda_f
||theta_f||^2`` (per-field L2 on the embedding tables); then lambda is updated: with the
gradient ``g = g_noreg + 2 lambda (.) theta`` the Adam step is replayed from the current
moments, ``theta' = theta - lr sqrt(1 - b2^t) / (1 - b1^t) * s / sqrt(r + eps)`` with
``s = b1 m + (1 - b1) g`` and ``r = b2 v + (1 - b2) g^2``, the validation loss at
``theta'`` is back-propagated to lambda, lambda takes an Adam step and is clamped at zero.

In the paper the model trained alongside lambda is the result: lambda changes through
training (small while the model is young, growing as it starts to overfit), and no fixed
value reproduces that. So the stage writes the rule, not its last value: ``spec.adaptive_l2``
(lr, every, init), which every fit of the spec follows (``autodrs.methods.training.rules``);
the final retrain learns its strengths again alongside its weights. The strengths this
search ended with are the stage's scores.

Options: ``lambda_lr`` (1e-3), ``every`` (1), ``lambda_init`` (0).
"""

from __future__ import annotations

import time

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from autodrs.data.dataset import Batch
from autodrs.methods.training.rules import fit_model
from autodrs.models.builder import CTRModel, build_model, count_parameters
from autodrs.nn.regularization import field_l2_penalty, owned_parameters
from autodrs.search.base import Method, SearchContext, StageResult, register_method
from autodrs.spec import AdaptiveL2Spec
from autodrs.train.trainer import TimeLimit, Trainer, TrainHook


class LambdaOptModel(nn.Module):
    """A recommender regularised per field by trainable strengths ``lam`` (>= 0)."""

    def __init__(self, model: CTRModel, init: float = 0.0) -> None:
        super().__init__()
        self.model = model
        self.spec = model.spec
        self.embedding = model.embedding
        self.owned = owned_parameters(model.embedding)
        self.lam = nn.Parameter(torch.full((len(model.embedding.names),), float(init)))

    def forward(self, batch: Batch) -> torch.Tensor:
        return self.model(batch)

    def regularization(self) -> torch.Tensor:
        return field_l2_penalty(self.owned, self.lam.detach())


class LambdaStep(TrainHook):
    """The lambda update after each recommender step (``every`` steps apart)."""

    def __init__(self, wrapper: LambdaOptModel, valid_batches: object, lr: float,
                 every: int = 1) -> None:
        self.wrapper = wrapper
        self.valid = valid_batches
        self.optimizer = torch.optim.Adam([wrapper.lam], lr=lr, amsgrad=True)
        self.every = every
        self.steps = 0

    def on_step(self, trainer: Trainer, model: nn.Module, step: int, batch: Batch,
                loss: torch.Tensor) -> None:
        if step % self.every:
            return
        wrapper = self.wrapper
        optimizer = trainer.optimizer
        assert optimizer is not None and batch.label is not None
        params = [p for p, _ in wrapper.owned]
        logits = wrapper.model(batch)
        g_noreg = torch.autograd.grad(F.binary_cross_entropy_with_logits(logits, batch.label),
                                      params, allow_unused=True)
        reg_grads = torch.autograd.grad(field_l2_penalty(wrapper.owned, wrapper.lam), params,
                                        create_graph=True)
        stepped: dict[int, torch.Tensor] = {}
        for p, g0, greg in zip(params, g_noreg, reg_grads, strict=True):
            g = (g0 if g0 is not None else torch.zeros_like(p)) + greg
            state = optimizer.state.get(p, {})
            if "exp_avg" not in state:
                continue
            group = next(gr for gr in optimizer.param_groups if any(q is p for q in gr["params"]))
            b1, b2 = group["betas"]
            t = float(state["step"])
            s = b1 * state["exp_avg"] + (1 - b1) * g
            r = b2 * state["exp_avg_sq"] + (1 - b2) * g * g
            scale = group["lr"] * (1 - b2 ** t) ** 0.5 / (1 - b1 ** t)
            stepped[id(p)] = p.detach() - scale * s / torch.sqrt(r + group["eps"])
        if not stepped:
            return
        names = {id(p): n for n, p in wrapper.model.named_parameters()}
        valid_batch = next(self.valid)  # type: ignore[call-overload]
        if trainer.device.type != "cpu":
            valid_batch = valid_batch.to(trainer.device)
        assert valid_batch.label is not None
        logits = functional_call(wrapper.model, {names[k]: v for k, v in stepped.items()},
                                 (valid_batch,))
        valid_loss = F.binary_cross_entropy_with_logits(logits, valid_batch.label)
        self.optimizer.zero_grad(set_to_none=True)
        valid_loss.backward(inputs=[wrapper.lam])
        torch.nn.utils.clip_grad_norm_([wrapper.lam], 100.0)
        self.optimizer.step()
        with torch.no_grad():
            wrapper.lam.clamp_(min=0.0)
        self.steps += 1


@register_method
class LambdaOpt(Method):
    name = "lambdaopt"
    component = "training"
    strategies = ("gradient",)

    def search(self, ctx: SearchContext) -> StageResult:
        strategy = self.resolve_strategy(ctx)
        t0 = time.perf_counter()
        opts = ctx.options
        config = ctx.train
        rule = AdaptiveL2Spec(lr=float(opts.get("lambda_lr", 1e-3)),
                              every=int(opts.get("every", 1)),
                              init=float(opts.get("lambda_init", 0.0)))
        spec = ctx.spec.copy(adaptive_l2=rule, l2_fields={})
        spec.validate(ctx.dataset.schema)
        torch.manual_seed(config.seed)
        ds = ctx.dataset
        model = build_model(ds.schema, spec)
        ruled = fit_model(model, spec, ds, config, [TimeLimit(ctx.remaining)])
        trainer, fit = ruled.trainer, ruled.fit
        assert ruled.strengths is not None
        strengths = dict(zip(model.embedding.names, ruled.strengths, strict=True))
        ranking = sorted(strengths, key=lambda n: -strengths[n])
        spec.provenance.append({"method": self.name, "decided": "adaptive_l2"})
        metrics = {"valid": fit.valid, "test": trainer.evaluate(model, ds.test)}
        return StageResult(
            method=self.name, strategy=strategy, spec=spec, ranking=ranking, scores=strengths,
            seconds=time.perf_counter() - t0,
            extra={"metrics": metrics, "params": count_parameters(model),
                   "lambda_steps": ruled.lambda_steps},
        )
