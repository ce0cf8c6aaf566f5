"""ANT, Anchor & Transform (Liang, Zaheer, Wang, Ahmed; ICLR 2021, "Anchor & Transform:
Learning Sparse Embeddings for Large Vocabularies"): every value of a field embedded as a
sparse non-negative combination of a few anchor embeddings, ``E = T A``; the categorical
sibling of AutoDis (which embeds a number as a soft mix of a few meta-embeddings).

Per searched field: anchors ``A`` ([K, d], ``anchors`` K = 16 by default, at most the
vocabulary) and a transform ``T >= 0`` ([vocab, K]). Initialisation follows the paper's
frequency scheme: the K most frequent values are the anchors (their rows of T one-hot),
every other row starts as a jittered mean of all anchors. A and the model take the run's
Adam steps; after each, T takes a proximal SGD step on ``loss + l1 * ||T||_1`` under
non-negativity, ``T <- max(T - lr_T * grad - lr_T * l1, 0)`` (``transform_lr`` 5.0, ``l1``
0.002), which sets to exactly zero the entries the loss does not hold up: rare values (few
gradient steps against a shrink every step) and values of fields that do not matter end
with all-zero rows, embedded as zeros. (With T in the model's Adam instead, Adam's
normalised steps made the noise fields' gradients as large as the planted ones' and the
shrink kept as many of their entries; plain SGD, as in the paper, separates them.)

Delivered: the non-zero pattern of T goes into ``spec.anchors`` (count and mask); the
model stores A and T's non-zeros only (``nn.anchor.AnchorTable``), so its embedding
parameters are ``K d`` plus the non-zeros, and it is retrained from scratch on that
support (its weights ``|values|`` stay non-negative). Departures: no nonparametric
(NBANT) growth of the anchor count; the retrain starts from fresh draws rather than the
searched T and A.
"""

from __future__ import annotations

import time
from dataclasses import replace
from typing import Any

import torch
from torch import nn

from autodrs.data.schema import Schema
from autodrs.methods.embedding.common import (
    EmbeddingSupernet,
    _LastValues,
    dims_result,
    option,
    search_epochs,
    searched_fields,
    unsearched,
)
from autodrs.nn.mixed import SearchedEmbedding, value_counts
from autodrs.nn.pruned import encode_mask
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


def frequency_start(counts: torch.Tensor, anchors: int, generator: torch.Generator
                    ) -> torch.Tensor:
    """T at the start: the ``anchors`` most frequent values one-hot on their own anchor,
    every other value a jittered mean of all anchors (non-negative, rows summing to ~1)."""
    rows = len(counts)
    start = (0.5 + torch.rand(rows, anchors, generator=generator)) / anchors
    top = torch.argsort(counts, descending=True, stable=True)[:anchors]
    start[top] = 0.0
    start[top, torch.arange(len(top))] = 1.0
    return start


class ANTEmbedding(SearchedEmbedding):
    """Anchors and a dense non-negative transform per searched field (the search's form)."""

    def __init__(self, schema: Schema, spec: ArchSpec, fields: list[str], width: int,
                 counts: list[torch.Tensor], anchors: list[int], seed: int) -> None:
        super().__init__(schema, spec, fields, width)
        generator = torch.Generator().manual_seed(seed)
        self.anchors = nn.ParameterList(
            nn.Parameter(torch.randn(k, width, generator=generator) * 0.01) for k in anchors)
        self.transforms = nn.ParameterList(
            nn.Parameter(frequency_start(c, k, generator))
            for c, k in zip(counts, anchors, strict=True))

    def embed_field(self, index: int, ids: torch.Tensor) -> torch.Tensor:
        return self.transforms[index][ids] @ self.anchors[index]


class ANTSupernet(EmbeddingSupernet):
    def __init__(self, schema: Schema, spec: ArchSpec, fields: list[str], width: int,
                 counts: list[torch.Tensor], anchors: list[int], seed: int) -> None:
        super().__init__(schema, spec, ANTEmbedding(schema, spec, fields, width, counts,
                                                    anchors, seed))

    def arch_parameters(self) -> list[nn.Parameter]:
        return list(self.embedding.transforms)

    def derive(self) -> dict[str, Any]:
        return {f: encode_mask(t.detach() > 0)
                for f, t in zip(self.embedding.searched, self.embedding.transforms,
                                strict=True)}


