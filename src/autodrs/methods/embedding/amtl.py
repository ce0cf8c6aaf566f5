"""AMTL (Yan, Wang, Zhang, Lin, Lee, Xu, Zheng; CIKM 2021, "Learning Effective and Efficient
Embedding via an Adaptively-Masked Twins-based Layer"): each value's embedding dim, from 1
to the table's width d, chosen by a twin network over its frequency.

Every searched field has one table E of width d and an Adaptively-Masked Twins-based Layer:
two MLPs over the value's frequency features (log count scaled to [0, 1] and frequency
rank), h-AML for frequent values and l-AML for rare ones, mixed by the value's normalised
frequency ``a = log(1 + c) / log(1 + c_max)``: ``h = a h_AML(x) + (1 - a) l_AML(x)`` (so the
rare values' gradients are not drowned by the frequent ones'). The selection vector is
``t = softmax(h / tau)`` over the d positions, made hard by the straight-through estimator
(forward: the one-hot of its argmax k; backward: the softmax's gradient), and the mask keeps
the first k coordinates, ``m_j = sum_{i >= j} t_i``; the value is embedded as ``E[v] * m``.
Table, twins and model are trained together end to end on the training loss, as in the
paper: after each weight step (the run's Adam) the twins take an Adam step (``arch_lr``,
1e-2) on the same batch.

Departure: the paper's objective is the loss alone; here a memory term ``size_penalty``
times the mean kept share over the whole vocabulary (every value counts once, as in the
stored table) is added (default 0.01; 0 is the paper's objective), because on our small
data sets the training loss alone kept nearly every value at the full width (synthetic,
20k rows: every relevant field and two of four noise fields). The twins' output starts
favouring the full width, so the search starts from the dense model.

Each value keeps its argmax dim: stored as a per-value pruning mask over the leading
coordinates (``spec.pruning``, kept entries only) and retrained from scratch.
"""

from __future__ import annotations

import time
from dataclasses import replace
from typing import Any

import torch
from torch import nn

from autodrs.data.dataset import Batch
from autodrs.data.schema import Schema
from autodrs.methods.embedding.autoemb import frequency_features
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
from autodrs.search.gradient import ArchStep
from autodrs.spec import ArchSpec
from autodrs.train.losses import make_loss
from autodrs.train.trainer import Trainer


def twin_branch(inputs: int, hidden: int, width: int) -> nn.Sequential:
    """One AML branch: frequency features -> d selection logits, starting at the full width
    (the last position's bias above the others)."""
    net = nn.Sequential(nn.Linear(inputs, hidden), nn.ReLU(), nn.Linear(hidden, width))
    with torch.no_grad():
        net[2].weight.mul_(0.1)
        net[2].bias.zero_()
        net[2].bias[-1] = 0.5
    return net


class AMTLEmbedding(SearchedEmbedding):
    """One table of width d per searched field, masked per value by its twin layer."""

    def __init__(self, schema: Schema, spec: ArchSpec, fields: list[str], width: int,
                 counts: list[torch.Tensor], hidden: int = 16, tau: float = 1.0) -> None:
        super().__init__(schema, spec, fields, width)
        self.tau = tau
        self.tables = nn.ModuleList()
        for f in fields:
            table = nn.Embedding(schema.field(f).vocab_size, width)
            nn.init.normal_(table.weight, std=0.01)
            self.tables.append(table)
        inputs = 2
        self.high = nn.ModuleList(twin_branch(inputs, hidden, width) for _ in fields)
        self.low = nn.ModuleList(twin_branch(inputs, hidden, width) for _ in fields)
        # position i (0-based) keeps coordinates 0..i: prefix[i, j] = 1 for j <= i, m = t @ prefix
        self.register_buffer("prefix", torch.tril(torch.ones(width, width)), persistent=False)
        for i, c in enumerate(counts):
            log = torch.log1p(c)
            self.register_buffer(f"freq_{i}", frequency_features(c), persistent=False)
            self.register_buffer(f"alpha_{i}", (log / log.max().clamp_min(1.0)).unsqueeze(1),
                                 persistent=False)

    def logits(self, index: int, ids: torch.Tensor) -> torch.Tensor:
        x = getattr(self, f"freq_{index}")[ids]
        a = getattr(self, f"alpha_{index}")[ids]
        return a * self.high[index](x) + (1 - a) * self.low[index](x)

    def mask(self, index: int, ids: torch.Tensor) -> torch.Tensor:
        """``[n, d]`` straight-through masks: hard prefixes forward, soft gradients back."""
        soft = torch.softmax(self.logits(index, ids) / self.tau, dim=-1)
        hard = nn.functional.one_hot(soft.argmax(-1), soft.shape[-1]).to(soft.dtype)
        t = hard + soft - soft.detach()
        return t @ self.prefix

    def embed_field(self, index: int, ids: torch.Tensor) -> torch.Tensor:
        return self.tables[index](ids) * self.mask(index, ids)

    @torch.no_grad()
    def value_dims(self) -> list[torch.Tensor]:
        """Every value's chosen dim (1..d), per searched field."""
        out = []
        for i in range(len(self.searched)):
            ids = torch.arange(getattr(self, f"freq_{i}").shape[0])
            out.append(self.logits(i, ids).argmax(-1) + 1)
        return out


