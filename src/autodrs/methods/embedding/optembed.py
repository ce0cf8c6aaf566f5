"""OptEmbed (Lyu, Tang, Zhu, Guo, Zhang, Tang, Liu; CIKM 2022, "OptEmbed: Learning Optimal
Embedding Table for Click-through Rate Prediction"): prune whole rows (values) with learned
per-field thresholds, and choose one dim per field by evolution on a one-shot supernet.

1. Supernet. Every searched field has a table of the common width D. A value's row is kept
   when ``m = BinaryStep(||e||_1 - t_field) = 1``; BinaryStep's gradient is the paper's
   straight-through estimate ``2 - 4|z|`` for ``|z| <= 0.4``, ``0.4`` up to 1, 0 beyond.
   The loss adds ``alpha * sum(exp(-t))``, which pulls the thresholds up (more pruning)
   against the loss, which holds up the rows that matter; t (starting at 0) takes steps of
   its own Adam optimiser (``threshold_lr``). In every training batch each (row, field)
   keeps only its first ``d ~ U{1..D}`` coordinates, so the weights serve every dim at once;
   validation uses the full width. With a first-order term, the row mask also gates the
   searched fields' first-order weights (a pruned value leaves the model).
2. Evolution over the per-field dims on the trained supernet (weights inherited, the row
   masks as learned): a random population, then each generation keeps the ``keep`` best,
   mutates the best ``mutations`` (each field redrawn with probability ``m_prob``) and
   crosses ``crossovers`` pairs of the kept (one cut point); fitness is the validation AUC
   of the supernet pinned to the candidate's dims. The most accurate candidate seen wins.
3. The spec stores each field at its dim (``field_dims``) and the kept rows as a
   whole-row mask (``pruning``; first-order weights in ``linear_pruning``), so the
   retrained model holds the kept rows only (``nn.pruned``, the ``full_rows`` layout).
"""

from __future__ import annotations

import time
from dataclasses import replace
from typing import Any

import numpy as np
import torch
from torch import nn

from autodrs.data.dataset import EncodedData
from autodrs.data.schema import Schema
from autodrs.methods.embedding.common import (
    EmbeddingSupernet,
    dims_result,
    flag,
    option,
    search_epochs,
    searched_fields,
)
from autodrs.models.builder import LINEAR_TAG
from autodrs.nn.mixed import SearchedEmbedding
from autodrs.nn.pruned import encode_mask, initial_table
from autodrs.search.base import (
    Method,
    SearchContext,
    SearchError,
    StageResult,
    no_result,
    register_method,
)
from autodrs.search.estimation import BudgetExhausted, Deadline
from autodrs.spec import ArchSpec
from autodrs.train.trainer import Trainer, TrainHook


