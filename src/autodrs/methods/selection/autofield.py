"""AutoField (Wang, Zhao, Xu, Wu; WWW 2022): a keep/drop gate per field, searched with the
recommender, then the top fields retrained from scratch.

Each field f has two logits ``a_f`` (drop, keep), initialised to [0.5, 0.5]. A forward pass
draws ``g_f = GumbelSoftmax(a_f, tau)[keep]`` once per field and feeds ``g_f * e_f`` to the
backbone (the embedding and, where the backbone has one, the first-order term). Update rule,
first-order bi-level DARTS as in the ERASE re-implementation: Adam on the weights on every
training batch; every ``update_every`` = 10 steps (more often when that would give fewer
than ``min_arch_steps`` = 100 gate steps), one Adam step (lr 1e-3) on the gates on the loss
of one validation batch; ``tau = max(0.01, 1 - 5e-5 t)`` with t counted per weight
step. Fields are ranked by keep probability ``softmax(a_f)[keep]``; the subset is chosen by
the shared ERASE rule and retrained from scratch by ``experiment.fit_spec``.

The search runs one epoch by default, as ERASE's ``fs_run`` does: every batch is then new
to the model, so the validation gradient of a gate measures the field's use rather than how
much its embedding over-fitted in earlier epochs (which drives the gates of large
vocabularies down on small tables).

Options: ``arch_lr`` (1e-3), ``update_every`` (10), ``min_arch_steps`` (100),
``search_epochs`` (1), ``decay`` (5e-5).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from autodrs.data.dataset import Batch
from autodrs.data.schema import Schema
from autodrs.methods.selection.common import (
    FieldScores,
    SelectionMethod,
    arch_interval,
    option,
    search_config,
)
from autodrs.models.builder import build_model
from autodrs.search.base import SearchContext, Supernet, register_method
from autodrs.search.gradient import ArchStep, Temperature, gumbel_softmax
from autodrs.spec import ArchSpec
from autodrs.train.losses import make_loss
from autodrs.train.trainer import TimeLimit, Trainer, TrainHook

GATE_INIT = 0.5


class FieldGates(nn.Module):
    """Two logits (drop, keep) per field; ``resample()`` draws the keep gates of one
    forward pass (Gumbel noise while training, the plain softmax in evaluation)."""

    def __init__(self, n_fields: int, temperature: Temperature) -> None:
        super().__init__()
        self.logits = nn.Parameter(torch.full((n_fields, 2), GATE_INIT))
        self.temperature = temperature
        self.current = torch.ones(n_fields)

    def resample(self) -> None:
        self.current = gumbel_softmax(self.logits, self.temperature.value,
                                      training=self.training)[:, -1]

    def keep_probability(self) -> torch.Tensor:
        return torch.softmax(self.logits.detach(), dim=-1)[:, -1]


class GatedEmbedding(nn.Module):
    """Wraps a ``FieldEmbedding``: the output of each gated field is scaled by its gate;
    crosses and fields outside the search pass unchanged."""

    def __init__(self, inner: nn.Module, gates: FieldGates, fields: list[str]) -> None:
        super().__init__()
        self.inner = inner
        self.gates = gates
        self.names = list(inner.names)
        self.dims = list(inner.dims)
        index = {f: i for i, f in enumerate(fields)}
        self.slots = [index.get(n) for n in self.names]

    def forward(self, batch: Batch) -> list[torch.Tensor]:
        g = self.gates.current
        return [e if s is None else e * g[s]
                for e, s in zip(self.inner(batch), self.slots, strict=True)]

    def embedding_parameters(self) -> int:
        return int(self.inner.embedding_parameters())


class AutoFieldSupernet(Supernet):
    """The backbone of ``spec`` with a keep/drop gate on every field of ``fields``."""

    def __init__(self, schema: Schema, spec: ArchSpec, fields: list[str],
                 temperature: Temperature) -> None:
        super().__init__()
        self.spec = spec
        self.fields = list(fields)
        self.gates = FieldGates(len(fields), temperature)
        self.model = build_model(schema, spec)
        # the gated outputs are a list: the model's one-table ``stacked`` lookup (all
        # categorical fields at one dim) would bypass the gates, and the wrapper has none
        self.model.one_lookup = False
        self.model.embedding = GatedEmbedding(self.model.embedding, self.gates, fields)
        if self.model.linear is not None:
            self.model.linear.weights = GatedEmbedding(self.model.linear.weights, self.gates,
                                                       fields)

    def forward(self, batch: Batch) -> torch.Tensor:
        # one draw per forward pass, shared by every tower that reads the field
        self.gates.resample()
        return self.model(batch)

    def arch_parameters(self) -> list[nn.Parameter]:
        return [self.gates.logits]

    def derive(self) -> dict[str, Any]:
        p = self.gates.keep_probability()
        return {"keep_probability": {f: float(v) for f, v in zip(self.fields, p, strict=True)}}


class _LastGates(TrainHook):
    """Keeps the gates of the last epoch: the trainer restores the weights (and with them
    the gates) of its best epoch, but the ranking should reflect the whole search."""

    def __init__(self, supernet: AutoFieldSupernet) -> None:
        self.supernet = supernet
        self.keep: dict[str, float] = {}

    def on_epoch_end(self, trainer: Trainer, model: nn.Module, epoch: int,
                     metrics: dict[str, float]) -> None:
        self.keep = self.supernet.derive()["keep_probability"]


@register_method
class AutoField(SelectionMethod):
    name = "autofield"
    strategies = ("gradient",)

    def score_fields(self, ctx: SearchContext, fields: list[str], strategy: str) -> FieldScores:
        config = search_config(ctx, epochs=1)
        torch.manual_seed(ctx.seed)
        temperature = Temperature(decay=option(ctx, "decay", 5e-5))
        supernet = AutoFieldSupernet(ctx.dataset.schema, ctx.spec, fields, temperature)
        loss = make_loss(ctx.spec.loss.name, ctx.spec.loss.params)
        arch_step = ArchStep(
            torch.optim.Adam(supernet.arch_parameters(), lr=option(ctx, "arch_lr", 1e-3)),
            lambda model, batch: loss(model(batch), batch.label),
            mode="bilevel", every=arch_interval(ctx, config),
            valid=ctx.dataset.valid, batch_size=config.batch_size, seed=ctx.seed,
            temperatures=[temperature])
        last = _LastGates(supernet)
        fit = Trainer(config, [arch_step, last, TimeLimit(ctx.remaining)]).fit(
            supernet, ctx.dataset.train, ctx.dataset.valid,
            parameters=supernet.weight_parameters())
        return FieldScores(scores=last.keep, extra={
            "arch_steps": arch_step.arch_steps, "temperature": temperature.value,
            "search_valid_auc": fit.valid["auc"],
            # what an epoch of the gated model cost: the selection stage's estimate of a
            # retrain epoch when it decides whether its budget can pay for an ERASE curve
            "epoch_seconds": round(fit.total_seconds / max(1, len(fit.history)), 3)})
