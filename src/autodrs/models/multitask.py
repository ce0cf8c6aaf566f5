"""Multi-task models: one logit per label of multi-label data (``schema.tasks``).

``build_model(schema, spec)`` builds a ``MultiTaskModel`` when the data has several labels
or the spec has a ``multitask`` part (``spec.MultiTaskSpec``):

- ``separate``: one model of the rest of the spec per task (the single-task baseline; a
  spec without a ``multitask`` part on multi-label data is this);
- ``shared_bottom`` (Caruana, 1997): the field embeddings are shared, then ``bottom``
  layers, then a ``tower`` per task. ``sharing`` says, per bottom layer, which module each
  task uses: tasks with the same number share it, so a layer can be shared by all, by some
  or by none (the space the ``mtl`` search explores);
- ``mmoe`` (Ma et al., KDD 2018): ``experts`` bottoms over the shared embeddings, mixed for
  each task by its own softmax gate over the embeddings, then the task's tower.

Training minimises ``sum_t w_t BCE_t`` (``training_loss``). The weights are fixed
(``weights``, 1 each by default) or, with ``gradnorm`` = alpha, adapted by GradNorm (Chen et
al., ICML 2018) at every training step: with ``G_t = ||grad_W w_t L_t||`` on the last
shared layer ``W``, ``r_t`` the task's inverse training rate ``(L_t / L_t(0))`` over its
mean across tasks, the weights take an Adam step (``gradnorm_lr``) on
``sum_t |G_t - mean(G) r_t^alpha|`` with the target held constant, then are renormalised to
sum to the number of tasks. The last shared layer is the last bottom layer every task shares
(the embedding tables when none is), or every expert's last layer for MMoE.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from autodrs.data.dataset import Batch
from autodrs.data.schema import Schema
from autodrs.models.builder import CTRModel
from autodrs.nn.embedding import FieldEmbedding
from autodrs.nn.init import linear
from autodrs.nn.layers import MLP
from autodrs.spec import ArchSpec, MultiTaskSpec


def _tower(in_dim: int, widths: list[int]) -> nn.Sequential:
    mlp = MLP(in_dim, widths)
    return nn.Sequential(mlp, linear(mlp.out_dim, 1))


class MultiTaskModel(nn.Module):
    """``forward(batch) -> [B, tasks]`` logits; see the module docstring."""

    def __init__(self, schema: Schema, spec: ArchSpec) -> None:
        super().__init__()
        mt = spec.multitask or MultiTaskSpec(backbone="separate")
        spec.validate(schema)
        if spec.multitask is None:
            mt.validate(schema)
        self.spec = spec
        self.tasks = schema.tasks
        self.controller = None  # no AdaFS controller (read by the training rules)
        self.kind = mt.backbone
        n = len(self.tasks)
        single = spec.copy(multitask=None)
        self.models = None
        if self.kind == "separate":
            self.models = nn.ModuleList(CTRModel(schema, single.copy()) for _ in self.tasks)
        else:
            self.embedding = FieldEmbedding(schema, single)
            in_dim = sum(self.embedding.dims)
            if self.kind == "shared_bottom":
                self.sharing = [list(map(int, row)) for row in
                                (mt.sharing or [[0] * n for _ in mt.bottom])]
                self.layers = nn.ModuleList()
                d = in_dim
                for row, width in zip(self.sharing, mt.bottom, strict=True):
                    self.layers.append(nn.ModuleDict({
                        str(k): nn.Sequential(linear(d, int(width)), nn.ReLU())
                        for k in sorted(set(row))}))
                    d = int(width)
                out = d
            else:
                self.experts = nn.ModuleList(MLP(in_dim, list(mt.bottom))
                                             for _ in range(int(mt.experts)))
                self.gates = nn.ModuleList(linear(in_dim, int(mt.experts))
                                           for _ in self.tasks)
                out = int(mt.bottom[-1])
            self.towers = nn.ModuleList(_tower(out, list(mt.tower)) for _ in self.tasks)
        weights = mt.weights if mt.weights is not None else [1.0] * n
        self.register_buffer("task_weights", torch.tensor(weights, dtype=torch.float32))
        self.alpha = mt.gradnorm
        self.gradnorm_lr = float(mt.gradnorm_lr)
        if self.alpha is not None:
            # L_t(0) (NaN until the first step) and the weights' Adam moments
            self.register_buffer("initial_losses", torch.full((n,), float("nan")))
            self.register_buffer("_m", torch.zeros(n), persistent=False)
            self.register_buffer("_v", torch.zeros(n), persistent=False)
            self._adam_steps = 0

    # ---------------------------------------------------------------- forward
    def forward(self, batch: Batch) -> torch.Tensor:
        if self.models is not None:
            return torch.stack([m(batch) for m in self.models], dim=1)
        x = torch.cat(self.embedding(batch), dim=1)
        if self.kind == "mmoe":
            experts = torch.stack([e(x) for e in self.experts], dim=1)  # [B, E, D]
            heads = [torch.einsum("be,bed->bd", torch.softmax(g(x), dim=1), experts)
                     for g in self.gates]
        else:
            # tasks on the same path of modules so far share one computation
            paths: dict[tuple[int, ...], torch.Tensor] = {(): x}
            for depth, (layer, row) in enumerate(zip(self.layers, self.sharing, strict=True)):
                nxt: dict[tuple[int, ...], torch.Tensor] = {}
                for t in range(len(self.tasks)):
                    prefix = tuple(r[t] for r in self.sharing[:depth])
                    key = (*prefix, row[t])
                    if key not in nxt:
                        nxt[key] = layer[str(row[t])](paths[prefix])
                paths = nxt
            heads = [paths[tuple(r[t] for r in self.sharing)] for t in range(len(self.tasks))]
        return torch.cat([tower(h) for tower, h in zip(self.towers, heads, strict=True)],
                         dim=1)

    # ---------------------------------------------------------------- training
    def task_losses(self, logits: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
        """Mean binary cross-entropy of each task, ``[tasks]``."""
        return F.binary_cross_entropy_with_logits(
            logits.float(), label.float(), reduction="none").mean(0)

    def training_loss(self, logits: torch.Tensor, batch: Batch) -> torch.Tensor:
        """``sum_t w_t L_t``; under GradNorm the weights first take their step."""
        assert batch.label is not None
        losses = self.task_losses(logits, batch.label)
        if self.alpha is not None and self.training and torch.is_grad_enabled():
            self.gradnorm_step(losses)
        return (self.task_weights * losses).sum()

    def shared_parameters(self) -> list[nn.Parameter]:
        """The weights of the last layer every task shares (GradNorm's ``W``)."""
        if self.models is not None:
            raise ValueError("separate models share no layer")
        if self.kind == "mmoe":
            return [e.net[-2].weight for e in self.experts]  # each expert's last linear
        shared = [k for k, row in enumerate(self.sharing) if len(set(row)) == 1]
        if not shared:
            return [p for p in self.embedding.parameters() if p.requires_grad]
        return [self.layers[shared[-1]][str(self.sharing[shared[-1]][0])][0].weight]

    def gradient_norms(self, losses: torch.Tensor) -> torch.Tensor:
        """``||grad_W L_t||`` on the shared layer, per task (the graph is kept)."""
        params = self.shared_parameters()
        norms = []
        for t in range(len(losses)):
            grads = torch.autograd.grad(losses[t], params, retain_graph=True,
                                        allow_unused=True)
            norms.append(torch.sqrt(sum((g.float() ** 2).sum() for g in grads
                                        if g is not None) + 0.0))
        return torch.stack([torch.as_tensor(v) for v in norms]).detach()

    @torch.no_grad()
    def _adam(self, grad: torch.Tensor, beta1: float = 0.9, beta2: float = 0.999) -> None:
        self._adam_steps += 1
        self._m.mul_(beta1).add_(grad, alpha=1 - beta1)
        self._v.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
        m = self._m / (1 - beta1 ** self._adam_steps)
        v = self._v / (1 - beta2 ** self._adam_steps)
        self.task_weights.sub_(self.gradnorm_lr * m / (v.sqrt() + 1e-8))

    def gradnorm_step(self, losses: torch.Tensor) -> None:
        """One GradNorm update of the task weights from this batch's task losses."""
        assert self.alpha is not None
        with torch.enable_grad():
            norms = self.gradient_norms(losses)
        with torch.no_grad():
            current = losses.detach().float()
            if torch.isnan(self.initial_losses).any():
                self.initial_losses.copy_(current)
            ratio = current / self.initial_losses.clamp_min(1e-12)
            inverse_rate = ratio / ratio.mean()
            w = self.task_weights
            g = w * norms
            target = g.mean() * inverse_rate ** self.alpha  # a constant, as in the paper
            # d/dw_t sum_t |w_t n_t - target_t| = sign(w_t n_t - target_t) n_t
            self._adam(torch.sign(g - target) * norms)
            w.clamp_(min=1e-4)
            w.mul_(len(w) / w.sum())

    def regularization(self) -> torch.Tensor | float:
        if self.models is None:
            return 0.0
        return sum((m.regularization() for m in self.models), 0.0)

    def embedding_parameters(self) -> int:
        if self.models is not None:
            return sum(m.embedding_parameters() for m in self.models)
        return int(self.embedding.embedding_parameters())
