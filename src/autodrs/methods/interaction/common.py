"""What the interaction-search methods share: the candidate interactions, the FM/DeepFM-
shaped supernet their interaction modules plug into, the same-batch optimiser hook, and the
stage result (ranking best first, scores keyed ``"a*b"``, kept pairs in ``spec.interactions``).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from itertools import combinations
from typing import Any

import torch
from torch import nn

from autodrs.data.dataset import Batch
from autodrs.data.schema import Schema
from autodrs.models.backbones import DEFAULT_MLP
from autodrs.models.builder import LinearTerm
from autodrs.nn.embedding import FieldEmbedding
from autodrs.nn.layers import MLP
from autodrs.search.base import (
    Method,
    SearchContext,
    SearchError,
    StageResult,
    Supernet,
    option,
)
from autodrs.search.gradient import Temperature
from autodrs.spec import ArchSpec, Interaction, cross_name
from autodrs.train.losses import make_loss
from autodrs.train.trainer import TimeLimit, TrainConfig, Trainer, TrainHook

BACKBONES = ("deepfm", "fm")


def interaction_key(fields: Sequence[str]) -> str:
    return "*".join(fields)


def candidate_interactions(names: Sequence[str], order: int = 2) -> list[tuple[int, ...]]:
    """Every set of ``order`` distinct fields, as index tuples in field order."""
    return list(combinations(range(len(names)), order))


def embedded_names(schema: Schema, spec: ArchSpec) -> list[str]:
    """The names a spec embeds, in model order: used fields, then crosses."""
    return spec.used_fields(schema) + [cross_name(c) for c in spec.crosses]


def start_search(method: Method, ctx: SearchContext) -> tuple[str, float, ArchSpec, list[str]]:
    """What every interaction search begins with: its strategy, the start time, the base
    spec (:func:`base_spec`) and the embedded names, with a clear error under two fields."""
    strategy = method.resolve_strategy(ctx)
    t0 = time.perf_counter()
    spec = base_spec(ctx)
    names = embedded_names(ctx.dataset.schema, spec)
    if len(names) < 2:
        raise SearchError(f"interaction search needs at least two fields; {method.name} "
                          f"got {names}")
    return strategy, t0, spec, names


def base_spec(ctx: SearchContext) -> ArchSpec:
    """The spec the interaction stage searches and returns: ``ctx.spec``'s fields, crosses,
    dims and encoders with an FM (``backbone=fm``) or DeepFM (``backbone=deepfm``, default)
    head whose FM term models the chosen interactions."""
    backbone = str(ctx.options.get("backbone", "deepfm")).lower()
    if backbone not in BACKBONES:
        raise SearchError(f"interaction search backbone must be one of {BACKBONES}, "
                          f"got {backbone!r}")
    spec = ctx.spec.copy(linear=True, fm=True, inner=False, interactions=None,
                         cross_layers=0, attention_layers=0)
    if backbone == "fm":
        spec.mlp = []
    elif not spec.mlp:
        spec.mlp = list(DEFAULT_MLP)
    spec.validate(ctx.dataset.schema)
    return spec


def search_config(ctx: SearchContext, default_epochs: int | None = None) -> TrainConfig:
    """The context's training settings under the context's seed (the search's estimation
    setting: same trainer, same early stopping on validation AUC); ``search_epochs``
    (default: the method's ``default_epochs``, else the context's epochs; 1 with the
    ``fast`` option) bounds the search."""
    fallback = ctx.train.epochs if default_epochs is None else min(default_epochs,
                                                                    ctx.train.epochs)
    if ctx.fast:
        fallback = 1
    epochs = option(ctx, "search_epochs", fallback, int)
    if epochs < 1:
        raise SearchError(f"search_epochs must be >= 1, got {epochs}")
    return replace(ctx.train, seed=ctx.seed, epochs=epochs, checkpoint=None)


@dataclass
class InteractionOutput:
    """What an interaction module adds: a logit term and/or features for the deep head."""

    logit: torch.Tensor | None = None
    features: torch.Tensor | None = None


class InteractionSupernet(Supernet):
    """FM/DeepFM-shaped supernet: field embeddings (projected to a common dim for the
    interaction module) -> first-order term + the interaction module's logit term + an MLP
    over the flat embeddings and the module's features (a linear read-out without MLP)."""

    def __init__(self, schema: Schema, spec: ArchSpec, interaction: nn.Module,
                 feature_dim: int = 0) -> None:
        super().__init__()
        self.spec = spec
        self.embedding = FieldEmbedding(schema, spec)
        self.field_names = list(self.embedding.names)
        self.project = nn.ModuleDict({
            n: nn.Linear(d, spec.embed_dim, bias=False)
            for n, d in zip(self.field_names, self.embedding.dims, strict=True)
            if d != spec.embed_dim
        })
        self.linear = LinearTerm(schema, spec) if spec.linear else None
        self.bias = nn.Parameter(torch.zeros(())) if self.linear is None else None
        self.interaction = interaction
        self.mlp = None
        self.head = None
        if spec.mlp:
            self.mlp = MLP(sum(self.embedding.dims) + feature_dim, spec.mlp, spec.dropout,
                           spec.batch_norm)
            self.head = nn.Linear(self.mlp.out_dim, 1)
        elif feature_dim:
            self.head = nn.Linear(feature_dim, 1)

    def forward(self, batch: Batch) -> torch.Tensor:
        embeddings = self.embedding(batch)
        stacked = torch.stack([
            self.project[n](e) if n in self.project else e
            for n, e in zip(self.field_names, embeddings, strict=True)
        ], dim=1)
        logit = self.linear(batch) if self.linear is not None else self.bias
        out: InteractionOutput = self.interaction(stacked, batch)
        if out.logit is not None:
            logit = logit + out.logit
        if self.mlp is not None:
            parts = [torch.cat(embeddings, dim=1)]
            if out.features is not None:
                parts.append(out.features)
            logit = logit + self.head(self.mlp(torch.cat(parts, dim=1))).squeeze(1)
        elif self.head is not None and out.features is not None:
            logit = logit + self.head(out.features).squeeze(1)
        return logit


