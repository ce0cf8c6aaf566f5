"""AutoFT: automatic fine-tuning for transfer of CTR models (Yang et al., 2021,
arXiv 2106.04873).

A CTR model is pre-trained on the source domain. On the target domain two copies of it are
kept: the pre-trained weights, frozen, and a copy that is fine-tuned. A small policy network
reads an instance's (frozen, pre-trained) field embeddings and decides, **per instance**,
for every field embedding (the field-wise transfer policy) and for every layer (each MLP
layer, the interaction layer of DCN-V2 / AutoInt, the output layer: the layer-wise transfer
policy) whether to use the frozen or the fine-tuned copy:

    e_f = g_f * e_f^tuned + (1 - g_f) * e_f^frozen
    h_l = g_l * layer_l^tuned(h_(l-1)) + (1 - g_l) * layer_l^frozen(h_(l-1))
    g = hard Gumbel-softmax(policy(e^frozen) / tau)   (straight-through)

and the fine-tuned copy and the policy are trained with the CTR loss (early stopping on
validation AUC). ``policy_data=train`` trains the policy jointly with the copy on the target
training rows, as the paper does; the default, ``valid``, gives the policy steps of its own
on validation batches (first-order bi-level, as DARTS), because on the training rows every
fine-tuned copy fits better than the frozen one, so the joint policy learnt to fine-tune
everything (on the planted ``synthetic?domain=target`` data it ranked the changed fields
no better than chance, docs/transfer.md). Per-instance decisions are the paper's
formulation (its policies decide "based on the given instance from the target domain"); as
in SpotTune, which it follows, the policy is kept at inference, where its decisions are the
argmax without noise. The model delivered is that jointly trained one. What it chose is
summed up per field and layer as the share of validation rows it fine-tunes them for (the
stage's ``scores``), with the derived set (a share of at least one half) in ``fine_tune``.

``cost`` (default 0, the paper's objective) adds ``cost * mean(g)`` to the loss: a price
on fine-tuning, for a target so small that every fine-tuned copy over-fits.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from autodrs.data.dataset import Batch, Dataset, EncodedData
from autodrs.data.schema import Schema
from autodrs.experiment import Outcome, fit_spec, with_training
from autodrs.methods.transfer.weights import Carried, carry_weights, check_transferable
from autodrs.models.builder import CTRModel, build_model, count_parameters
from autodrs.search.base import (
    Method,
    SearchContext,
    SearchError,
    StageResult,
    option,
    register_method,
)
from autodrs.search.gradient import ArchStep, gumbel_softmax
from autodrs.spec import ArchSpec
from autodrs.train.trainer import TrainConfig, Trainer, TrainResult, deadline

OUTPUT = "output"  # the read-out layer (head and biases)
INTERACTION = "interaction"  # DCN-V2's cross network or AutoInt's attention layers


@dataclass
class Pretrained:
    """A model trained on the source domain, with the schema it was trained over."""

    model: CTRModel
    schema: Schema
    source: str
    metrics: dict[str, dict[str, float]] = field(default_factory=dict)
    seconds: float = 0.0
    rows: int = 0

    def summary(self) -> dict[str, Any]:
        return {"data": self.source, "train_rows": self.rows, "metrics": self.metrics,
                "seconds": round(self.seconds, 3)}


def pretrain(source: Dataset, spec: ArchSpec, config: TrainConfig) -> Pretrained:
    """Train ``spec`` on the source domain (the run's trainer, early stopping on the
    source's validation split)."""
    outcome = fit_spec(source, spec, config)
    check_transferable(outcome.model)
    outcome.model.cpu().eval()  # carried value by value into models built on the CPU
    return Pretrained(outcome.model, source.schema, str(source.info.get("name", "source")),
                      outcome.metrics, outcome.seconds, len(source.train))


def transferred(pre: Pretrained, target: Dataset, seed: int) -> tuple[CTRModel, Carried]:
    """The pre-trained model over the target schema, with the source's weights."""
    torch.manual_seed(seed)
    model = build_model(target.schema, pre.model.spec)
    carried = carry_weights(pre.model, pre.schema, model, target.schema)  # type: ignore[arg-type]
    return model, carried


def mlp_blocks(model: CTRModel) -> list[nn.Sequential]:
    """The MLP's layers, each a linear map with what follows it (norm, activation,
    dropout) up to the next linear map."""
    if model.mlp is None:
        return []
    blocks: list[list[nn.Module]] = []
    for m in model.mlp.net:
        if isinstance(m, nn.Linear):
            blocks.append([])
        blocks[-1].append(m)
    return [nn.Sequential(*b) for b in blocks]


def _has_params(module: nn.Module | None) -> bool:
    return module is not None and any(p.numel() for p in module.parameters())


class AutoFTModel(nn.Module):
    """The frozen pre-trained model, its fine-tuned copy and the transfer policy."""

    def __init__(self, pretrained: CTRModel, tau: float = 1.0, hidden: int = 64,
                 cost: float = 0.0) -> None:
        super().__init__()
        check_transferable(pretrained)
        self.frozen = copy.deepcopy(pretrained)
        self.frozen.requires_grad_(False)
        self.tuned = copy.deepcopy(pretrained)
        self.tuned.requires_grad_(True)
        self.fields = list(pretrained.field_names)
        self.tuned_blocks = nn.ModuleList(mlp_blocks(self.tuned))
        self.frozen_blocks = nn.ModuleList(mlp_blocks(self.frozen))
        layers = [f"mlp.{k + 1}" for k in range(len(self.tuned_blocks))]
        if _has_params(self.tuned.cross) or _has_params(self.tuned.attention) or _has_params(
                self.tuned.fm):
            layers.append(INTERACTION)
        layers.append(OUTPUT)
        self.layers = layers
        self.units = self.fields + layers
        self.index = {u: k for k, u in enumerate(self.units)}
        self.tau = tau
        self.cost = cost
        width = sum(pretrained.embedding.dims)
        out = nn.Linear(hidden, 2 * len(self.units))
        nn.init.zeros_(out.weight)  # every choice starts even
        nn.init.zeros_(out.bias)
        self.policy = nn.Sequential(nn.Linear(width, hidden), nn.ReLU(), out)
        self.batch_gates: torch.Tensor | None = None  # the last training batch's

    def train(self, mode: bool = True) -> AutoFTModel:
        super().train(mode)
        self.frozen.eval()  # the pre-trained batch-norm statistics stay as they are
        for block in self.frozen_blocks:
            block.eval()
        return self

    def trainable(self) -> list[nn.Parameter]:
        return [*self.tuned.parameters(), *self.policy.parameters()]

    def decide(self, frozen_embeddings: list[torch.Tensor]) -> torch.Tensor:
        """``[B, units]``: 1 where the instance uses the fine-tuned copy."""
        x = torch.cat(frozen_embeddings, dim=1).detach()
        logits = self.policy(x).view(x.shape[0], len(self.units), 2)
        return gumbel_softmax(logits, self.tau, hard=True, training=self.training)[..., 1]

    def _mix(self, tuned: nn.Module, frozen: nn.Module, gate: torch.Tensor,
             *args: torch.Tensor) -> torch.Tensor:
        if not _has_params(tuned):
            return tuned(*args)
        a, b = tuned(*args), frozen(*args)
        g = gate.view(-1, *([1] * (a.dim() - 1)))
        return g * a + (1 - g) * b

    def forward(self, batch: Batch) -> torch.Tensor:
        t, f = self.tuned, self.frozen
        with torch.no_grad():
            frozen_emb = f.embedding(batch)
        gates = self.decide(frozen_emb)
        self.batch_gates = gates if self.training else None

        def gate(unit: str) -> torch.Tensor:
            k = self.index[unit]
            return gates[:, k:k + 1]

        emb = [gate(n) * e + (1 - gate(n)) * e0
               for n, e, e0 in zip(self.fields, t.embedding(batch), frozen_emb, strict=True)]
        out_gate = gate(OUTPUT).squeeze(1)
        if t.linear is not None:
            wt, wf = t.linear.weights(batch), f.linear.weights(batch)
            first = torch.cat([gate(n) * a + (1 - gate(n)) * b
                               for n, a, b in zip(self.fields, wt, wf, strict=True)], 1)
            logit = first.sum(1) + out_gate * t.linear.bias + (1 - out_gate) * f.linear.bias
        else:
            logit = out_gate * t.bias + (1 - out_gate) * f.bias
        stacked = torch.stack(emb, dim=1) if t.needs_stack else None
        inter = gate(INTERACTION) if INTERACTION in self.index else out_gate[:, None]
        if t.fm is not None:
            logit = logit + self._mix(t.fm, f.fm, inter, stacked)
        if t.head is not None:
            flat = torch.cat(emb, dim=1)
            parts = []
            products = t.inner(stacked) if t.inner is not None else None
            if self.tuned_blocks:
                h = torch.cat([flat] + ([products] if products is not None else []), dim=1)
                for k, (bt, bf) in enumerate(zip(self.tuned_blocks, self.frozen_blocks,
                                                 strict=True)):
                    h = self._mix(bt, bf, gate(f"mlp.{k + 1}"), h)
                parts.append(h)
            elif products is not None:
                parts.append(products)
            if t.cross is not None:
                parts.append(self._mix(t.cross, f.cross, inter, flat))
            if t.attention is not None:
                parts.append(self._mix(t.attention, f.attention, inter, stacked))
            logit = logit + self._mix(t.head, f.head, gate(OUTPUT),
                                      torch.cat(parts, dim=1)).squeeze(1)
        return logit

    def regularization(self) -> torch.Tensor | float:
        """The price on fine-tuning (``cost``) times the share of the last batch's
        decisions that fine-tune (straight-through: the soft gradient): zero by default,
        as in the paper."""
        if not self.cost or self.batch_gates is None:
            return 0.0
        return self.cost * self.batch_gates.mean()

    @torch.no_grad()
    def fine_tune_rates(self, data: EncodedData, batch_size: int = 16_384) -> dict[str, float]:
        """Per field and layer, the share of ``data``'s rows the policy fine-tunes it for
        (the policy in evaluation: argmax, no noise)."""
        was = self.training
        self.eval()
        total = torch.zeros(len(self.units))
        rows = 0
        device = next(self.policy.parameters()).device
        for batch in data.batches(batch_size):
            frozen_emb = self.frozen.embedding(batch.to(device))
            total += self.decide(frozen_emb).sum(0).cpu()
            rows += len(batch)
        self.train(was)
        return {u: float(total[k]) / max(rows, 1) for k, u in enumerate(self.units)}


@dataclass
class AutoFTRun:
    """What one AutoFT transfer produced: the jointly trained model, its fit, its metrics
    on the target's validation and test splits, and the per-unit fine-tune rates."""

    model: AutoFTModel
    fit: TrainResult
    metrics: dict[str, dict[str, float]]
    rates: dict[str, float]
    carried: Carried
    seconds: float

    def outcome(self) -> Outcome:
        return Outcome(model=self.model, fit=self.fit, metrics=self.metrics,  # type: ignore[arg-type]
                       params=count_parameters(self.model), seconds=self.seconds)


POLICY_DATA = ("train", "valid")


def run_autoft(pre: Pretrained, target: Dataset, config: TrainConfig, tau: float = 1.0,
               hidden: int = 64, cost: float = 0.0, policy_data: str = "valid",
               policy_lr: float = 3e-3, every: int = 1) -> AutoFTRun:
    """Transfer ``pre`` to ``target`` by AutoFT (the module docstring). ``policy_data``
    ``train`` trains the policy jointly with the fine-tuned copy on the training rows (the
    paper); ``valid`` gives it steps of its own on validation batches every ``every``
    weight steps (first-order bi-level, as DARTS)."""
    if policy_data not in POLICY_DATA:
        raise SearchError(f"autoft policy_data={policy_data!r}: choose train or valid")
    t0 = time.perf_counter()
    config = with_training(config, pre.model.spec)
    start, carried = transferred(pre, target, config.seed)
    torch.manual_seed(config.seed)
    model = AutoFTModel(start, tau=tau, hidden=hidden, cost=cost)
    hooks = []
    params = model.trainable()
    if policy_data == "valid":
        bce = nn.BCEWithLogitsLoss()

        def policy_loss(m: nn.Module, batch: Batch) -> torch.Tensor:
            return bce(m(batch), batch.label) + m.regularization()  # type: ignore[operator]

        policy_opt = torch.optim.Adam(model.policy.parameters(), lr=policy_lr)
        hooks.append(ArchStep(policy_opt, policy_loss, mode="bilevel", every=every,
                              valid=target.valid, batch_size=config.batch_size,
                              seed=config.seed))
        params = list(model.tuned.parameters())
    trainer = Trainer(config, hooks=hooks)
    fit = trainer.fit(model, target.train, target.valid, parameters=params)
    metrics = {"valid": fit.valid, "test": trainer.evaluate(model, target.test)}
    rates = model.fine_tune_rates(target.valid)
    return AutoFTRun(model, fit, metrics, rates, carried, time.perf_counter() - t0)


def source_model(ctx: SearchContext) -> Pretrained:
    """The pre-trained source model a transfer stage starts from: ``ctx.options["source"]``
    is a ``Pretrained`` model or the source domain's ``Dataset`` (pre-trained here)."""
    source = ctx.options.get("source")
    if isinstance(source, Pretrained):
        return source
    if isinstance(source, Dataset):
        return pretrain(source, ctx.spec, ctx.train)
    raise SearchError("autoft transfers a model pre-trained on a source domain: run "
                      "`autodrs transfer --source SOURCE --data TARGET` (for example "
                      "--source 'movielens-100k?domain=source' --data "
                      "'movielens-100k?domain=target')")


@register_method
class AutoFT(Method):
    name = "autoft"
    component = "transfer"
    strategies = ("gradient",)
    command = "transfer"

    def search(self, ctx: SearchContext) -> StageResult:
        strategy = self.resolve_strategy(ctx)
        t0 = time.perf_counter()
        tau = option(ctx, "tau", 1.0)
        cost = option(ctx, "cost", 0.0)
        hidden = option(ctx, "hidden", 64, int)
        if tau <= 0 or cost < 0 or hidden < 1:
            raise SearchError(f"autoft needs tau > 0, cost >= 0 and hidden >= 1 (got tau="
                              f"{tau}, cost={cost}, hidden={hidden})")
        policy_data = str(ctx.options.get("policy_data", "valid"))
        config = ctx.train
        if ctx.fast:
            config = TrainConfig(**{**vars(config), "epochs": 1})
        left = ctx.remaining()
        # under a budget every fit (pre-training included) ends with it, its best epoch kept
        with deadline(None if left is None else time.monotonic() + max(left, 0.0)):
            pre = source_model(ctx)
            run = run_autoft(pre, ctx.dataset, config, tau=tau, hidden=hidden, cost=cost,
                             policy_data=policy_data)
        seconds = time.perf_counter() - t0
        return stage_result(self.name, strategy, ctx.spec, run, pre, seconds)


def stage_result(method: str, strategy: str, spec: ArchSpec, run: AutoFTRun, pre: Pretrained,
                 seconds: float) -> StageResult:
    """The stage entry of a transfer: fields and layers ranked by how often they are
    fine-tuned (ties in the model's order), the derived set, and what was carried over."""
    order = {u: k for k, u in enumerate(run.model.units)}
    ranking = sorted(run.rates, key=lambda u: (-run.rates[u], order[u]))
    tuned = [u for u in ranking if run.rates[u] >= 0.5]
    out = spec.copy()
    out.record(method, strategy, [], seconds, fine_tune=tuned)
    return StageResult(
        method=method, strategy=strategy, spec=out, ranking=ranking,
        scores={u: round(r, 6) for u, r in run.rates.items()}, seconds=seconds,
        extra={"decisions": "per instance (the policy is kept at inference)",
               "fine_tune": tuned, "frozen": [u for u in ranking if u not in tuned],
               "fields": run.model.fields, "layers": run.model.layers,
               "pretrain": pre.summary(),
               "carried": {"shared_values": run.carried.shared,
                           "new_values": run.carried.new},
               "valid_auc": round(run.metrics["valid"]["auc"], 6),
               "best_epoch": run.fit.best_epoch})


def rate_auc(rates: dict[str, float], changed: list[str], fields: list[str]) -> float:
    """How well the fine-tune rates rank the planted changed fields above the unchanged
    ones (ties count a half): 1 is perfect, 0.5 is chance."""
    pos = [rates[f] for f in fields if f in changed]
    neg = [rates[f] for f in fields if f not in changed]
    if not pos or not neg:
        raise ValueError("need changed and unchanged fields")
    wins = np.array([[1.0 if p > n else 0.5 if p == n else 0.0 for n in neg] for p in pos])
    return float(wins.mean())
