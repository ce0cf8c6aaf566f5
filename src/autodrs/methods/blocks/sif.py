"""SIF (Yao, Chen, Kwok, Li, Hsieh; WWW 2020, "Efficient Neural Interaction Function Search
for Collaborative Filtering"): an interaction function per field pair, found by one-shot
search with binarised architecture weights.

Every pair p computes all candidate functions ``f_k(e_i, e_j) = w_pk^T o_k(e_i, e_j)``
(``o`` in plus, multiply, max, min, concat; heads kept in the unit ball; SIF's element-wise
MLPs are left out, see ``autodrs.nn.functions``), and the logit sums ``sum_k a_pk f_k`` over pairs, with ``a_p`` in [0, 1]^K
initialised at 0.5 + N(0, 1e-3). As in the official code (NASP-style proximal steps):

0. (an addition, see ``SIF``) the weights warm up with every function active;
1. forward passes use the *binarised* weights ``onehot(argmax a_p)``, and the gradient
   with respect to them is applied to the continuous ``a`` (straight through);
2. every ``arch_every`` weight steps, ``a`` takes an Adam step on the loss of a
   *validation* batch (bi-level, first order), and is then clipped to [0, 1];
3. weights take Adam steps on training batches (the shared trainer), with every read-out
   head projected back into the unit ball before each forward pass (SIF's ``constrain``).

The function of a pair is ``argmax a_p``. Pairs are ranked by how much the validation loss
of the supernet grows when the pair's chosen term is left out of the logit.
"""

from __future__ import annotations

import time
from dataclasses import replace
from typing import Any

import torch
from torch import nn

from autodrs.data.dataset import Batch
from autodrs.data.schema import Schema
from autodrs.methods.blocks.common import function_result
from autodrs.methods.blocks.space import NONE, PairFunctionSpace
from autodrs.methods.interaction.common import (
    InteractionOutput,
    InteractionSupernet,
    embedded_names,
    interaction_key,
    option,
    search_config,
    train_supernet,
)
from autodrs.nn.functions import PairFunctions
from autodrs.search.base import Method, SearchContext, SearchError, StageResult, register_method
from autodrs.search.estimation import BudgetExhausted, Deadline
from autodrs.search.gradient import ArchStep
from autodrs.spec import ArchSpec
from autodrs.train.losses import make_loss
from autodrs.train.trainer import Trainer

SIF_FUNCTIONS = ("plus", "multiply", "max", "min", "concat")
ALPHA_INIT = 0.5
ALPHA_SPREAD = 1e-3
SCORE_ROWS = 4096
WARMUP_EPOCHS = 2
SEARCH_EPOCHS = 4


class BinarisedPairs(nn.Module):
    """All candidate functions of every pair, mixed by binarised weights (see the module
    docstring); ``none`` is the zero function."""

    def __init__(self, pairs: list[tuple[int, int]], choices: tuple[str, ...],
                 dim: int) -> None:
        super().__init__()
        self.choices = choices
        functions = [c for c in choices if c != NONE]
        self.functions = PairFunctions(pairs, functions, dim)
        # columns of the choices in the function output (none has no column)
        self.register_buffer("columns", torch.tensor(
            [choices.index(f) for f in functions], dtype=torch.long), persistent=False)
        self.alpha = nn.Parameter(ALPHA_INIT + ALPHA_SPREAD * torch.randn(len(pairs),
                                                                          len(choices)))
        self.warming = False

    def binarised(self) -> torch.Tensor:
        hard = torch.zeros_like(self.alpha).scatter_(1, self.alpha.argmax(1, keepdim=True), 1.0)
        return hard + self.alpha - self.alpha.detach()

    def pair_terms(self, stacked: torch.Tensor) -> torch.Tensor:
        """``[B, P, K]`` logit terms of every candidate (zeros for ``none``)."""
        out = self.functions(stacked)
        full = out.new_zeros(out.shape[0], out.shape[1], len(self.choices))
        return full.index_copy(2, self.columns, out)

    def project_(self) -> None:
        """SIF's proximal projections: ``a`` clipped to [0, 1] (after each architecture
        step) and every read-out head kept in the unit ball (before each forward)."""
        with torch.no_grad():
            self.alpha.clamp_(0.0, 1.0)
        self.functions.constrain_heads()

    def forward(self, stacked: torch.Tensor, batch: Batch) -> InteractionOutput:
        if self.training:
            self.project_()
        terms = self.pair_terms(stacked)
        weights = self.binarised() if not self.warming else self.alpha.detach()
        return InteractionOutput(logit=(terms * weights).sum((1, 2)))


