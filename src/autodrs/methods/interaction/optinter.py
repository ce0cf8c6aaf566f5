"""OptInter (Lyu, Tang, Guo, Tang, He, Zhang, Liu; ICDE 2022, "Memorize, Factorize, or be
Naive"): per field pair, choose how the pair is modelled.

Each pair (i, j) has three candidates: *memorise* (a dedicated embedding of the cross
feature i x j, hashed), *factorise* (the Hadamard product of per-field "addition"
embeddings, ``e'_i * e'_j``) and *naive* (nothing). The supernet feeds the mixture

    p_ij = a_mem E_cross[i x j] + a_fac (e'_i * e'_j) + a_naive 0,   a = softmax(alpha_ij / t)

of every pair into the MLP next to the field embeddings, with ``t = max(0.01, 1 - tau*step)``
annealed per step (no Gumbel noise). Weights (Adam) and alpha (Adam, ``arch_lr``) step on the
*same* training batch. As the official search (``CriteoSearch.py``), the search stops at the
first epoch that does not improve validation AUC and the architecture is read from the best
epoch (a later epoch's alpha has moved towards memorising what the training batches hold).
The architecture is the argmax per pair, retrained as the official ``DNN_cart`` with the
searched operators: memorised pairs become cross features of the spec embedded at
``pair_dim`` (``Interaction(function="memorise")``), factorised pairs the Hadamard product of
their own ``pair_dim`` embeddings fed to the MLP (``Interaction(function="hadamard")``),
naive pairs are dropped.
"""

from __future__ import annotations

import time
from dataclasses import replace

import torch
from torch import nn

from autodrs.data.dataset import Batch
from autodrs.data.schema import Schema
from autodrs.methods.interaction.common import (
    InteractionOutput,
    InteractionSupernet,
    OptimizerStep,
    arch_loss,
    candidate_interactions,
    interaction_key,
    interaction_result,
    option,
    planned_steps,
    rescaled,
    search_config,
    start_search,
    train_supernet,
)
from autodrs.nn.embedding import FieldEmbedding
from autodrs.search.base import Method, SearchContext, SearchError, StageResult, register_method
from autodrs.search.gradient import ArchStep, Temperature
from autodrs.spec import ArchSpec, Interaction, cross_name
from autodrs.train.trainer import TrainHook

CHOICES = ("memorise", "factorise", "naive")
SEARCH_CROSS_BUCKETS = 4096  # hashed ids per pair in the supernet (collisions are tolerable)
# the official per-step constants and the run length they anneal over (1 / tau steps)
PAPER_ARCH_LR = 1e-3
PAPER_TAU = 5e-5
PAPER_STEPS = 1 / PAPER_TAU


class PairChoice(nn.Module):
    """Every pair modelled by the softmax(alpha / t) mixture of its three candidates."""

    def __init__(self, schema: Schema, spec: ArchSpec, names: list[str],
                 pairs: list[tuple[int, ...]], pair_dim: int, buckets: int,
                 temperature: Temperature) -> None:
        super().__init__()
        kinds = {f.name: f.kind for f in schema.fields}
        self.memorisable = [p for p, (i, j) in enumerate(pairs)
                            if kinds.get(names[i]) == "categorical"
                            and kinds.get(names[j]) == "categorical"]
        crosses = [[names[pairs[p][0]], names[pairs[p][1]]] for p in self.memorisable]
        self.memory = FieldEmbedding(
            schema, ArchSpec(fields=[], crosses=crosses, cross_buckets=buckets,
                             embed_dim=pair_dim))
        self.factors = FieldEmbedding(schema, spec, dim_override=pair_dim)
        self.register_buffer("left", torch.tensor([p[0] for p in pairs]), persistent=False)
        self.register_buffer("right", torch.tensor([p[1] for p in pairs]), persistent=False)
        self.register_buffer("mem_index", torch.tensor(self.memorisable, dtype=torch.long),
                             persistent=False)
        # pairs without a cross feature (numerical or sequence fields) cannot be memorised
        mask = torch.zeros(len(pairs), len(CHOICES))
        mask[:, 0] = float("-inf")
        mask[self.memorisable, 0] = 0.0
        self.register_buffer("mask", mask, persistent=False)
        self.alpha = nn.Parameter(nn.init.xavier_normal_(torch.empty(len(pairs), len(CHOICES))))
        self.temperature = temperature
        self.n_pairs = len(pairs)
        self.pair_dim = pair_dim

    def weights(self) -> torch.Tensor:
        return torch.softmax((self.alpha + self.mask) / self.temperature.value, dim=-1)

    def forward(self, stacked: torch.Tensor, batch: Batch) -> InteractionOutput:
        w = self.weights()
        factors = torch.stack(self.factors(batch), dim=1)
        factorised = factors.index_select(1, self.left) * factors.index_select(1, self.right)
        pairs = w[:, 1, None] * factorised
        if self.memorisable:
            memorised = torch.stack(self.memory(batch), dim=1)
            pairs = pairs.index_add(1, self.mem_index, w[self.mem_index, 0, None] * memorised)
        return InteractionOutput(features=pairs.flatten(1))


