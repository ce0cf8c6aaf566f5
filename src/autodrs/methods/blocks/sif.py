"""SIF (Yao, Chen, Kwok, Li, Hsieh; WWW 2020, "Efficient Neural Interaction Function Search
for Collaborative Filtering"): an interaction function per field pair, found by one-shot
search with binarised architecture weights.

Every pair p computes all candidate functions ``f_k(e_i, e_j) = w_pk^T o_k(m(e_i), m(e_j))``
(``o`` in plus, multiply, max, min, concat; ``m`` SIF's element-wise MLP; heads kept in the
unit ball), and the logit sums ``sum_k a_pk f_k`` over pairs, with ``a_p`` in [0, 1]^K
initialised at 0.5 + N(0, 1e-3). As in the official code (NASP-style proximal steps):

1. forward passes use the *binarised* weights ``onehot(argmax a_p)``, and the gradient
   with respect to them is applied to the continuous ``a`` (straight through);
2. every ``arch_every`` weight steps, ``a`` takes an Adam step on the loss of a
   *validation* batch (bi-level, first order), and is then clipped to [0, 1];
3. weights take Adam steps on training batches (the shared trainer), with every read-out
   head projected back into the unit ball before each forward pass (SIF's ``constrain``).

The function of a pair is ``argmax a_p``. Pairs are ranked by the spread (standard
deviation over validation rows) of their chosen function's logit term: a pair whose term
never varies does not matter, whatever its function.
"""

from __future__ import annotations

import time
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
    interaction_key,
    option,
)
from autodrs.nn.functions import PairFunctions
from autodrs.search.base import Method, SearchContext, SearchError, StageResult, register_method
from autodrs.search.gradient import run_gradient
from autodrs.spec import ArchSpec

SIF_FUNCTIONS = ("plus", "multiply", "max", "min", "concat")
ALPHA_INIT = 0.5
ALPHA_SPREAD = 1e-3
SCORE_ROWS = 4096


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
        return InteractionOutput(logit=(terms * self.binarised()).sum((1, 2)))


class SIFSupernet(InteractionSupernet):
    def __init__(self, schema: Schema, spec: ArchSpec, pairs: list[tuple[str, str]],
                 choices: tuple[str, ...]) -> None:
        index = {n: i for i, n in enumerate(
            spec.used_fields(schema) + ["x".join(c) for c in spec.crosses])}
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
    def pair_spread(self, batch: Batch) -> list[float]:
        """Standard deviation over ``batch`` of each pair's chosen-function logit term."""
        self.eval()
        embeddings = self.embedding(batch)
        stacked = torch.stack([
            self.project[n](e) if n in self.project else e
            for n, e in zip(self.field_names, embeddings, strict=True)
        ], dim=1)
        terms = self.interaction.pair_terms(stacked)
        chosen = self.interaction.alpha.argmax(1)
        picked = terms.gather(2, chosen.view(1, -1, 1).expand(terms.shape[0], -1, 1))
        return picked.squeeze(2).std(0).tolist()


@register_method
class SIF(Method):
    """SIF: one function per pair among plus, multiply, max, min and concat.

    Options: ``functions`` (comma-separated candidates, default SIF's five), ``backbone``
    (fm, default, as SIF's pure interaction model; or deepfm, keeping an MLP beside the
    pair terms), ``arch_lr`` (Adam on ``a``, 3e-3), ``arch_every`` (weight steps per
    architecture step, 1 as in the paper), ``epochs`` (search epochs).
    """

    name = "sif"
    component = "interaction_function"
    strategies = ("gradient",)

    def search(self, ctx: SearchContext) -> StageResult:
        strategy = self.resolve_strategy(ctx)
        t0 = time.perf_counter()
        choices = candidate_functions(ctx, SIF_FUNCTIONS)
        backbone = str(ctx.options.get("backbone", "fm")).lower()
        space = PairFunctionSpace(ctx.dataset.schema, ctx.spec, choices, backbone)
        arch_lr = option(ctx, "arch_lr", 3e-3)
        every = option(ctx, "arch_every", 1, int)
        if arch_lr <= 0 or every < 1:
            raise SearchError("sif needs arch_lr > 0 and arch_every >= 1")
        result = run_gradient(space, ctx, mode="bilevel", every=every, arch_lr=arch_lr)
        supernet = result.supernet
        assert isinstance(supernet, SIFSupernet)
        rows = ctx.dataset.valid.batch(slice(0, SCORE_ROWS))
        spread = supernet.pair_spread(rows)
        scores = {pair: s for pair, s in zip(space.pairs, spread, strict=True)}
        return function_result(self.name, strategy, result.spec, scores, result.decision,
                                time.perf_counter() - t0,
                                extra={"arch_steps": result.arch_steps,
                                       "stopped_by_budget": result.stopped_by_budget})


def candidate_functions(ctx: SearchContext, default: tuple[str, ...]) -> tuple[str, ...]:
    raw = ctx.options.get("functions")
    if raw is None:
        return default
    names = [s.strip() for s in (raw.split(",") if isinstance(raw, str) else raw)]
    return tuple(n for n in names if n)