class SIFSupernet(InteractionSupernet):
    def __init__(self, schema: Schema, spec: ArchSpec, pairs: list[tuple[str, str]],
                 choices: tuple[str, ...]) -> None:
        index = {n: i for i, n in enumerate(embedded_names(schema, spec))}
        module = BinarisedPairs([(index[a], index[b]) for a, b in pairs], choices,
                                spec.embed_dim)
        super().__init__(schema, spec, module)
        self.pairs = pairs

    def arch_parameters(self) -> list[nn.Parameter]:
        return [self.interaction.alpha]

    def derive(self) -> dict[str, Any]:
        self.interaction.project_()
        choice = self.interaction.alpha.argmax(1).tolist()
        return {interaction_key(p): self.interaction.choices[c]
                for p, c in zip(self.pairs, choice, strict=True)}

    @torch.no_grad()
    def pair_ablation(self, batch: Batch) -> list[float]:
        """Per pair: how much the mean loss on ``batch`` grows when the pair's chosen
        function term is removed from the logit (negative: the pair only adds noise)."""
        self.eval()
        logit = self(batch)
        embeddings = self.embedding(batch)
        stacked = torch.stack([
            self.project[n](e) if n in self.project else e
            for n, e in zip(self.field_names, embeddings, strict=True)
        ], dim=1)
        terms = self.interaction.pair_terms(stacked)
        chosen = self.interaction.alpha.argmax(1)
        picked = terms.gather(2, chosen.view(1, -1, 1).expand(terms.shape[0], -1, 1))
        label = batch.label.float().unsqueeze(1)
        bce = nn.functional.binary_cross_entropy_with_logits
        without = bce(logit.unsqueeze(1) - picked.squeeze(2),
                      label.expand(-1, picked.shape[1]), reduction="none").mean(0)
        return (without - bce(logit, batch.label.float())).tolist()


@register_method
class SIF(Method):
    """SIF: one function per pair among plus, multiply, max, min and concat.

    Options: ``functions`` (comma-separated candidates, default SIF's five),
    ``search_backbone`` (the supernet: fm, default, SIF's pure interaction model; or deepfm,
    an MLP beside the pair terms), ``backbone`` (the returned spec: deepfm, default, keeps
    the spec's MLP beside the chosen pair terms; or fm),
    ``warmup_epochs`` (2), ``search_epochs`` (4), ``arch_lr`` (Adam on ``a``, 3e-3),
    ``arch_every`` (weight steps per architecture step, 1 as in the paper).

    One addition to the paper: the weights first train for ``warmup_epochs`` with every
    function of every pair active (weights ``a``, no architecture steps). With binarised
    weights a function's head is trained only while it is chosen, and an untrained head gives
    its ``a`` a random gradient; SIF's single user-item pair gets by with that, but with
    dozens of pairs the choice is then close to random (planted ``synthetic``, 20k rows: 1 to
    3 of the 5 true pairs picked ``multiply`` without warm-up, 2 to 5 with it).
    """

    name = "sif"
    component = "interaction_function"
    strategies = ("gradient",)

    def search(self, ctx: SearchContext) -> StageResult:
        strategy = self.resolve_strategy(ctx)
        t0 = time.perf_counter()
        choices = candidate_functions(ctx, SIF_FUNCTIONS)
        backbone = str(ctx.options.get("backbone", "deepfm")).lower()
        search_backbone = str(ctx.options.get("search_backbone", "fm")).lower()
        space = PairFunctionSpace(ctx.dataset.schema, ctx.spec, choices, backbone,
                                  search_backbone)
        arch_lr = option(ctx, "arch_lr", 3e-3)
        every = option(ctx, "arch_every", 1, int)
        warmup = option(ctx, "warmup_epochs", 1 if ctx.fast else WARMUP_EPOCHS, int)
        if arch_lr <= 0 or every < 1 or warmup < 0:
            raise SearchError("sif needs arch_lr > 0, arch_every >= 1 and warmup_epochs >= 0")
        config = search_config(ctx, default_epochs=1 if ctx.fast else SEARCH_EPOCHS)
        supernet = space.supernet(ctx)
        assert isinstance(supernet, SIFSupernet)
        module = supernet.interaction
        steps, stopped = 0, False
        try:
            if warmup:
                module.warming = True
                Trainer(replace(config, epochs=warmup), [Deadline(ctx)]).fit(
                    supernet, ctx.dataset.train, ctx.dataset.valid,
                    parameters=supernet.weight_parameters())
                module.warming = False
            hook = ArchStep(torch.optim.Adam(supernet.arch_parameters(), lr=arch_lr),
                            arch_loss, mode="bilevel", every=every, valid=ctx.dataset.valid,
                            batch_size=config.batch_size, seed=ctx.seed)
            train_supernet(ctx, supernet, [hook, Deadline(ctx)], config)
            steps = hook.arch_steps
        except BudgetExhausted:
            stopped = True  # derive from the architecture weights reached so far
        module.warming = False
        decision = supernet.derive()
        spec = space.apply(ctx.spec, decision)
        ablation = supernet.pair_ablation(ctx.dataset.valid.batch(slice(0, SCORE_ROWS)))
        scores = dict(zip(space.pairs, ablation, strict=True))
        return function_result(self.name, strategy, spec, scores, decision,
                               time.perf_counter() - t0,
                               extra={"arch_steps": steps, "stopped_by_budget": stopped,
                                      "backbone": backbone,
                                      "search_backbone": search_backbone})


def arch_loss(model: nn.Module, batch: Batch) -> torch.Tensor:
    """The architecture step's loss: the model's training loss on one batch."""
    spec = model.spec
    return make_loss(spec.loss.name, spec.loss.params)(model(batch), batch.label)


def candidate_functions(ctx: SearchContext, default: tuple[str, ...]) -> tuple[str, ...]:
    raw = ctx.options.get("functions")
    if raw is None:
        return default
    names = [s.strip() for s in (raw.split(",") if isinstance(raw, str) else raw)]
    return tuple(n for n in names if n)
