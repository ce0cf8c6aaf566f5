"""AIM-style joint search (Automatic Interaction Machine; Zhu, Liu, et al., TKDE 2021, which
extends AutoFIS): which pairs interact, through which function, and each field's embedding
dim, in one supernet trained at one level.

- **embedding dims**: every field is embedded at the spec's ``embed_dim`` D and masked by
  ``m_f = sum_k softmax(delta_f)_k 1[d < c_k]`` over candidate dims c_k <= D (a smaller dim
  shares the leading coordinates of a larger one);
- **functions**: every pair mixes its candidate functions (``product``, ``multiply``,
  ``generalised``, ``concat``; ``autodrs.nn.functions``) by ``softmax(gamma_p)``;
- **pairs**: the mixed term passes a batch norm without affine parameters and an AutoFIS
  gate ``g_p``: ``logit += sum_p g_p BN(sum_k softmax(gamma_p)_k f_k(e_i, e_j))``.

Weights (Adam, the shared trainer), ``delta`` and ``gamma`` (Adam) and the gates (GRDA,
which sets useless gates to exactly zero) all step on the gradients of the *same* training
batch (one level, as AutoFIS). Derivation: pairs with a non-zero gate are kept with
``argmax gamma_p`` as their function and their gate kept as trainable attention (AutoFIS's
retrain); each field's dim is ``argmax delta_f``. The spec is retrained from scratch.
"""

from __future__ import annotations

import time
from typing import Any

import torch
from torch import nn

from autodrs.data.dataset import Batch
from autodrs.data.schema import Schema
from autodrs.methods.blocks.common import function_result
from autodrs.methods.blocks.sif import candidate_functions
from autodrs.methods.blocks.space import searched_pairs
from autodrs.methods.interaction.common import (
    InteractionOutput,
    InteractionSupernet,
    OptimizerStep,
    base_spec,
    embedded_names,
    interaction_key,
    option,
    planned_steps,
    search_config,
    train_supernet,
)
from autodrs.nn.functions import PairFunctions
from autodrs.search.base import Method, SearchContext, SearchError, StageResult, register_method
from autodrs.search.estimation import BudgetExhausted, Deadline
from autodrs.spec import ArchSpec, Interaction
from autodrs.train.grda import GRDA

AIM_FUNCTIONS = ("product", "multiply", "generalised", "concat")
DIM_CANDIDATES = (2, 4, 8, 16, 32, 64)
GATE_INIT = 0.6
GATE_SPREAD = 0.001
# GRDA as AutoFIS on DeepFM (c, mu); the threshold scale is raised to reach THRESHOLD by the
# last planned step, as AutoFIS does here for runs shorter than the paper's
GRDA_C, GRDA_MU = 5e-4, 0.8
THRESHOLD = 1.2
SEARCH_EPOCHS = 2


class DimMaskedEmbedding(nn.Module):
    """Field embeddings masked to a soft, searched length per field."""

    def __init__(self, inner: nn.Module, dim: int, candidates: list[int], fields: int) -> None:
        super().__init__()
        self.inner = inner
        self.names = inner.names
        self.dims = inner.dims
        self.candidates = candidates
        prefix = torch.tensor([[float(d < c) for d in range(dim)] for c in candidates])
        self.register_buffer("prefix", prefix, persistent=False)  # [K, D]
        self.delta = nn.Parameter(1e-3 * torch.randn(fields, len(candidates)))

    def masks(self) -> torch.Tensor:
        return torch.softmax(self.delta, dim=-1) @ self.prefix  # [F, D]

    def forward(self, batch: Batch) -> list[torch.Tensor]:
        masks = self.masks()
        return [e * masks[k] for k, e in enumerate(self.inner(batch))]


class GatedFunctionPairs(nn.Module):
    """Per pair: softmax-mixed functions, batch-normalised, scaled by a GRDA gate."""

    def __init__(self, pairs: list[tuple[int, int]], functions: tuple[str, ...],
                 dim: int) -> None:
        super().__init__()
        self.functions = PairFunctions(pairs, functions, dim)
        self.gamma = nn.Parameter(1e-3 * torch.randn(len(pairs), len(functions)))
        self.norm = nn.BatchNorm1d(len(pairs), affine=False)
        self.gate = nn.Parameter(torch.empty(len(pairs)).uniform_(GATE_INIT - GATE_SPREAD,
                                                                  GATE_INIT + GATE_SPREAD))

    def forward(self, stacked: torch.Tensor, batch: Batch) -> InteractionOutput:
        mixed = (self.functions(stacked) * torch.softmax(self.gamma, dim=-1)).sum(-1)
        return InteractionOutput(logit=(self.norm(mixed) * self.gate).sum(1))


