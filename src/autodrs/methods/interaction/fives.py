"""FIVES (Xie, Wang, Li, Ding, Guerel, Zhang, Huang, Lin, Zhou; KDD 2021, "Feature
Interaction Via Edge Search"): fields as the nodes of a graph, interactions as its edges.

Layer k of a graph network builds order-(k+1) features: node i holds

    n_i^(k) = e_i * ( sum_j A^(k)_ij W^(k)_j n_j^(k-1) ) / (F - 1),    n^(0) = e,

i.e. field i crossed with what node j held one order lower. The soft adjacency of layer k is
``sigmoid(H^(k) / t)`` with t annealed from 1 towards 0.01 over the search (rescaling that
closes the gap between soft and binary edges), and, inductively, an edge into node j at
layer k is only as strong as node j's own lower-order features:

    A^(1) = sigmoid(H^(1) / t),   A^(k)_ij = sigmoid(H^(k)_ij / t) * deg^(k-1)_j / (F - 1).

A (validation batches) and the network weights (training batches) are updated alternately,
DARTS-style. Pair (i, j) is an edge of layer 1 (score ``max(A_ij, A_ji)``, kept above 0.5);
triple (i, j, l) is edge (i, j) of layer 2 on top of edge (j, l) of layer 1. No public code
exists; the recursion above is this project's reading of the paper's description.
"""

from __future__ import annotations

import time
from itertools import combinations

import torch
from torch import nn

from autodrs.data.dataset import Batch
from autodrs.methods.interaction.common import (
    InteractionOutput,
    InteractionSupernet,
    arch_loss,
    epochs_for_steps,
    interaction_result,
    option,
    planned_steps,
    ranked,
    search_config,
    start_search,
    train_supernet,
)
from autodrs.search.base import Method, SearchContext, SearchError, StageResult, register_method
from autodrs.search.gradient import ArchStep, Temperature
from autodrs.spec import Interaction

SEARCH_EPOCHS = 2
# at least this many weight (and edge) steps: the edges start at 0.5, and on `synthetic`
# (200,000 rows) 2 epochs (314 steps) kept 42 of the 73 unplanted pairs, 4 epochs (628
# steps) 33 on each of two seeds, with 3-4 of the 5 planted pairs in the top 5
# (docs/benchmarks.md)
SEARCH_STEPS = 600


class EdgeSearchGraph(nn.Module):
    """The graph network over field embeddings with one searched adjacency per layer."""

    def __init__(self, n_fields: int, dim: int, layers: int, temperature: Temperature) -> None:
        super().__init__()
        self.n_fields = n_fields
        self.dim = dim
        self.edges = nn.ParameterList(
            nn.Parameter(torch.empty(n_fields, n_fields).uniform_(-0.001, 0.001))
            for _ in range(layers))
        self.transforms = nn.ParameterList(
            nn.Parameter(torch.eye(dim).repeat(n_fields, 1, 1)
                         + 0.01 * torch.randn(n_fields, dim, dim))
            for _ in range(layers))
        self.register_buffer("off_diagonal", 1.0 - torch.eye(n_fields), persistent=False)
        self.temperature = temperature

    @property
    def feature_dim(self) -> int:
        return len(self.edges) * self.n_fields * self.dim

    def adjacency(self, temperature: float | None = None) -> list[torch.Tensor]:
        t = self.temperature.value if temperature is None else temperature
        out = []
        for h in self.edges:
            a = torch.sigmoid(h / t) * self.off_diagonal
            if out:
                degree = out[-1].sum(1) / (self.n_fields - 1)
                a = a * degree.unsqueeze(0)
            out.append(a)
        return out

    def forward(self, stacked: torch.Tensor, batch: Batch) -> InteractionOutput:
        node = stacked
        features = []
        for a, w in zip(self.adjacency(), self.transforms, strict=True):
            messages = torch.einsum("bjd,jde->bje", node, w)
            node = stacked * torch.einsum("ij,bjd->bid", a, messages) / (self.n_fields - 1)
            features.append(node.flatten(1))
        return InteractionOutput(features=torch.cat(features, dim=1))