class ProximalL1(TrainHook):
    """After each weight step, proximal SGD on every transform: ``T <- max(T - lr * grad -
    lr * l1, 0)``, the step of ``loss + l1 * ||T||_1`` restricted to ``T >= 0``."""

    def __init__(self, transforms: list[nn.Parameter], lr: float, l1: float) -> None:
        self.transforms = transforms
        self.lr = lr
        self.shrink = lr * l1
        self.steps = 0

    def on_step(self, trainer: Trainer, model: nn.Module, step: int, batch: Any,
                loss: torch.Tensor) -> None:
        with torch.no_grad():
            for t in self.transforms:
                if t.grad is not None:
                    t.sub_(self.lr * t.grad)
                    t.grad = None
                t.sub_(self.shrink).clamp_(min=0.0)
        self.steps += 1


@register_method
class ANT(Method):
    """``--methods ant``: options ``anchors`` (16 per field, at most its vocabulary), ``l1``
    (0.002, the L1 strength on T), ``transform_lr`` (5.0, T's proximal SGD step),
    ``search_epochs``. The searched fields share the spec's dim."""

    name = "ant"
    component = "embedding"
    strategies = ("gradient",)

    def search(self, ctx: SearchContext) -> StageResult:
        strategy = self.resolve_strategy(ctx)
        t0 = time.perf_counter()
        schema, spec = ctx.dataset.schema, ctx.spec
        fields = searched_fields(ctx)
        widths = {spec.dim_of(f) for f in fields}
        if len(widths) != 1:
            raise SearchError("ANT embeds fields of one width; the spec's fields have dims "
                              f"{sorted(widths)}")
        width = widths.pop()
        count = option(ctx, "anchors", 16, int)
        l1 = option(ctx, "l1", 0.002)
        if count < 1 or l1 < 0:
            raise SearchError(f"ANT needs anchors >= 1 and l1 >= 0, got {count} and {l1}")
        counts = [value_counts(ctx.dataset.train, schema, f) for f in fields]
        anchors = [min(count, schema.field(f).vocab_size) for f in fields]
        torch.manual_seed(ctx.seed)
        supernet = ANTSupernet(schema, spec, fields, width, counts, anchors, ctx.seed)
        epochs = search_epochs(ctx)
        config = replace(ctx.train, epochs=epochs, patience=epochs + 1, progress=False,
                         checkpoint=None)
        prox = ProximalL1(supernet.arch_parameters(), option(ctx, "transform_lr", 5.0), l1)
        last = _LastValues(supernet.arch_parameters())
        stopped = False
        try:
            Trainer(config, [prox, last, Deadline(ctx)]).fit(
                supernet, ctx.dataset.train, ctx.dataset.valid,
                parameters=supernet.weight_parameters())
            last.restore()  # T where the search ended, not at the best epoch
        except BudgetExhausted:
            stopped = True
        reason = unsearched(self.name, ctx, prox.steps, stopped, 1)
        if reason is not None:
            return no_result(self.name, strategy, spec, reason, time.perf_counter() - t0)
        out = spec.copy(anchors=dict(spec.anchors))
        dims: dict[str, float] = {}
        coded: dict[str, float] = {}
        per_value: dict[str, float] = {}
        nonzeros: dict[str, int] = {}
        for f, t, k, c in zip(fields, supernet.embedding.transforms, anchors, counts,
                              strict=True):
            mask = t.detach() > 0
            out.anchors[f] = {"count": k, "mask": encode_mask(mask)}
            rows = mask.sum(1).float()
            dims[f] = float(mask.float().mean())
            seen = c > 0
            coded[f] = round(float((rows[seen] > 0).float().mean()), 4) if seen.any() else 0.0
            per_value[f] = round(float((rows * c).sum() / c.sum().clamp_min(1.0)), 3)
            nonzeros[f] = int(mask.sum())
        return dims_result(
            self.name, strategy, ctx, out, dims, time.perf_counter() - t0,
            extra={"anchors": dict(zip(fields, anchors, strict=True)), "l1": l1,
                   "nonzeros": nonzeros, "coded_share": coded,
                   "occurrence_weighted_nonzeros": per_value, "steps": prox.steps,
                   "stopped_by_budget": stopped})