class AMTLSupernet(EmbeddingSupernet):
    def __init__(self, schema: Schema, spec: ArchSpec, fields: list[str], width: int,
                 counts: list[torch.Tensor], size_penalty: float, tau: float) -> None:
        super().__init__(schema, spec, AMTLEmbedding(schema, spec, fields, width, counts,
                                                     tau=tau))
        self.size_penalty = size_penalty

    def size_term(self) -> torch.Tensor | float:
        """``size_penalty`` x the mean kept share of every value of the searched fields."""
        if self.size_penalty == 0:
            return 0.0
        emb = self.embedding
        shares = [emb.mask(i, torch.arange(getattr(emb, f"freq_{i}").shape[0],
                                           device=emb.prefix.device)).mean()
                  for i in range(len(emb.searched))]
        return self.size_penalty * torch.stack(shares).mean()

    def arch_parameters(self) -> list[nn.Parameter]:
        emb = self.embedding
        return [*emb.high.parameters(), *emb.low.parameters()]

    def derive(self) -> dict[str, Any]:
        return {f: d.tolist() for f, d in zip(self.embedding.searched,
                                              self.embedding.value_dims(), strict=True)}


@register_method
class AMTL(Method):
    """``--methods amtl``: options ``size_penalty`` (0.01; 0 is the paper's loss alone),
    ``temperature`` (1.0), ``arch_lr`` (1e-2, the twins' Adam), ``search_epochs``. The width is
    the searched fields' dim in the spec (one dim for all of them)."""

    name = "amtl"
    component = "embedding"
    strategies = ("gradient",)

    def search(self, ctx: SearchContext) -> StageResult:
        strategy = self.resolve_strategy(ctx)
        t0 = time.perf_counter()
        schema, spec = ctx.dataset.schema, ctx.spec
        fields = searched_fields(ctx)
        widths = {spec.dim_of(f) for f in fields}
        if len(widths) != 1:
            raise SearchError("AMTL masks tables of one width; the spec's fields have dims "
                              f"{sorted(widths)}")
        width = widths.pop()
        penalty = option(ctx, "size_penalty", 0.01)
        tau = option(ctx, "temperature", 1.0)
        if penalty < 0 or not tau > 0:
            raise SearchError(f"AMTL needs size_penalty >= 0 and temperature > 0, got "
                              f"{penalty} and {tau}")
        counts = [value_counts(ctx.dataset.train, schema, f) for f in fields]
        torch.manual_seed(ctx.seed)
        supernet = AMTLSupernet(schema, spec, fields, width, counts, penalty, tau)
        epochs = search_epochs(ctx)
        config = replace(ctx.train, epochs=epochs, patience=epochs + 1, progress=False,
                         checkpoint=None)
        loss = make_loss(spec.loss.name, spec.loss.params)

        def twin_loss(model: nn.Module, batch: Batch) -> torch.Tensor:
            return loss(model(batch), batch.label) + supernet.size_term()

        twins = torch.optim.Adam(supernet.arch_parameters(), lr=option(ctx, "arch_lr", 1e-2))
        step = ArchStep(twins, twin_loss, mode="same_batch")
        last = _LastValues(supernet.arch_parameters())
        stopped = False
        try:
            Trainer(config, [step, last, Deadline(ctx)]).fit(
                supernet, ctx.dataset.train, ctx.dataset.valid,
                parameters=supernet.weight_parameters())
            last.restore()  # the twins where the search ended, not at the best epoch
        except BudgetExhausted:
            stopped = True
        reason = unsearched(self.name, ctx, step.arch_steps, stopped, 1)
        if reason is not None:
            return no_result(self.name, strategy, spec, reason, time.perf_counter() - t0)
        per_value = supernet.embedding.value_dims()
        out = spec.copy(field_dims={**spec.field_dims, **dict.fromkeys(fields, width)},
                        pruning=dict(spec.pruning))
        dims: dict[str, float] = {}
        mean_dim: dict[str, float] = {}
        for f, d, c in zip(fields, per_value, counts, strict=True):
            mask = torch.arange(width).unsqueeze(0) < d.unsqueeze(1)
            out.pruning[f] = encode_mask(mask)
            dims[f] = float(mask.float().mean())
            mean_dim[f] = round(float((d.float() * c).sum() / c.sum().clamp_min(1.0)), 3)
        return dims_result(
            self.name, strategy, ctx, out, dims, time.perf_counter() - t0,
            extra={"occurrence_weighted_dim": mean_dim, "width": width,
                   "size_penalty": penalty, "temperature": tau, "arch_steps": step.arch_steps,
                   "stopped_by_budget": stopped})