class BinaryStep(torch.autograd.Function):
    """``z > 0`` forward; OptEmbed's piecewise straight-through gradient backward."""

    @staticmethod
    def forward(ctx: Any, z: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        ctx.save_for_backward(z)
        return (z > 0).to(z.dtype)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        (z,) = ctx.saved_tensors
        a = z.abs()
        slope = torch.where(a <= 0.4, 2 - 4 * a, torch.where(a <= 1, 0.4, 0.0))
        return grad * slope


class OptEmbedEmbedding(SearchedEmbedding):
    """The searched fields' width-D tables with learned row masks and, in training, a
    random prefix of the coordinates per (row, field); ``candidate`` pins the dims."""

    def __init__(self, schema: Schema, spec: ArchSpec, fields: list[str], width: int,
                 seed: int) -> None:
        super().__init__(schema, spec, fields, width)
        self.v = nn.ParameterList(
            nn.Parameter(initial_table(seed, f, schema.field(f).vocab_size, width))
            for f in fields)
        self.t = nn.Parameter(torch.zeros(len(fields)))
        # row k keeps the first k + 1 coordinates
        self.register_buffer("prefix", torch.tril(torch.ones(width, width)), persistent=False)
        self.candidate: list[int] | None = None

    def row_mask(self, index: int, rows: torch.Tensor) -> torch.Tensor:
        """1 for the rows kept, 0 for the pruned, [n]; straight-through gradient."""
        return BinaryStep.apply(rows.abs().sum(-1) - self.t[index])

    def embed_field(self, index: int, ids: torch.Tensor) -> torch.Tensor:
        v = self.v[index][ids]
        v = v * self.row_mask(index, v).unsqueeze(-1)
        if self.training:
            dims = torch.randint(0, self.width, (ids.shape[0],), device=ids.device)
            return v * self.prefix[dims]
        if self.candidate is not None:
            return v * self.prefix[self.candidate[index] - 1]
        return v

    @torch.no_grad()
    def kept_rows(self) -> list[torch.Tensor]:
        return [v.abs().sum(1) > self.t[i] for i, v in enumerate(self.v)]


class GatedFirstOrder(SearchedEmbedding):
    """The searched fields' first-order weights (width 1), each gated by its value's row
    mask, so a pruned value leaves the first-order term too; the other fields' weights are
    ``LinearTerm``'s (zero-initialised)."""

    def __init__(self, schema: Schema, spec: ArchSpec, rows: OptEmbedEmbedding,
                 seed: int) -> None:
        super().__init__(schema, spec, rows.searched, 1, first_order=True)
        self.w = nn.ParameterList(
            nn.Parameter(initial_table(seed, f + LINEAR_TAG, schema.field(f).vocab_size, 1))
            for f in rows.searched)
        self.__dict__["rows"] = rows  # not a submodule: its parameters are the embedding's

    def embed_field(self, index: int, ids: torch.Tensor) -> torch.Tensor:
        rows: OptEmbedEmbedding = self.__dict__["rows"]
        mask = rows.row_mask(index, rows.v[index][ids])
        return self.w[index][ids] * mask.unsqueeze(-1)


class OptEmbedSupernet(EmbeddingSupernet):
    def __init__(self, schema: Schema, spec: ArchSpec, fields: list[str], width: int,
                 seed: int, alpha: float, first_order: bool) -> None:
        super().__init__(schema, spec, OptEmbedEmbedding(schema, spec, fields, width, seed))
        self.alpha = alpha
        if first_order:
            self.model.linear.weights = GatedFirstOrder(schema, spec, self.embedding, seed)

    @property
    def rows(self) -> OptEmbedEmbedding:
        return self.embedding  # type: ignore[return-value]

    def regularization(self) -> torch.Tensor:
        """OptEmbed's pull on the thresholds: ``alpha * sum(exp(-t))``."""
        return self.alpha * torch.exp(-self.rows.t).sum()

    def arch_parameters(self) -> list[nn.Parameter]:
        return [self.rows.t]

    def weight_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.parameters() if p is not self.rows.t]

    def derive(self) -> dict[str, Any]:
        return {f: float(k.float().mean())
                for f, k in zip(self.rows.searched, self.rows.kept_rows(), strict=True)}


class ThresholdStep(TrainHook):
    """Steps the thresholds with their own optimiser after each weight step (their gradient
    comes from the same backward pass: the loss plus the regulariser)."""

    def __init__(self, optimizer: torch.optim.Optimizer) -> None:
        self.optimizer = optimizer
        self.steps = 0

    def on_step(self, trainer: Trainer, model: nn.Module, step: int, batch: Any,
                loss: torch.Tensor) -> None:
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.steps += 1