class AIMSupernet(InteractionSupernet):
    def __init__(self, schema: Schema, spec: ArchSpec, pairs: list[tuple[str, str]],
                 functions: tuple[str, ...], candidates: list[int]) -> None:
        index = {n: i for i, n in enumerate(embedded_names(schema, spec))}
        module = GatedFunctionPairs([(index[a], index[b]) for a, b in pairs], functions,
                                    spec.embed_dim)
        super().__init__(schema, spec, module)
        self.embedding = DimMaskedEmbedding(self.embedding, spec.embed_dim, candidates,
                                            len(index))
        self.pairs = pairs
        self.function_names = functions

    def arch_parameters(self) -> list[nn.Parameter]:
        return [self.interaction.gate, self.interaction.gamma, self.embedding.delta]

    def derive(self) -> dict[str, Any]:
        gates = self.interaction.gate.detach().tolist()
        chosen = self.interaction.gamma.detach().argmax(-1).tolist()
        dims = self.embedding.delta.detach().argmax(-1).tolist()
        return {
            "pairs": {interaction_key(p): {"gate": g, "function": self.function_names[c]}
                      for p, g, c in zip(self.pairs, gates, chosen, strict=True)},
            "dims": {n: self.embedding.candidates[k]
                     for n, k in zip(self.embedding.names, dims, strict=True)},
        }


@register_method
class AIM(Method):
    """AIM: pairs (GRDA gates), their functions (softmax) and field dims (softmax) jointly.

    Options: ``functions`` (default product, multiply, generalised, concat), ``dims``
    (candidate dims, default the powers of two from 2 up to ``embed_dim``), ``search_epochs``
    (2), ``arch_lr`` (Adam on the function and dim logits, 1e-2), ``gate_lr`` (GRDA, 1.0),
    ``threshold`` (the GRDA threshold reached at the last planned step, 1.2 = twice the
    initial gate), ``backbone`` (deepfm | fm).
    """

    name = "aim"
    component = "interaction_function"
    strategies = ("gradient",)

    def search(self, ctx: SearchContext) -> StageResult:
        strategy = self.resolve_strategy(ctx)
        t0 = time.perf_counter()
        schema = ctx.dataset.schema
        spec = base_spec(ctx).copy(field_dims={}, interactions=ctx.spec.interactions)
        functions = candidate_functions(ctx, AIM_FUNCTIONS)
        candidates = dim_candidates(ctx, spec.embed_dim)
        arch_lr = option(ctx, "arch_lr", 1e-2)
        gate_lr = option(ctx, "gate_lr", 1.0)
        threshold = option(ctx, "threshold", THRESHOLD)
        if arch_lr <= 0 or gate_lr <= 0 or threshold < 0:
            raise SearchError("aim needs arch_lr > 0, gate_lr > 0 and threshold >= 0")
        pairs = searched_pairs(schema, spec)
        config = search_config(ctx, default_epochs=1 if ctx.fast else SEARCH_EPOCHS)
        steps = planned_steps(ctx, config)
        c = max(GRDA_C, threshold / (gate_lr ** (0.5 + GRDA_MU) * steps ** GRDA_MU))
        torch.manual_seed(ctx.seed)
        supernet = AIMSupernet(schema, spec.copy(interactions=None), pairs, functions,
                               candidates)
        gates = GRDA([supernet.interaction.gate], lr=gate_lr, c=c, mu=GRDA_MU)
        logits = torch.optim.Adam([supernet.interaction.gamma, supernet.embedding.delta],
                                  lr=arch_lr)
        stopped = False
        try:
            train_supernet(ctx, supernet, [OptimizerStep(gates), OptimizerStep(logits),
                                           Deadline(ctx)], config)
        except BudgetExhausted:
            stopped = True  # derive from the architecture parameters reached so far
        decision = supernet.derive()
        chosen = {p: decision["pairs"][interaction_key(p)] for p in pairs}
        kept = sorted((Interaction(fields=list(p), function=e["function"], weight=e["gate"])
                       for p, e in chosen.items() if e["gate"] != 0.0),
                      key=lambda i: -abs(i.weight or 0.0))
        memorised = [i for i in ctx.spec.interactions or [] if i.function == "memorise"]
        out = spec.copy(field_dims=decision["dims"], interactions=[*memorised, *kept],
                        fm=any(i.function == "product" for i in kept), pair_norm=False,
                        inner=False)
        out.validate(schema)
        scores = {p: abs(e["gate"]) for p, e in chosen.items()}
        functions_of = {interaction_key(p): e["function"] if e["gate"] != 0.0 else "none"
                        for p, e in chosen.items()}
        result = function_result(self.name, strategy, out, scores, functions_of,
                                 time.perf_counter() - t0,
                                 extra={"grda": {"c": c, "mu": GRDA_MU, "lr": gate_lr},
                                        "planned_steps": steps, "stopped_by_budget": stopped})
        result.dims = {n: float(d) for n, d in decision["dims"].items()}
        return result


def dim_candidates(ctx: SearchContext, dim: int) -> list[int]:
    raw = ctx.options.get("dims")
    if raw is None:
        values = [d for d in DIM_CANDIDATES if d < dim] + [dim]
    else:
        try:
            values = [int(v) for v in (raw.split(",") if isinstance(raw, str) else raw)]
        except ValueError as e:
            raise SearchError(f"option dims={raw!r} is not a list of integers") from e
    if not values or any(v < 1 or v > dim for v in values):
        raise SearchError(f"candidate dims must be in 1..{dim} (the spec's embed_dim), "
                          f"got {values}")
    return sorted(set(values))
