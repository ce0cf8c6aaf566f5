"""ESAPN (Liu, Zhao, Wang, Liu, Tang; SIGIR 2020, "Automated Embedding Size Search in Deep
Recommender Systems"): every value's embedding size chosen by hard selection among
candidate sizes, enlarged over a data stream when a policy network decides so.

Embeddings: one table of the largest candidate size per searched field; a value at size d
reads its first d coordinates, the rest zero (the delivered model's prefix masks, so the
searched model is the stored one). Every value starts at the smallest size; sizes only
grow, one candidate at a time. (Read through a projection and a batch norm per size, as
AutoDim's shared candidates are, the model lost AUC block after block on the stream: on
synthetic 20k rows it fell from 0.63 to 0.56 while the fixed-dim model rose to 0.71.)

Policy: one small network per field, whose state is the value's frequency so far (log
count, scaled) and its current size (one-hot); it outputs the probability of *enlarge*
against *keep* (starting at 0.1). Streaming (the paper's setting): the training split is
read in its stored order (with ``--split time`` it lies before the validation and test
splits in time) as ``blocks`` consecutive blocks; each block is first *evaluated* by the
current model (its AUC, before training on it: the stream's next block), then trained on
batch by batch. For each incoming batch, before the model trains on it, the loss is scored
at every value's size and, field by field, with that field's values one size up; a value's
reward for enlarging is its loss drop (the loss change the paper rewards, here measured
on the same unseen rows, scaled by the batch's mean absolute drop) less ``enlarge_cost``
(0.1), and for keeping 0. Every value below the largest size samples an action from the
policy (enlarge: one size up), and the policy takes an Adam step (``policy_lr`` 5e-2) up
the expected reward ``sum_v p_v (gain_v - cost)``: REINFORCE's gradient with the
expectation over the two actions taken exactly, since both rewards are observed (sampled
REINFORCE left the planted and noise fields' sizes alike on 20k rows: too few enlargements
sampled to learn from in one pass). The weights then take an Adam step on the batch at
every value's size plus at every value's next size, so an enlargement lands on trained
coordinates (departures: the paper's reward is the loss change after the action and has
no cost term; without one every value of every field ended at the largest size here).

A fixed-dim model (the spec's model with every searched field at the largest candidate)
is trained on the same stream beside it, so the stage reports AUC per block for both
(``stream``) and on the validation split after the stream (``next_block``). Each value's
final size is stored as a per-value pruning mask over the leading coordinates
(``spec.pruning``) and retrained from scratch by the pipeline. Rows inside the training
split keep their file order (the cache keeps no time column), so the stream is in time
order only across splits.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from torch import nn

from autodrs.data.dataset import Batch
from autodrs.data.schema import Schema
from autodrs.methods.embedding.common import (
    EmbeddingSupernet,
    candidate_dims,
    dims_result,
    option,
    searched_fields,
)
from autodrs.models.builder import build_model
from autodrs.nn.init import EMBEDDING_STD
from autodrs.nn.mixed import SearchedEmbedding
from autodrs.nn.pruned import encode_mask
from autodrs.search.base import (
    Method,
    SearchContext,
    SearchError,
    StageResult,
    no_result,
    register_method,
)
from autodrs.spec import ArchSpec
from autodrs.train.losses import make_loss
from autodrs.train.metrics import auc

DEFAULT_CANDIDATES = (2, 4, 8, 16)
START_ENLARGE = 0.1
ALL = -1


class ESAPNEmbedding(SearchedEmbedding):
    """One table of the largest size per field; each value reads its first d coordinates
    (the rest zero), d its own (hard) size: the delivered model's prefix masks."""

    def __init__(self, schema: Schema, spec: ArchSpec, fields: list[str],
                 candidates: list[int]) -> None:
        super().__init__(schema, spec, fields, max(candidates))
        self.candidates = list(candidates)
        width = max(candidates)
        self.tables = nn.ModuleList()
        for i, f in enumerate(fields):
            table = nn.Embedding(schema.field(f).vocab_size, width)
            nn.init.normal_(table.weight, std=EMBEDDING_STD)
            self.tables.append(table)
            self.register_buffer(f"size_{i}", torch.zeros(schema.field(f).vocab_size,
                                                          dtype=torch.long), persistent=False)
        self.register_buffer("prefix", (torch.arange(width).unsqueeze(0)
                                        < torch.tensor(candidates).unsqueeze(1)).float(),
                             persistent=False)
        # the field whose values are read one size up (ALL: every field's)
        self.shift: int | None = None

    def sizes(self, index: int) -> torch.Tensor:
        return getattr(self, f"size_{index}")

    def embed_field(self, index: int, ids: torch.Tensor) -> torch.Tensor:
        k = self.sizes(index)[ids]
        if self.shift in (index, ALL):
            k = (k + 1).clamp(max=len(self.candidates) - 1)
        return self.tables[index](ids) * self.prefix[k]