class Evolution:
    """OptEmbed's evolutionary search over per-field dims in 1..``width``, fitness the
    validation AUC of the supernet pinned to a candidate (each candidate scored once)."""

    def __init__(self, fitness: Any, fields: int, width: int, rng: np.random.Generator,
                 keep: int, mutations: int, crossovers: int, m_prob: float) -> None:
        self.fitness, self.fields, self.width, self.rng = fitness, fields, width, rng
        self.keep, self.mutations, self.crossovers = keep, mutations, crossovers
        self.m_prob = m_prob
        self.scores: dict[tuple[int, ...], float] = {}

    def score(self, cand: tuple[int, ...]) -> float:
        if cand not in self.scores:
            self.scores[cand] = float(self.fitness(cand))
        return self.scores[cand]

    def random(self) -> tuple[int, ...]:
        return tuple(int(d) for d in self.rng.integers(1, self.width + 1, self.fields))

    def mutate(self, parent: tuple[int, ...]) -> tuple[int, ...]:
        redraw = self.rng.random(self.fields) < self.m_prob
        fresh = self.rng.integers(1, self.width + 1, self.fields)
        return tuple(int(f) if r else d for d, r, f in zip(parent, redraw, fresh, strict=True))

    def cross(self, parents: list[tuple[int, ...]]) -> tuple[int, ...]:
        if len(parents) < 2 or self.fields < 2:
            return self.mutate(parents[0])
        a, b = self.rng.choice(len(parents), 2, replace=False)
        cut = int(self.rng.integers(1, self.fields))
        return parents[a][:cut] + parents[b][cut:]

    def run(self, iterations: int, should_stop: Any) -> tuple[int, int]:
        """Generations run and candidates scored; stops early (keeping what was scored)
        when ``should_stop()`` turns true."""
        population = [self.random() for _ in range(self.keep + self.mutations
                                                   + self.crossovers)]
        done = 0
        for _ in range(iterations):
            ranked: list[tuple[int, ...]] = []
            for cand in dict.fromkeys(population):
                if cand not in self.scores and should_stop():
                    return done, len(self.scores)
                self.score(cand)
                ranked.append(cand)
            ranked.sort(key=lambda c: (-self.scores[c], c))
            done += 1
            kept = ranked[:self.keep] if self.keep else ranked[:1]
            parents = ranked[:max(1, self.mutations)]
            population = (kept + [self.mutate(parents[i % len(parents)])
                                  for i in range(self.mutations)]
                          + [self.cross(ranked[:max(2, self.keep)])
                             for _ in range(self.crossovers)])
        for cand in dict.fromkeys(population):
            if cand not in self.scores and should_stop():
                break
            self.score(cand)
        return done, len(self.scores)

    def best(self) -> tuple[tuple[int, ...], float]:
        cand = min(self.scores, key=lambda c: (-self.scores[c], c))
        return cand, self.scores[cand]


def fitness_split(ctx: SearchContext, rows: int) -> EncodedData:
    """The validation rows candidates are scored on: all, or a seeded sample of ``rows``."""
    valid = ctx.dataset.valid
    if rows <= 0 or len(valid) <= rows:
        return valid
    g = torch.Generator().manual_seed(ctx.seed)
    return valid.subset(torch.randperm(len(valid), generator=g)[:rows].sort().values)