class FIVESSupernet(InteractionSupernet):
    def arch_parameters(self) -> list[nn.Parameter]:
        return list(self.interaction.edges)

    def derive(self) -> dict[str, float]:
        with torch.no_grad():
            a = self.interaction.adjacency(temperature=1.0)[0]
        names = self.field_names
        return {f"{names[i]}*{names[j]}": float(max(a[i, j], a[j, i]))
                for i, j in combinations(range(len(names)), 2)}


@register_method
class FIVES(Method):
    """FIVES: edge search on the field graph, order p from the layer-p adjacency.

    Options: ``backbone`` (deepfm | fm), ``layers`` (2: orders 2 and 3), ``arch_lr``
    (Adam on the edges, 0.01), ``keep3`` (triples kept, default half the fields),
    ``search_epochs`` (default 2, more when they hold fewer than 600 steps).
    """

    name = "fives"
    component = "interaction"
    strategies = ("gradient",)

    def search(self, ctx: SearchContext) -> StageResult:
        strategy, t0, spec, names = start_search(self, ctx)
        n = len(names)
        layers = option(ctx, "layers", 2, int)
        arch_lr = option(ctx, "arch_lr", 0.01)
        keep3 = option(ctx, "keep3", max(1, n // 2), int)
        if layers < 1 or arch_lr <= 0 or keep3 < 1:
            raise SearchError("fives needs layers >= 1, arch_lr > 0 and keep3 >= 1")
        config = search_config(ctx, default_epochs=epochs_for_steps(
            len(ctx.dataset.train), ctx.train.batch_size, SEARCH_EPOCHS, SEARCH_STEPS))
        # anneal from 1 to the floor over the planned search
        temperature = Temperature(start=1.0, decay=0.99 / planned_steps(ctx, config),
                                  floor=0.01)
        torch.manual_seed(ctx.seed)
        module = EdgeSearchGraph(n, spec.embed_dim, layers, temperature)
        supernet = FIVESSupernet(ctx.dataset.schema, spec, module,
                                 feature_dim=module.feature_dim)
        arch_opt = torch.optim.Adam(supernet.arch_parameters(), lr=arch_lr)
        step = ArchStep(arch_opt, arch_loss(spec), mode="bilevel", every=1,
                        valid=ctx.dataset.valid, batch_size=config.batch_size, seed=ctx.seed,
                        temperatures=[temperature])
        train_supernet(ctx, supernet, [step], config)
        with torch.no_grad():
            # read at temperature 1: the annealed adjacency is saturated to 0/1 by now, the
            # edge logits still order the edges (the kept set, A > 0.5, is the same)
            adjacency = module.adjacency(temperature=1.0)
        first = adjacency[0]
        scores = {(names[i], names[j]): float(max(first[i, j], first[j, i]))
                  for i, j in combinations(range(n), 2)}
        kept = [Interaction(fields=list(k)) for k in ranked(scores) if scores[k] > 0.5]
        triples: dict[tuple[str, ...], float] = {}
        if layers > 1:
            second = adjacency[1]
            for i in range(n):
                for j in range(n):
                    for m in range(n):
                        if len({i, j, m}) < 3:
                            continue
                        key = tuple(sorted((names[i], names[j], names[m]),
                                           key=names.index))
                        value = float(second[i, j] * first[j, m])
                        triples[key] = max(triples.get(key, 0.0), value)
        top3 = ranked(triples)[:keep3]
        # the triples reach the model as third-order product terms
        kept += [Interaction(fields=list(k)) for k in top3]
        return interaction_result(
            self.name, strategy, spec, {**scores, **{k: triples[k] for k in top3}}, kept,
            time.perf_counter() - t0, ranking=ranked(scores) + top3,
            extra={"temperature": temperature.value,
                   "triples": [list(k) for k in top3]},
        )
