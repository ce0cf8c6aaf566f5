"""AutoHash (Xue, Liu, Guo, Tang, Zhou, Zafeiriou, Zhang, Wang, Li; IEEE TKDE 2020,
"AutoHash: Learning Higher-order Feature Interactions for Deep CTR Prediction"):
high-order interactions through count sketches whose hash functions are learned.

Count Sketch compresses the order-p feature map ``e^(x p)`` of the field embeddings into
``B`` buckets: p sketches ``S_t[b] = sum_(i: h_t(i) = b) s_t(i) e_i`` (one hash ``h_t`` and
signs ``s_t`` each), multiplied in the Fourier domain over the buckets,
``T = IFFT(prod_t FFT(S_t))``, so each bucket of T sums signed products
``e_i1 * ... * e_ip``: every order-p interaction of the hashed fields, in ``B * d`` numbers.
Pre-defined hashes cannot select features; AutoHash learns them. Here each field chooses,
per order p, whether it takes part (keep / null, a straight-through Gumbel-softmax over two
logits) and, per sketch t, its bucket (a straight-through Gumbel-softmax over ``B``
logits), with a trainable signed weight in place of ``s_t`` (random signs at first). The
sketches of every order feed the MLP beside the embeddings (the deep head), on
batch-normalised embeddings. Weights and hash logits step on the same training batch
(Adam at ``arch_lr`` for the logits); the expected number of kept fields per order is
penalised by ``cost``, so fields that add nothing are hashed to null.

Delivered model: a block DAG with one ``sketch`` block per order over the fields kept at
that order, hashed to their chosen buckets (``autodrs.models.dag.SketchBlock``), and an
``mlp`` block over the embeddings and the sketches (DeepFM backbone; a linear read-out of
the sketches with ``backbone=fm``). Pairs are ranked by ``q_i q_j (|w_1i w_2j| + |w_1j w_2i|)
/ 2`` at order 2 (``q``: keep probabilities, ``w``: the sketches' weights), triples by
``q_i q_j q_k`` at order 3. Against AutoGroup: AutoGroup's group sums one power of a
*single* weighted sum of its members, so it models the interactions within each learned
group; AutoHash selects which fields take part at each order and every kept field
interacts with every other, the buckets trading exactness (colliding products share a
bucket) for size. The selection gate (null bucket) and the sparsity cost are this project's
reading of the paper's adaptive hashing.
"""

from __future__ import annotations

import time
from itertools import combinations
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from autodrs.data.dataset import Batch
from autodrs.methods.interaction.common import (
    InteractionOutput,
    InteractionSupernet,
    OptimizerStep,
    epochs_for_steps,
    interaction_result,
    option,
    ranked,
    search_config,
    start_search,
    train_supernet,
)
from autodrs.models.dag import EMBEDDINGS, sketch_power
from autodrs.search.base import Method, SearchContext, SearchError, StageResult, register_method

SEARCH_EPOCHS = 2
SEARCH_STEPS = 600
START_LOGIT = 3.0  # the start's margin: a kept field and its bucket drawn with p ~ 0.95


class LearnedHash(nn.Module):
    """Per order p = 2..P: keep/null logits ``[F, 2]``, bucket logits ``[p, F, B]`` and
    signed weights ``[p, F]``; the output is every order's sketch, ``[B_batch, (P-1) B d]``."""

    def __init__(self, n_fields: int, dim: int, max_order: int, buckets: int,
                 tau: float) -> None:
        super().__init__()
        self.orders = list(range(2, max_order + 1))
        self.buckets, self.tau, self.dim = buckets, tau, dim
        self.norm = nn.BatchNorm1d(n_fields * dim, affine=False)
        # every field kept, each in a random bucket, at first (Count Sketch's random hash):
        # from uniform logits the Gumbel draws would rehash every field at every step
        self.keep = nn.ParameterList(
            nn.Parameter(torch.tensor([[START_LOGIT, 0.0]]).repeat(n_fields, 1))
            for _ in self.orders)
        self.bucket = nn.ParameterList(
            nn.Parameter(START_LOGIT * F.one_hot(torch.randint(0, buckets, (p, n_fields)),
                                                 buckets).float())
            for p in self.orders)
        self.weight = nn.ParameterList(
            nn.Parameter(torch.randint(0, 2, (p, n_fields)).float() * 2 - 1)
            for p in self.orders)

    @property
    def feature_dim(self) -> int:
        return len(self.orders) * self.buckets * self.dim

    def choose(self, logits: torch.Tensor) -> torch.Tensor:
        """A hard one-hot choice over the last dim (straight-through; Gumbel noise while
        training, the argmax otherwise)."""
        if self.training:
            return F.gumbel_softmax(logits, tau=self.tau, hard=True, dim=-1)
        return F.one_hot(logits.argmax(-1), logits.shape[-1]).to(logits.dtype)

    def keep_probability(self, k: int) -> torch.Tensor:
        return torch.softmax(self.keep[k], dim=-1)[:, 0]

    def forward(self, stacked: torch.Tensor, batch: Batch) -> InteractionOutput:
        e = self.norm(stacked.flatten(1)).view(stacked.shape)
        parts = []
        for k, p in enumerate(self.orders):
            kept = self.choose(self.keep[k])[:, 0:1]  # [F, 1]
            assign = [kept * self.choose(self.bucket[k][t]) * self.weight[k][t].unsqueeze(1)
                      for t in range(p)]
            parts.append(sketch_power(e, assign))
        return InteractionOutput(features=torch.cat(parts, dim=1))