class Policy(nn.Module):
    """Per field: state (scaled log frequency, one-hot size) -> P(enlarge)."""

    def __init__(self, sizes: int, hidden: int = 16) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(1 + sizes, hidden), nn.ReLU(), nn.Linear(hidden, 1))
        with torch.no_grad():
            self.net[2].weight.zero_()
            self.net[2].bias.fill_(float(np.log(START_ENLARGE / (1 - START_ENLARGE))))

    def forward(self, state: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.net(state).squeeze(-1))


def _rows(batch: Batch, start: int, stop: int) -> Batch:
    assert batch.label is not None
    return Batch(batch.cat[start:stop], batch.num[start:stop],
                 {k: v[start:stop] for k, v in batch.seq.items()}, batch.label[start:stop])


def _stream(data: Any, batch_size: int, per_block: int) -> Iterator[list[Batch]]:
    """The rows of ``data`` in stored order as blocks of ``per_block`` rows (the last may be
    shorter), each a list of batches of at most ``batch_size`` rows."""
    held: list[Batch] = []
    rows = 0
    for batch in data.batches(batch_size):
        start = 0
        while start < len(batch):
            stop = min(len(batch), start + per_block - rows)
            held.append(_rows(batch, start, stop))
            rows += stop - start
            start = stop
            if rows == per_block:
                yield held
                held, rows = [], 0
    if held:
        yield held


def _auc(labels: list[torch.Tensor], scores: list[torch.Tensor]) -> float | None:
    y = torch.cat(labels).numpy()
    if y.min() == y.max():
        return None
    return round(auc(y, torch.cat(scores).numpy()), 6)


