"""AutoFIS (Liu, Zhu, Li, Zhang, Lai, Tang, He, Li, Yu; KDD 2020): a gate per field pair.

Search: the FM term of FM/DeepFM becomes ``sum_(i,j) alpha_ij * BN(<e_i, e_j>)`` with a
batch norm without affine parameters on each pair's inner product (so a gate measures a
pair's importance, not its embeddings' scale) and gates initialised at 0.6 +- 0.001. Both
optimisers step on the gradients of the *same* training batch: Adam on the weights, GRDA on
the gates,

    v_t = v_{t-1} + 1[t=0] w_0 - gamma g_t,  w_t = sign(v_t) max(|v_t| - c gamma^(0.5+mu) (t+1)^mu, 0),

which sets the gates of useless pairs to exactly zero. Pairs whose gate is zero are removed;
the survivors are retrained with their gates kept as trainable attention
(``Interaction.weight``). The ranking is by ``|alpha|``.
"""

from __future__ import annotations

import time

import torch
from torch import nn

from autodrs.methods.interaction.common import (
    InteractionOutput,
    InteractionSupernet,
    OptimizerStep,
    base_spec,
    candidate_interactions,
    interaction_result,
    option,
    train_supernet,
)
from autodrs.nn.layers import PairProducts
from autodrs.search.base import Method, SearchContext, SearchError, StageResult, register_method
from autodrs.spec import Interaction
from autodrs.train.grda import GRDA

# GRDA settings of the official code per backbone: (c, mu); the gate learning rate is 1.0
GRDA_DEFAULTS = {"deepfm": (5e-4, 0.8), "fm": (5e-3, 0.6)}
GATE_INIT = 0.6
GATE_SPREAD = 0.001


class GatedPairInteraction(nn.Module):
    """``sum_p alpha_p * BN(<e_i, e_j>)`` over candidate pairs p = (i, j)."""

    def __init__(self, pairs: list[tuple[int, ...]]) -> None:
        super().__init__()
        self.products = PairProducts(pairs)
        self.norm = nn.BatchNorm1d(len(pairs), affine=False)
        self.gate = nn.Parameter(torch.empty(len(pairs)).uniform_(GATE_INIT - GATE_SPREAD,
                                                                  GATE_INIT + GATE_SPREAD))

    def forward(self, stacked: torch.Tensor) -> InteractionOutput:
        return InteractionOutput(logit=(self.norm(self.products(stacked)) * self.gate).sum(1))


class AutoFISSupernet(InteractionSupernet):
    def arch_parameters(self) -> list[nn.Parameter]:
        return [self.interaction.gate]

    def derive(self) -> dict[str, float]:
        gates = self.interaction.gate.detach()
        names = self.field_names
        pairs = zip(self.interaction.products.left.tolist(),
                    self.interaction.products.right.tolist(), strict=True)
        return {f"{names[i]}*{names[j]}": float(g) for (i, j), g in zip(pairs, gates,
                                                                        strict=True)}


@register_method
class AutoFIS(Method):
    """AutoFIS: gates on every pair trained by GRDA on the same batches; zero gates pruned.

    Options: ``backbone`` (deepfm | fm), ``c``, ``mu``, ``gate_lr`` (GRDA; defaults per
    backbone from the official code), ``search_epochs``.
    """

    name = "autofis"
    component = "interaction"
    strategies = ("gradient",)

    def search(self, ctx: SearchContext) -> StageResult:
        strategy = self.resolve_strategy(ctx)
        t0 = time.perf_counter()
        spec = base_spec(ctx)
        backbone = "fm" if not spec.mlp else "deepfm"
        c_default, mu_default = GRDA_DEFAULTS[backbone]
        c = option(ctx, "c", c_default)
        mu = option(ctx, "mu", mu_default)
        gate_lr = option(ctx, "gate_lr", 1.0)
        torch.manual_seed(ctx.seed)
        probe = InteractionSupernet(ctx.dataset.schema, spec, nn.Identity())
        names = probe.field_names
        pairs = candidate_interactions(names, 2)
        if not pairs:
            raise SearchError("interaction search needs at least two fields")
        torch.manual_seed(ctx.seed)
        supernet = AutoFISSupernet(ctx.dataset.schema, spec, GatedPairInteraction(pairs))
        grda = GRDA(supernet.arch_parameters(), lr=gate_lr, c=c, mu=mu)
        trainer = train_supernet(ctx, supernet, [OptimizerStep(grda)])
        gates = supernet.interaction.gate.detach().tolist()
        scores = {(names[i], names[j]): abs(g) for (i, j), g in zip(pairs, gates, strict=True)}
        kept = [Interaction(fields=[names[i], names[j]], weight=round(g, 6))
                for (i, j), g in zip(pairs, gates, strict=True) if g != 0.0]
        kept.sort(key=lambda inter: -abs(inter.weight or 0.0))
        return interaction_result(
            self.name, strategy, spec, scores, kept, time.perf_counter() - t0,
            extra={"backbone": backbone, "grda": {"c": c, "mu": mu, "lr": gate_lr},
                   "search_steps": trainer.step,
                   "final_threshold": grda.threshold(grda.param_groups[0], trainer.step - 1)},
        )