class AutoHashSupernet(InteractionSupernet):
    def __init__(self, *args: Any, cost: float, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.cost = cost

    def arch_parameters(self) -> list[nn.Parameter]:
        module: LearnedHash = self.interaction
        return [*module.keep, *module.bucket]

    def regularization(self) -> torch.Tensor:
        module: LearnedHash = self.interaction
        return self.cost * sum(module.keep_probability(k).sum()
                               for k in range(len(module.orders)))

    def derive(self) -> dict[str, Any]:
        """Per order: the kept fields and, per sketch, their buckets."""
        module: LearnedHash = self.interaction
        out = {}
        with torch.no_grad():
            for k, p in enumerate(module.orders):
                kept = (module.keep[k].argmax(-1) == 0).nonzero().flatten().tolist()
                out[f"order{p}"] = {
                    "fields": [self.field_names[i] for i in kept],
                    "hash": [[int(module.bucket[k][t, i].argmax()) for i in kept]
                             for t in range(p)]}
        return out


@register_method
class AutoHash(Method):
    """AutoHash: count sketches per order with learned (null-able) hashes.

    Options: ``backbone`` (deepfm | fm), ``max_order`` (3), ``buckets`` (8), ``tau`` (1.0),
    ``cost`` (penalty per expected kept field and order, 1e-3), ``arch_lr`` (0.01),
    ``search_epochs`` (default 2, more when they hold fewer than 600 steps).
    """

    name = "autohash"
    component = "interaction"
    strategies = ("gradient",)

    def search(self, ctx: SearchContext) -> StageResult:
        strategy, t0, spec, names = start_search(self, ctx)
        max_order = option(ctx, "max_order", 3, int)
        buckets, tau = option(ctx, "buckets", 8, int), option(ctx, "tau", 1.0)
        cost, arch_lr = option(ctx, "cost", 1e-3), option(ctx, "arch_lr", 0.01)
        if not 2 <= max_order <= 4 or buckets < 1 or tau <= 0 or cost < 0 or arch_lr <= 0:
            raise SearchError("autohash needs max_order in 2..4, buckets >= 1, tau > 0, "
                              "cost >= 0 and arch_lr > 0")
        config = search_config(ctx, default_epochs=epochs_for_steps(
            len(ctx.dataset.train), ctx.train.batch_size, SEARCH_EPOCHS, SEARCH_STEPS))
        torch.manual_seed(ctx.seed)
        module = LearnedHash(len(names), spec.embed_dim, max_order, buckets, tau)
        supernet = AutoHashSupernet(ctx.dataset.schema, spec.copy(fm=False), module,
                                    feature_dim=module.feature_dim, cost=cost)
        arch = torch.optim.Adam(supernet.arch_parameters(), lr=arch_lr)
        trainer = train_supernet(ctx, supernet, [OptimizerStep(arch)], config)
        hashed = supernet.derive()
        with torch.no_grad():
            q = [module.keep_probability(k) for k in range(len(module.orders))]
            w = module.weight[0].abs()
            scores: dict[tuple[str, ...], float] = {
                (names[i], names[j]): float(q[0][i] * q[0][j]
                                            * (w[0, i] * w[1, j] + w[0, j] * w[1, i]) / 2)
                for i, j in combinations(range(len(names)), 2)}
            triples = ({(names[i], names[j], names[m]): float(q[1][i] * q[1][j] * q[1][m])
                        for i, j, m in combinations(range(len(names)), 3)}
                       if max_order >= 3 else {})
        top3 = ranked(triples)[:len(names)]
        nodes: list[dict[str, Any]] = []
        for p in module.orders:
            chosen = hashed[f"order{p}"]
            if len(chosen["fields"]) >= 2:
                nodes.append({"id": f"sketch{p}", "type": "sketch", "inputs": [EMBEDDINGS],
                              "fields": chosen["fields"], "order": p, "width": buckets,
                              "hash": chosen["hash"]})
        sketches = [n["id"] for n in nodes]
        if spec.mlp:
            nodes.append({"id": "dnn", "type": "mlp", "inputs": [EMBEDDINGS, *sketches],
                          "width": spec.mlp[0], "layers": len(spec.mlp)})
            output = ["dnn"]
        elif sketches:
            output = sketches
        else:  # nothing kept under the FM head: the first-order term and the flat embeddings
            output = [EMBEDDINGS]
        dag = {"nodes": nodes, "output": output} if nodes else None
        out = spec.copy(fm=False, mlp=[], dag=dag) if dag else spec.copy(fm=False)
        out.validate(ctx.dataset.schema)
        result = interaction_result(
            self.name, strategy, out, {**scores, **{k: triples[k] for k in top3}}, [],
            time.perf_counter() - t0, ranking=ranked(scores) + top3,
            extra={"hash": hashed, "buckets": buckets, "search_steps": trainer.step,
                   "triples": [list(k) for k in top3]})
        kept2 = hashed["order2"]["fields"]
        result.extra["kept"] = ["*".join(k) for k in combinations(kept2, 2)]
        result.spec.provenance[-1]["kept"] = {f"order{p}": hashed[f"order{p}"]["fields"]
                                              for p in module.orders}
        result.dag = out.dag
        return result
