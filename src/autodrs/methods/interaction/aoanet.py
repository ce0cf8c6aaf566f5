"""AOANet (Lang, Zhu, Liu, Zhao, Xu, Shan; KDD 2021, "Architecture and Operation Adaptive
Network for Online Recommendations"): the generalised interaction network (GIN) with its
interaction unit learned.

GIN is a projection - interaction - fusion block. Projection: ``H`` heads map every field
embedding to ``p^h_i = W_h e_i`` (width ``w``). Interaction: head h combines each pair with
an operation; operation adaptation makes it the softmax(``beta_h``) mixture of
``GIN_OPS`` (Hadamard ``p_i * p_j``, bilinear ``p_i * (M_h p_j)``, inner ``<p_i, p_j>``), so
the head's operation is learned from the data (all multiply the pair: an additive operation
would let a gate stand for its fields' first-order effects). Fusion: ``sum_ij alpha_ij BN(o^h_ij)`` per head, a linear read-out
into the logit, beside the first-order term and a DNN over the embeddings. Architecture
adaptation: every pair has a gate ``alpha_ij`` (start 1) under an L1 penalty, so that
unimportant interactions are removed; the batch norm (no affine) keeps a gate from being
offset by the scale of its pair's output. Weights take the trainer's Adam steps; ``alpha``
and ``beta`` Adam steps (``arch_lr``) on the gradients of the same batch, each followed by
the L1 proximal step ``alpha <- sign(alpha) max(|alpha| - arch_lr * l1, 0)``, which sets
gates to exactly zero. Delivered model: a block DAG with a ``gin`` block over the pairs whose
gate is not zero, each head with its strongest operation, beside an ``mlp`` block (DeepFM
backbone) and the first-order term. No public code exists; the operation set and the
proximal L1 are this project's reading of the paper's description.
"""

from __future__ import annotations

import time
from typing import Any

import torch
from torch import nn

from autodrs.data.dataset import Batch
from autodrs.methods.interaction.common import (
    InteractionOutput,
    InteractionSupernet,
    OptimizerStep,
    candidate_interactions,
    epochs_for_steps,
    interaction_result,
    option,
    search_config,
    start_search,
    train_supernet,
)
from autodrs.models.dag import EMBEDDINGS, GIN_OPS, gin_operation
from autodrs.search.base import Method, SearchContext, SearchError, StageResult, register_method
from autodrs.train.trainer import Trainer

SEARCH_EPOCHS = 2
SEARCH_STEPS = 600


class GINSupernetBlock(nn.Module):
    """GIN over every pair with mixed operations per head and a gate per pair (all heads at
    once: ``[B, H, P, w]``)."""

    def __init__(self, n_fields: int, dim: int, pairs: list[tuple[int, ...]], heads: int,
                 width: int) -> None:
        super().__init__()
        self.register_buffer("left", torch.tensor([p[0] for p in pairs]), persistent=False)
        self.register_buffer("right", torch.tensor([p[1] for p in pairs]), persistent=False)
        self.project = nn.Parameter(torch.randn(heads, dim, width) / dim ** 0.5)
        self.bilinear = nn.Parameter(torch.eye(width).repeat(heads, 1, 1))
        self.norm = nn.BatchNorm1d(heads * len(pairs) * width, affine=False)
        self.gate = nn.Parameter(torch.ones(len(pairs)))
        self.op_logits = nn.Parameter(torch.zeros(heads, len(GIN_OPS)))
        self.read_out = nn.Linear(heads * width, 1)

    def forward(self, stacked: torch.Tensor, batch: Batch) -> InteractionOutput:
        projected = torch.einsum("bfd,hdw->bhfw", stacked, self.project)
        left, right = projected.index_select(2, self.left), projected.index_select(2, self.right)
        weights = torch.softmax(self.op_logits, dim=1)  # [H, ops]
        mixed = sum(weights[:, k].view(1, -1, 1, 1) * gin_operation(
            op, left, right, self.bilinear.unsqueeze(0)) for k, op in enumerate(GIN_OPS))
        b = mixed.shape[0]
        mixed = self.norm(mixed.reshape(b, -1)).reshape(mixed.shape)
        fused = torch.einsum("bhpw,p->bhw", mixed, self.gate)
        return InteractionOutput(logit=self.read_out(fused.flatten(1)).squeeze(1))