@register_method
class ESAPN(Method):
    """``--methods esapn``: options ``candidates`` (2,4,8,16), ``blocks`` (10 blocks of the
    stream, 4 with ``--fast``), ``policy_lr`` (5e-2), ``enlarge_cost`` (0.1, in units of
    the batch's mean loss change). Its ``stream`` reports each block's AUC next to a
    fixed-dim model's."""

    name = "esapn"
    component = "embedding"
    strategies = ("rl",)

    def search(self, ctx: SearchContext) -> StageResult:
        strategy = self.resolve_strategy(ctx)
        t0 = time.perf_counter()
        schema, spec = ctx.dataset.schema, ctx.spec
        fields = searched_fields(ctx)
        candidates = candidate_dims(ctx, DEFAULT_CANDIDATES)
        blocks = option(ctx, "blocks", 4 if ctx.fast else 10, int)
        if blocks < 2:
            raise SearchError(f"ESAPN needs blocks >= 2, got {blocks}")
        width = max(candidates)
        torch.manual_seed(ctx.seed)
        generator = torch.Generator().manual_seed(ctx.seed)
        searched = EmbeddingSupernetFor(schema, spec, fields, candidates)
        emb: ESAPNEmbedding = searched.embedding  # type: ignore[assignment]
        fixed = build_model(schema, spec.copy(field_dims={**spec.field_dims,
                                                          **dict.fromkeys(fields, width)}))
        policies = nn.ModuleList(Policy(len(candidates)) for _ in fields)
        lr = ctx.train.lr
        opt = torch.optim.Adam(searched.parameters(), lr=lr)
        opt_fixed = torch.optim.Adam(fixed.parameters(), lr=lr)
        opt_policy = torch.optim.Adam(policies.parameters(), lr=option(ctx, "policy_lr", 5e-2))
        loss_fn = make_loss(spec.loss.name, spec.loss.params)
        cols = [schema.categorical.index(f) for f in fields]
        seen = [torch.zeros(schema.field(f).vocab_size) for f in fields]
        one_hot = torch.eye(len(candidates))
        cost = option(ctx, "enlarge_cost", 0.1)
        gain_sum, gain_n = [0.0] * len(fields), [0] * len(fields)
        train = ctx.dataset.train
        per_block = -(-len(train) // blocks)
        batch_size = ctx.train.batch_size
        stream: list[dict[str, Any]] = []
        enlarged = 0
        stopped = False
        batches = _stream(train, batch_size, per_block)
        for block in range(blocks):
            held = next(batches, [])
            rows = sum(len(b) for b in held)
            if not held:
                break
            if ctx.out_of_budget():
                stopped = True
                break
            entry = {"block": block, "rows": rows,
                     **self._evaluate(held, searched, fixed)}
            for batch in held:
                if ctx.out_of_budget():
                    stopped = True
                    break
                if len(batch) < 2:
                    continue
                # the incoming batch (before the model trains on it) at every value's size
                # and, field by field, with that field's values one size up: the loss
                # change is each value's reward of enlarging, credited to its field alone
                gains = []
                searched.eval()  # scored as at inference (no dropout, no batch statistics)
                with torch.no_grad():
                    base = nn.functional.binary_cross_entropy_with_logits(
                        searched(batch), batch.label, reduction="none")
                    for i in range(len(cols)):
                        emb.shift = i
                        gains.append(base - nn.functional.binary_cross_entropy_with_logits(
                            searched(batch), batch.label, reduction="none"))
                emb.shift = None
                searched.train()
                scale = torch.stack(gains).abs().mean().clamp_min(1e-8)
                policy_loss = torch.zeros(())
                for i, col in enumerate(cols):
                    column = batch.cat[:, col]
                    ids, inverse = column.unique(return_inverse=True)
                    per_value = torch.zeros(len(ids)).index_add_(0, inverse, gains[i])
                    per_value /= torch.bincount(inverse, minlength=len(ids)).float()
                    size = emb.sizes(i)[ids]
                    open_ = size < len(candidates) - 1
                    if not open_.any():
                        continue
                    ids, size, per_value = ids[open_], size[open_], per_value[open_]
                    gain_sum[i] += float(per_value.sum() / scale)
                    gain_n[i] += len(per_value)
                    freq = torch.log1p(seen[i][ids]) / np.log1p(len(train))
                    p = policies[i](torch.cat([freq.unsqueeze(1), one_hot[size]], 1))
                    act = torch.bernoulli(p.detach(), generator=generator)
                    # the reward of both actions is known (enlarge: the gain less its
                    # cost, keep: 0), so the policy gradient's expectation over the action
                    # is taken exactly: d/dtheta sum_v p_v (gain_v - cost)
                    reward = per_value / scale - cost
                    policy_loss = policy_loss - (p * reward).sum() / len(batch)
                    emb.sizes(i)[ids] = size + act.long()
                    enlarged += int(act.sum())
                # the weights train the batch at every value's size and at every value's
                # next size, so an enlargement lands on trained coordinates
                logits = searched(batch)
                emb.shift = ALL
                logits_up = searched(batch)
                emb.shift = None
                for j, col in enumerate(cols):
                    seen[j].index_add_(0, batch.cat[:, col], torch.ones(len(batch)))
                if policy_loss.requires_grad:
                    opt_policy.zero_grad(set_to_none=True)
                    policy_loss.backward()
                    opt_policy.step()
                loss = loss_fn(logits, batch.label) + loss_fn(logits_up, batch.label)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                fixed.train()
                loss_fixed = loss_fn(fixed(batch), batch.label)
                opt_fixed.zero_grad(set_to_none=True)
                loss_fixed.backward()
                opt_fixed.step()
            stream.append(entry)
            if stopped:
                break
        if not stream or (stopped and len(stream) < 2):
            return no_result(self.name, strategy, spec,
                             f"esapn found no embedding sizes: the budget ran out after "
                             f"{len(stream)} block(s) of the stream; give it more --budget",
                             time.perf_counter() - t0)
        valid = list(ctx.dataset.valid.batches(ctx.train.eval_batch_size))
        next_block = self._evaluate(valid, searched, fixed)
        scored = [b for b in stream[1:] if b["auc"] is not None and b["fixed_auc"] is not None]
        out = spec.copy(field_dims={**spec.field_dims, **dict.fromkeys(fields, width)},
                        pruning=dict(spec.pruning))
        cands = torch.tensor(candidates)
        dims: dict[str, float] = {}
        mean_dim: dict[str, float] = {}
        for i, f in enumerate(fields):
            value_dims = cands[emb.sizes(i)]
            mask = torch.arange(width).unsqueeze(0) < value_dims.unsqueeze(1)
            out.pruning[f] = encode_mask(mask)
            dims[f] = float(mask.float().mean())
            c = seen[i]
            mean_dim[f] = round(float((value_dims.float() * c).sum() / c.sum().clamp_min(1)), 3)
        return dims_result(
            self.name, strategy, ctx, out, dims, time.perf_counter() - t0,
            extra={"occurrence_weighted_dim": mean_dim, "candidates": candidates,
                   "stream": stream, "next_block": next_block,
                   "mean_block_auc": (round(float(np.mean([b["auc"] for b in scored])), 6)
                                      if scored else None),
                   "mean_block_fixed_auc": (round(float(np.mean([b["fixed_auc"]
                                                                 for b in scored])), 6)
                                            if scored else None),
                   "mean_gain": {f: round(gain_sum[i] / max(1, gain_n[i]), 4)
                                 for i, f in enumerate(fields)},
                   "enlargements": enlarged, "stopped_by_budget": stopped})

    @staticmethod
    @torch.no_grad()
    def _evaluate(batches: list[Batch], searched: nn.Module, fixed: nn.Module
                  ) -> dict[str, float | None]:
        """AUC of both models on ``batches``, before they train on them."""
        searched.eval()
        fixed.eval()
        labels = [b.label for b in batches]
        return {"auc": _auc(labels, [searched(b) for b in batches]),
                "fixed_auc": _auc(labels, [fixed(b) for b in batches])}


class EmbeddingSupernetFor(EmbeddingSupernet):
    """The spec's model with its searched fields read at ESAPN's per-value sizes."""

    def __init__(self, schema: Schema, spec: ArchSpec, fields: list[str],
                 candidates: list[int]) -> None:
        super().__init__(schema, spec, ESAPNEmbedding(schema, spec, fields, candidates))

    def arch_parameters(self) -> list[nn.Parameter]:
        return []

    def derive(self) -> dict[str, Any]:
        emb: ESAPNEmbedding = self.embedding  # type: ignore[assignment]
        cands = torch.tensor(emb.candidates)
        return {f: cands[emb.sizes(i)].tolist() for i, f in enumerate(emb.searched)}