class OptInterSupernet(InteractionSupernet):
    def arch_parameters(self) -> list[nn.Parameter]:
        return [self.interaction.alpha]

    def derive(self) -> dict[str, str]:
        choice = self.interaction.weights().argmax(-1).tolist()
        names = self.field_names
        pairs = zip(self.interaction.left.tolist(), self.interaction.right.tolist(),
                    strict=True)
        return {interaction_key((names[i], names[j])): CHOICES[c]
                for (i, j), c in zip(pairs, choice, strict=True)}


@register_method
class OptInter(Method):
    """OptInter: memorise / factorise / naive per pair, by annealed softmax, same batch.

    Options: ``backbone`` (deepfm | fm), ``pair_dim`` (default embed_dim // 2),
    ``arch_lr`` and ``tau`` (temperature decay per step): the official 1e-3 and 5e-5,
    rescaled to the planned number of search steps when the search is shorter than the
    official anneal (1/tau = 20k steps), so that the temperature still reaches its floor
    and alpha can move as far; ``cross_buckets`` (hashed ids per memorised pair in the
    supernet, default 4096), ``mode`` (same_batch, the paper's default, or bilevel),
    ``search_epochs``.
    """

    name = "optinter"
    component = "interaction"
    strategies = ("gradient",)

    def search(self, ctx: SearchContext) -> StageResult:
        strategy, t0, spec, names = start_search(self, ctx)
        config = search_config(ctx)
        steps = planned_steps(ctx, config)
        pair_dim = option(ctx, "pair_dim", max(1, spec.embed_dim // 2), int)
        arch_lr = option(ctx, "arch_lr", rescaled(PAPER_ARCH_LR, PAPER_STEPS, steps))
        tau = option(ctx, "tau", rescaled(PAPER_TAU, PAPER_STEPS, steps))
        mode = str(ctx.options.get("mode", "same_batch"))
        if mode not in ("same_batch", "bilevel"):
            raise SearchError(f"optinter mode must be same_batch or bilevel, got {mode!r}")
        buckets = option(ctx, "cross_buckets", min(spec.cross_buckets, SEARCH_CROSS_BUCKETS),
                         int)
        if pair_dim < 1 or buckets < 1 or arch_lr <= 0 or tau < 0:
            raise SearchError("optinter needs pair_dim >= 1, cross_buckets >= 1, arch_lr > 0 "
                              "and tau >= 0")
        schema = ctx.dataset.schema
        pairs = candidate_interactions(names, 2)
        temperature = Temperature(start=1.0, decay=tau, floor=0.01)
        torch.manual_seed(ctx.seed)
        module = PairChoice(schema, spec, names, pairs, pair_dim, buckets, temperature)
        supernet = OptInterSupernet(schema, spec, module,
                                    feature_dim=len(pairs) * pair_dim)
        arch_opt = torch.optim.Adam(supernet.arch_parameters(), lr=arch_lr)
        if mode == "same_batch":
            hook: TrainHook = OptimizerStep(arch_opt, [temperature])
        else:
            # the bi-level variant of the official code: alpha steps on validation batches
            hook = ArchStep(arch_opt, arch_loss(spec), mode="bilevel", every=1,
                            valid=ctx.dataset.valid, batch_size=config.batch_size,
                            seed=ctx.seed, temperatures=[temperature])
        # the official search: early stop at the first epoch without improvement, the
        # architecture of the best epoch
        train_supernet(ctx, supernet, [hook], replace(config, patience=1), arch_at="best")
        with torch.no_grad():
            logits = (module.alpha + module.mask).tolist()
        chosen = module.weights().argmax(-1).tolist()
        scores: dict[tuple[str, ...], float] = {}
        methods: dict[str, str] = {}
        kept: list[Interaction] = []
        crosses = [list(c) for c in spec.crosses]
        field_dims = dict(spec.field_dims)
        for (i, j), c, a in zip(pairs, chosen, logits, strict=True):
            key = (names[i], names[j])
            # how strongly modelling the pair beats leaving it out (not the annealed
            # softmax, which saturates at low temperature)
            scores[key] = max(a[0], a[1]) - a[2]
            methods[interaction_key(key)] = CHOICES[c]
            if CHOICES[c] == "memorise":
                if list(key) not in crosses:
                    crosses.append(list(key))
                    field_dims[cross_name(list(key))] = pair_dim
                kept.append(Interaction(fields=list(key), function="memorise"))
            elif CHOICES[c] == "factorise":
                kept.append(Interaction(fields=list(key), function="hadamard"))
        kept.sort(key=lambda inter: -scores[tuple(inter.fields)])
        # the searched supernet has no FM term: the pairs reach the MLP
        spec = spec.copy(crosses=crosses, field_dims=field_dims, pair_dim=pair_dim, fm=False)
        return interaction_result(
            self.name, strategy, spec, scores, kept, time.perf_counter() - t0,
            extra={"functions": methods, "temperature": temperature.value,
                   "memorised_crosses": [cross_name(i.fields) for i in kept
                                         if i.function == "memorise"]},
        )