class AOANetSupernet(InteractionSupernet):
    def arch_parameters(self) -> list[nn.Parameter]:
        return [self.interaction.gate, self.interaction.op_logits]

    def derive(self) -> dict[str, Any]:
        module: GINSupernetBlock = self.interaction
        return {"gates": module.gate.detach().tolist(),
                "ops": [GIN_OPS[k] for k in module.op_logits.detach().argmax(1).tolist()]}


class ProximalStep(OptimizerStep):
    """The architecture's Adam step on the batch's gradients, then the L1 proximal step on
    the gates (exact zeros)."""

    def __init__(self, optimizer: torch.optim.Optimizer, gate: nn.Parameter,
                 threshold: float) -> None:
        super().__init__(optimizer)
        self.gate = gate
        self.threshold = threshold

    def on_step(self, trainer: Trainer, model: nn.Module, step: int, batch: Batch,
                loss: torch.Tensor) -> None:
        super().on_step(trainer, model, step, batch, loss)
        with torch.no_grad():
            self.gate.copy_(torch.sign(self.gate)
                            * torch.clamp(self.gate.abs() - self.threshold, min=0.0))


@register_method
class AOANet(Method):
    """AOANet: GIN with learned operations per head and L1-gated pairs.

    Options: ``backbone`` (deepfm | fm: with or without the DNN), ``heads`` (2), ``width``
    (8), ``arch_lr`` (0.01), ``l1`` (0.3: the gate shrinks by ``0.3 * arch_lr`` a step,
    less than one Adam step moves a gate the loss keeps asking for), ``search_epochs``
    (default 2, more when they hold fewer than 600 steps).
    """

    name = "aoanet"
    component = "interaction"
    strategies = ("gradient",)

    def search(self, ctx: SearchContext) -> StageResult:
        strategy, t0, spec, names = start_search(self, ctx)
        heads, width = option(ctx, "heads", 2, int), option(ctx, "width", 8, int)
        arch_lr, l1 = option(ctx, "arch_lr", 0.01), option(ctx, "l1", 1.0)
        if heads < 1 or width < 1 or arch_lr <= 0 or l1 < 0:
            raise SearchError("aoanet needs heads >= 1, width >= 1, arch_lr > 0 and l1 >= 0")
        config = search_config(ctx, default_epochs=epochs_for_steps(
            len(ctx.dataset.train), ctx.train.batch_size, SEARCH_EPOCHS, SEARCH_STEPS))
        pairs = candidate_interactions(names, 2)
        torch.manual_seed(ctx.seed)
        module = GINSupernetBlock(len(names), spec.embed_dim, pairs, heads, width)
        supernet = AOANetSupernet(ctx.dataset.schema, spec.copy(fm=False), module)
        arch = torch.optim.Adam(supernet.arch_parameters(), lr=arch_lr)
        trainer = train_supernet(ctx, supernet, [ProximalStep(arch, module.gate, arch_lr * l1)],
                                 config)
        derived = supernet.derive()
        keys = [(names[i], names[j]) for i, j in pairs]
        scores = {k: abs(g) for k, g in zip(keys, derived["gates"], strict=True)}
        kept = [k for k in sorted(keys, key=lambda k: -scores[k]) if scores[k] > 0]
        if not kept:  # every gate at zero: the strongest pair keeps the block alive
            kept = [max(keys, key=lambda k: scores[k])]
        nodes: list[dict[str, Any]] = [{"id": "gin", "type": "gin", "inputs": [EMBEDDINGS],
                                        "heads": heads, "width": width, "ops": derived["ops"],
                                        "pairs": [list(k) for k in kept]}]
        if spec.mlp:
            nodes.append({"id": "dnn", "type": "mlp", "inputs": [EMBEDDINGS],
                          "width": spec.mlp[0], "layers": len(spec.mlp)})
        dag = {"nodes": nodes, "output": [n["id"] for n in nodes]}
        out = spec.copy(fm=False, mlp=[], dag=dag)
        out.validate(ctx.dataset.schema)
        result = interaction_result(
            self.name, strategy, out, scores, [], time.perf_counter() - t0,
            extra={"ops": derived["ops"], "gin_pairs": len(kept), "search_steps": trainer.step,
                   "op_weights": torch.softmax(module.op_logits.detach(), 1).tolist()})
        result.extra["kept"] = ["*".join(k) for k in kept]
        result.spec.provenance[-1]["kept"] = [list(k) for k in kept]
        result.dag = out.dag
        return result