@register_method
class OptEmbed(Method):
    """``--methods optembed``: options ``alpha`` (the threshold pull, 1e-2), ``threshold_lr``
    (1e-3), ``weight_decay`` (5e-5, every weight of the supernet), ``first_order`` (gate and
    prune the searched fields' first-order weights with their rows; default: when the spec
    has a first-order term), ``search_epochs`` (the supernet's, default the training
    epochs), ``iterations`` (30 generations), ``keep`` (15), ``mutations`` (10),
    ``crossovers`` (10), ``m_prob`` (0.1) and ``fitness_rows`` (validation rows a candidate
    is scored on, 50,000; 0 for all). ``--trials`` caps the candidates scored."""

    name = "optembed"
    component = "embedding"
    strategies = ("evolution",)

    def search(self, ctx: SearchContext) -> StageResult:
        strategy = self.resolve_strategy(ctx)
        t0 = time.perf_counter()
        schema, spec = ctx.dataset.schema, ctx.spec
        fields = searched_fields(ctx)
        width = max(spec.dim_of(f) for f in fields)
        alpha = option(ctx, "alpha", 1e-2)
        t_lr = option(ctx, "threshold_lr", 1e-3)
        decay = option(ctx, "weight_decay", 5e-5)
        m_prob = option(ctx, "m_prob", 0.1)
        fast = ctx.fast  # the cheapest evolution that still mutates and crosses
        counts = {"iterations": option(ctx, "iterations", 2 if fast else 30, int),
                  "keep": option(ctx, "keep", 3 if fast else 15, int),
                  "mutations": option(ctx, "mutations", 2 if fast else 10, int),
                  "crossovers": option(ctx, "crossovers", 2 if fast else 10, int)}
        rows = option(ctx, "fitness_rows", 50_000, int)
        if alpha < 0 or t_lr <= 0 or decay < 0:
            raise SearchError(f"alpha and weight_decay must be >= 0 and threshold_lr > 0, got "
                              f"{alpha}, {decay} and {t_lr}")
        if not 0 < m_prob <= 1:
            raise SearchError(f"m_prob must be in (0, 1], got {m_prob}")
        if any(v < 0 for v in counts.values()) or counts["iterations"] < 1 or \
                counts["keep"] + counts["mutations"] + counts["crossovers"] < 1:
            raise SearchError(f"iterations must be >= 1 and keep, mutations, crossovers >= 0 "
                              f"with a population of at least one, got {counts}")
        first_order = flag(ctx, "first_order", spec.linear)
        if first_order and not spec.linear:
            raise SearchError("first_order prunes the first-order weights; the spec has no "
                              "first-order term (linear is false)")

        torch.manual_seed(ctx.seed)
        supernet = OptEmbedSupernet(schema, spec, fields, width, ctx.seed, alpha, first_order)
        epochs = search_epochs(ctx)
        config = replace(ctx.train, epochs=epochs, patience=epochs + 1, progress=False,
                         checkpoint=None, max_steps=None, weight_decay=decay)
        thresholds = ThresholdStep(torch.optim.Adam(supernet.arch_parameters(), lr=t_lr))
        trainer = Trainer(config, [thresholds, Deadline(ctx)])
        stopped = False
        try:
            trainer.fit(supernet, ctx.dataset.train, ctx.dataset.valid,
                        parameters=supernet.weight_parameters())
        except BudgetExhausted:
            stopped = True
        if thresholds.steps == 0:
            return no_result(self.name, strategy, spec,
                             "optembed found no embedding table: the budget ran out before "
                             "the supernet took a step; give it more --budget",
                             time.perf_counter() - t0)

        # evolution on the trained supernet, scored on (a sample of) validation
        data = fitness_split(ctx, rows)
        supernet.eval()

        def fitness(cand: tuple[int, ...]) -> float:
            supernet.rows.candidate = list(cand)
            return trainer.evaluate(supernet, data)["auc"]

        def should_stop() -> bool:
            return ctx.out_of_budget() or (ctx.trials is not None
                                           and len(evolution.scores) >= ctx.trials)

        evolution = Evolution(fitness, len(fields), width, np.random.default_rng(ctx.seed),
                              counts["keep"], counts["mutations"], counts["crossovers"],
                              m_prob)
        generations, scored = evolution.run(counts["iterations"], should_stop)
        supernet.rows.candidate = None
        if not evolution.scores:
            return no_result(self.name, strategy, spec,
                             "optembed found no embedding dims: the budget ran out before "
                             "the evolution scored a candidate; give it more --budget",
                             time.perf_counter() - t0)
        best, best_auc = evolution.best()
        dims = {f: int(d) for f, d in zip(fields, best, strict=True)}
        kept = dict(zip(fields, supernet.rows.kept_rows(), strict=True))
        out = spec.copy(field_dims={**spec.field_dims, **dims})
        pruning, linear_pruning = dict(spec.pruning), dict(spec.linear_pruning)
        for f in fields:
            pruning.pop(f, None)
            if bool(kept[f].all()):
                continue
            pruning[f] = encode_mask(kept[f].unsqueeze(1).expand(-1, dims[f]))
            if first_order:
                linear_pruning[f] = encode_mask(kept[f].unsqueeze(1))
        out.pruning, out.linear_pruning = pruning, linear_pruning
        kept_share = {f: float(k.float().mean()) for f, k in kept.items()}
        return dims_result(
            self.name, strategy, ctx, out, {f: d for f, d in dims.items()},
            time.perf_counter() - t0,
            scores={f: dims[f] * kept_share[f] for f in fields},
            extra={"kept_rows": {f: round(v, 4) for f, v in kept_share.items()},
                   "thresholds": {f: round(float(t), 5)
                                  for f, t in zip(fields, supernet.rows.t.detach(), strict=True)},
                   "width": width, "fitness_auc": round(best_auc, 6),
                   "generations": generations, "candidates_scored": scored,
                   "fitness_rows": len(data), "first_order": first_order,
                   "stopped_by_budget": stopped or ctx.out_of_budget()})