class OptimizerStep(TrainHook):
    """Steps ``optimizer`` after every weight step on the gradients the trainer's backward
    pass left on its parameters: the architecture update on the *same* training batch
    (single level: AutoFIS, OptInter) without a second forward pass. The trainer's own
    optimiser holds only the weights, so these gradients are untouched by its step.
    ``temperatures`` advance once per step."""

    def __init__(self, optimizer: torch.optim.Optimizer,
                 temperatures: Sequence[Temperature] = ()) -> None:
        self.optimizer = optimizer
        self.temperatures = list(temperatures)

    def on_step(self, trainer: Trainer, model: nn.Module, step: int, batch: Batch,
                loss: torch.Tensor) -> None:
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        for t in self.temperatures:
            t.advance()


def epochs_for_steps(train_rows: int, batch_size: int, epochs: int, steps: int) -> int:
    """``epochs``, or more when they hold fewer than ``steps`` weight steps."""
    per_epoch = max(1, -(-train_rows // batch_size))
    return max(epochs, -(-steps // per_epoch))


def planned_steps(ctx: SearchContext, config: TrainConfig) -> int:
    """Weight steps a search with ``config`` takes if it does not stop early."""
    steps = config.epochs * -(-len(ctx.dataset.train) // config.batch_size)
    return steps if config.max_steps is None else min(steps, config.max_steps)


class ArchSnapshot(TrainHook):
    """Records the architecture parameters at every epoch end, so the search's decision is
    read from its *last* state even though the trainer restores the weights of the best
    validation epoch (an early epoch's gates have not yet seen the later evidence)."""

    def __init__(self, parameters: Sequence[nn.Parameter]) -> None:
        self.parameters = list(parameters)
        self.values = [p.detach().clone() for p in self.parameters]

    def on_epoch_end(self, trainer: Trainer, model: nn.Module, epoch: int,
                     metrics: dict[str, float]) -> None:
        self.values = [p.detach().clone() for p in self.parameters]

    def restore(self) -> None:
        """Write the last recorded values back into the parameters."""
        with torch.no_grad():
            for p, v in zip(self.parameters, self.values, strict=True):
                p.copy_(v)


def arch_loss(spec: ArchSpec) -> Callable[[nn.Module, Batch], torch.Tensor]:
    """The spec's training loss on a batch, for architecture steps on other batches."""
    loss = make_loss(spec.loss.name, spec.loss.params)

    def fn(model: nn.Module, batch: Batch) -> torch.Tensor:
        return loss(model(batch), batch.label)

    return fn


def rescaled(paper_value: float, paper_steps: float, steps: int) -> float:
    """A per-step constant of a paper (a learning rate, a temperature decay) rescaled so that
    a run of ``steps`` travels as far as the paper's run of ``paper_steps`` did; unchanged
    for runs at least that long."""
    return paper_value * max(1.0, paper_steps / max(1, steps))


def train_supernet(ctx: SearchContext, supernet: Supernet, hooks: Sequence[TrainHook] = (),
                   config: TrainConfig | None = None, arch_at: str = "last") -> Trainer:
    """Train the supernet's weights with the shared trainer (architecture parameters left to
    ``hooks``) and leave the architecture parameters at their ``last`` state or at that of
    the epoch that validated ``best`` (which the trainer restores with the weights; OptInter's
    official search saves the architecture of its best epoch); returns the trainer (its
    ``step`` counts weight steps). The search epochs end early, keeping the architecture
    reached so far, when the stage's budget is spent."""
    if arch_at not in ("last", "best"):
        raise ValueError(f"arch_at must be last or best, got {arch_at!r}")
    snapshot = ArchSnapshot(supernet.arch_parameters())
    trainer = Trainer(config or search_config(ctx), [*hooks, snapshot, TimeLimit(ctx.remaining)])
    trainer.fit(supernet, ctx.dataset.train, ctx.dataset.valid,
                parameters=supernet.weight_parameters())
    if arch_at == "last":
        snapshot.restore()
    supernet.eval()
    return trainer


def modelled_pairs(spec: ArchSpec, names: Sequence[str]) -> set[frozenset[str]]:
    """The pairs of ``names`` a spec's kept interactions model as pairs: product, memorised
    and Hadamard pairs, and every two members of a group of order 2; all of them when the
    spec lists no interactions (``None``: every pair)."""
    if spec.interactions is None:
        return {frozenset(p) for p in combinations(names, 2)}
    out: set[frozenset[str]] = set()
    for inter in spec.interactions or []:
        if inter.function == "group":
            if inter.order == 2:
                out |= {frozenset(p) for p in combinations(inter.fields, 2)}
        elif len(inter.fields) == 2:
            out.add(frozenset(inter.fields))
    return out


def ranked(scores: dict[tuple[str, ...], float]) -> list[tuple[str, ...]]:
    """Interactions best first: by score, then by order, then by name (a stable tie-break)."""
    return sorted(scores, key=lambda k: (-scores[k], len(k), k))


def interaction_result(method: str, strategy: str, spec: ArchSpec,
                       scores: dict[tuple[str, ...], float], kept: Sequence[Interaction],
                       seconds: float, ranking: list[tuple[str, ...]] | None = None,
                       extra: dict[str, Any] | None = None) -> StageResult:
    """A StageResult with ``kept`` written into ``spec.interactions`` (pairs; see DESIGN.md
    for the ranking and score shapes) and the decision recorded in the spec's provenance."""
    out = spec.copy(interactions=list(kept))
    order = ranking if ranking is not None else ranked(scores)
    out.provenance.append({"method": method, "component": "interaction",
                           "kept": [list(i.fields) for i in kept]})
    return StageResult(
        method=method, strategy=strategy, spec=out,
        ranking=[list(k) for k in order],
        scores={interaction_key(k): round(float(scores[k]), 6) for k in order},
        seconds=seconds,
        extra={"kept": [i.key for i in kept], "candidates": len(scores), **(extra or {})},
    )
