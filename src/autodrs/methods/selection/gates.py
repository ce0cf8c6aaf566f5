"""Field gates inside a model, shared by the selection methods that learn or probe a scale
per field (SFS, SHARK, LPFS, OptFS, MvFS).

``GatedModel`` is the backbone of a spec whose searched fields pass through a gate: the
output ``e_f`` of field f (its embedding and, where the backbone has one, its first-order
weight) becomes ``g_f * e_f + (1 - g_f) * b_f``, where ``g`` comes from a ``FieldGate``
(``[F]`` for one gate per field, ``[B, F]`` for one per example) and ``b_f`` is a base the
field falls back to (zero, or the field's mean output for SHARK). Crosses and fields outside
the search pass unchanged.

Methods that probe a trained model (SFS, SHARK) gate a copy of it with a ``ProbeGate``
(``trained_probe``). Methods whose gates learn with the model train it by ``train_gated``: one pass of the
trainer, where the gate parameters take their own Adam steps (``gate_lr``) on the gradients
of the same training batch (single-level, as ERASE trains them), and a method's
``after_step`` (a proximal step, a schedule) follows each of them.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from autodrs.data.dataset import Batch, EncodedData
from autodrs.data.schema import Schema
from autodrs.experiment import fit_spec
from autodrs.methods.selection.common import option, search_config
from autodrs.models.builder import CTRModel, build_model
from autodrs.search.base import SearchContext, SearchError, Supernet
from autodrs.spec import ArchSpec
from autodrs.train.trainer import TimeLimit, Trainer, TrainHook, TrainResult


class FieldGate(nn.Module):
    """Maps the searched fields' embeddings (``[B, d_f]`` each, in ``fields`` order) and the
    batch to their gates, ``[F]`` or ``[B, F]``. The default is a constant 1 (the model
    unchanged)."""

    def __init__(self, n_fields: int) -> None:
        super().__init__()
        self.n_fields = n_fields
        self.register_buffer("ones", torch.ones(n_fields), persistent=False)

    def forward(self, embeddings: list[torch.Tensor], batch: Batch) -> torch.Tensor:
        return self.ones

    def scores(self) -> torch.Tensor:
        """The per-field score a method ranks by (higher keeps the field sooner)."""
        raise NotImplementedError


def _apply(e: torch.Tensor, g: torch.Tensor, slot: int, base: torch.Tensor | None
           ) -> torch.Tensor:
    gate = g[slot] if g.dim() == 1 else g[:, slot:slot + 1]
    if base is None:
        return e * gate
    return e * gate + (1 - gate) * base


class GatedOutputs(nn.Module):
    """Wraps a ``FieldEmbedding`` (the embedding, or a first-order term's weights). The
    ``source`` wrapper computes the gates from its own outputs; a ``follower`` (the
    first-order term) reuses the gates of the same forward pass."""

    def __init__(self, inner: nn.Module, gate: FieldGate, fields: list[str],
                 source: GatedOutputs | None = None) -> None:
        super().__init__()
        self.inner = inner
        self.gate = gate
        self.names = list(inner.names)
        self.dims = list(inner.dims)
        index = {f: i for i, f in enumerate(fields)}
        self.slots = [index.get(n) for n in self.names]
        # output positions of the searched fields, in ``fields`` order (the gate's order)
        self.searched = sorted((k for k, s in enumerate(self.slots) if s is not None),
                               key=lambda k: self.slots[k])
        if source is None and len(self.searched) != len(fields):
            missing = sorted(set(fields) - set(self.names))
            raise SearchError(f"gated fields the model does not embed: {missing}")
        self.source = [source] if source is not None else []  # not a submodule
        self.base: list[torch.Tensor | None] = [None] * len(self.names)
        self.current: torch.Tensor | None = None

    def forward(self, batch: Batch) -> list[torch.Tensor]:
        out = self.inner(batch)
        if self.source:
            g = self.source[0].current
            assert g is not None, "the embedding's gates are computed first"
        else:
            g = self.gate([out[k] for k in self.searched], batch)
            self.current = g
        return [e if s is None else _apply(e, g, s, self.base[k])
                for k, (e, s) in enumerate(zip(out, self.slots, strict=True))]

    @torch.no_grad()
    def set_mean_base(self, data: EncodedData, batch_size: int, rows: int) -> None:
        """Sets each searched field's base to its mean output over the first ``rows`` rows
        of ``data`` (the fallback SHARK's Taylor term measures the loss against)."""
        sums: list[torch.Tensor] | None = None
        seen = 0
        for batch in data.batches(batch_size):
            out = self.inner(batch)
            part = [e.sum(0) for e in out]
            sums = part if sums is None else [a + b for a, b in zip(sums, part, strict=True)]
            seen += len(batch)
            if seen >= rows:
                break
        if sums is None:
            raise SearchError("cannot take the fields' mean output of an empty split")
        self.base = [sums[k] / seen if s is not None else None
                     for k, s in enumerate(self.slots)]

    def embedding_parameters(self) -> int:
        return int(self.inner.embedding_parameters())


class GatedModel(Supernet):
    """The backbone of ``spec`` with ``gate`` on every field of ``fields`` (or the trained
    ``model`` given, for methods that probe a trained model)."""

    def __init__(self, schema: Schema, spec: ArchSpec, fields: list[str], gate: FieldGate,
                 model: CTRModel | None = None) -> None:
        super().__init__()
        self.spec = spec
        self.fields = list(fields)
        self.gate = gate
        self.model = model if model is not None else build_model(schema, spec)
        if self.model.controller is not None:
            raise SearchError("field gates cannot be searched over a spec with an AdaFS "
                              "controller; run the selection before adafs")
        # the gated path reads the list of field outputs, never the one-table shortcut
        self.model.one_lookup = False
        self.embedding = GatedOutputs(self.model.embedding, gate, fields)
        self.model.embedding = self.embedding
        self.linear: GatedOutputs | None = None
        if self.model.linear is not None:
            self.linear = GatedOutputs(self.model.linear.weights, gate, fields,
                                       source=self.embedding)
            self.model.linear.weights = self.linear

    def forward(self, batch: Batch) -> torch.Tensor:
        return self.model(batch)

    def regularization(self) -> torch.Tensor | float:
        extra = getattr(self.gate, "regularization", None)
        reg = self.model.regularization()
        return reg + extra() if extra is not None else reg

    def arch_parameters(self) -> list[nn.Parameter]:
        return list(self.gate.parameters())

    def derive(self) -> dict[str, Any]:
        return {"scores": dict(zip(self.fields, self.gate.scores().tolist(), strict=True))}

    def set_mean_base(self, data: EncodedData, batch_size: int, rows: int) -> None:
        self.embedding.set_mean_base(data, batch_size, rows)
        if self.linear is not None:
            self.linear.set_mean_base(data, batch_size, rows)


class GateStep(TrainHook):
    """After every weight step: one Adam step of the gate parameters on the gradients the
    same batch left on them (the trainer's optimiser holds only the weights), then
    ``after_step(step)``."""

    def __init__(self, gated: GatedModel, lr: float,
                 after_step: Callable[[int], None] | None = None) -> None:
        params = gated.arch_parameters()
        self.optimizer = torch.optim.Adam(params, lr=lr) if params else None
        self.after_step = after_step
        self.steps = 0

    def on_step(self, trainer: Trainer, model: nn.Module, step: int, batch: Batch,
                loss: torch.Tensor) -> None:
        if self.optimizer is not None:
            self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)
        self.steps += 1
        if self.after_step is not None:
            self.after_step(step)


class EpochHook(TrainHook):
    def __init__(self, call: Callable[[int], None]) -> None:
        self.call = call

    def on_epoch_end(self, trainer: Trainer, model: nn.Module, epoch: int,
                     metrics: dict[str, float]) -> None:
        self.call(epoch)


def train_gated(ctx: SearchContext, fields: list[str], gate: FieldGate, epochs: int,
                after_step: Callable[[int], None] | None = None,
                on_epoch: Callable[[int], None] | None = None
                ) -> tuple[GatedModel, TrainResult, GateStep]:
    """Trains the backbone of ``ctx.spec`` with ``gate`` on ``fields`` (seeded from
    ``ctx.seed``; ``search_epochs`` epochs, default ``epochs``; gate lr ``gate_lr``,
    default the training lr), within the stage's budget."""
    config = search_config(ctx, epochs=epochs)
    torch.manual_seed(ctx.seed)
    gated = GatedModel(ctx.dataset.schema, ctx.spec, fields, gate)
    lr = option(ctx, "gate_lr", config.lr)
    if lr <= 0:
        raise SearchError(f"option gate_lr must be > 0, got {lr}")
    step = GateStep(gated, lr, after_step)
    hooks: list[TrainHook] = [step, TimeLimit(ctx.remaining)]
    if on_epoch is not None:
        hooks.append(EpochHook(on_epoch))
    fit = Trainer(config, hooks).fit(gated, ctx.dataset.train, ctx.dataset.valid,
                                     parameters=gated.weight_parameters())
    return gated, fit, step


def epoch_seconds(fit: TrainResult) -> float:
    """What an epoch of the gated model cost (the stage's estimate of a retrain epoch)."""
    return round(fit.total_seconds / max(1, len(fit.history)), 3)


class ProbeGate(FieldGate):
    """Returns ``value`` (set by the probe before each forward pass), else 1."""

    def __init__(self, n_fields: int) -> None:
        super().__init__(n_fields)
        self.value: torch.Tensor | None = None

    def forward(self, embeddings: list[torch.Tensor], batch: Batch) -> torch.Tensor:
        return self.ones if self.value is None else self.value


def trained_probe(ctx: SearchContext, fields: list[str]) -> tuple[GatedModel, ProbeGate, dict]:
    """The model of ``ctx.spec`` trained once, gated for probing (a copy: a fit reused from
    the run's cache stays as it was)."""
    config = search_config(ctx)
    outcome = fit_spec(ctx.dataset, ctx.spec, config)
    gate = ProbeGate(len(fields))
    gated = GatedModel(ctx.dataset.schema, ctx.spec, fields, gate,
                       model=copy.deepcopy(outcome.model)).eval()
    return gated, gate, {"search_valid_auc": outcome.metrics["valid"]["auc"]}
