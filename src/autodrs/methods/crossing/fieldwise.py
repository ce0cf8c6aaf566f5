"""Field-wise logistic regression (AutoCross, Luo et al., KDD 2019) and the LR it extends.

A feature is a field, a bucketed numerical field or a cross of fields, each value one
weight. Field-wise LR keeps the logit of the current model fixed as an offset ``o`` and
learns only the new feature's weights, ``p = sigmoid(o + w[id])``. With one-hot features
the weights of different ids touch disjoint rows, so the L2-penalised problem splits into
one scalar problem per id, solved exactly by a few Newton steps for all ids (and all
candidates) at once:

    w <- w + (sum_rows(y - p) - l2 w) / (sum_rows p (1 - p) + l2)

The current model itself is an LR over every feature, fitted the same way one feature at
a time (backfitting), so that a candidate cross only learns what the main effects leave.
Cross ids are computed by ``nn.embedding.CrossIds``, exactly as the model will hash them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from autodrs.data.dataset import EncodedData
from autodrs.data.schema import Schema
from autodrs.nn.embedding import CrossIds

NEWTON_STEPS = 8
BACKFIT_SWEEPS = 3


def feature_ids(data: EncodedData, schema: Schema, feature: tuple[str, ...],
                buckets: int) -> tuple[torch.Tensor, int]:
    """Ids ``[N]`` of a feature and the number of ids it can take. A single categorical
    field is its own ids; a numerical field its bucket at the schema's boundaries; several
    categorical fields a cross, hashed into ``buckets`` when their product is larger."""
    if len(feature) == 1:
        f = schema.field(feature[0])
        if f.kind == "categorical":
            return data.cat[:, schema.categorical.index(f.name)], f.vocab_size
        if f.kind == "numerical":
            bounds = torch.tensor(f.boundaries or [], dtype=torch.float32)
            x = data.num[:, schema.numerical.index(f.name)].contiguous()
            return torch.bucketize(x, bounds), f.n_buckets
        raise ValueError(f"field {f.name!r} ({f.kind}) has no single id per row")
    cols = [schema.categorical.index(n) for n in feature]
    module = CrossIds(cols, [schema.field(n).vocab_size for n in feature], buckets)
    return module(data.cat), module.size


def compact(train: torch.Tensor, valid: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Renumber ids to ``0..k-1`` over the ids seen in ``train``; valid ids unseen there map
    to ``k``, a slot no train row touches, whose weight therefore stays 0. Newton steps then
    cost O(rows) however many buckets a hashed cross has."""
    seen, train_c = torch.unique(train, return_inverse=True)
    pos = torch.searchsorted(seen, valid.contiguous()).clamp(max=len(seen) - 1)
    valid_c = torch.where(seen[pos] == valid, pos, len(seen))
    return train_c, valid_c, len(seen) + 1


def newton_weights(ids: torch.Tensor, offset: torch.Tensor, y: torch.Tensor, size: int,
                   l2: float, start: torch.Tensor | None = None,
                   steps: int = NEWTON_STEPS) -> torch.Tensor:
    """Per-id weights of the offset LR ``sigmoid(offset + w[ids])`` with an L2 penalty."""
    w = torch.zeros(size, dtype=torch.float64) if start is None else start.clone()
    y64, o64 = y.double(), offset.double()
    for _ in range(steps):
        p = torch.sigmoid(o64 + w[ids])
        grad = torch.bincount(ids, weights=y64 - p, minlength=size) - l2 * w
        hess = torch.bincount(ids, weights=p * (1 - p), minlength=size) + l2
        w = w + grad / hess
    return w


def logloss(logit: torch.Tensor, y: torch.Tensor) -> float:
    return float(torch.nn.functional.binary_cross_entropy_with_logits(logit, y.double()))


@dataclass
class OffsetModel:
    """An LR over ``features`` fitted by backfitting, with its logits on train and valid."""

    schema: Schema
    train: EncodedData
    valid: EncodedData
    buckets: int
    l2: float
    features: list[tuple[str, ...]] = field(default_factory=list)
    weights: list[torch.Tensor] = field(default_factory=list)

    def __post_init__(self) -> None:
        y = self.train.label.double()
        prior = float(y.mean().clamp(1e-6, 1 - 1e-6))
        bias = float(np.log(prior / (1 - prior)))
        self.logit_train = torch.full((len(self.train),), bias, dtype=torch.float64)
        self.logit_valid = torch.full((len(self.valid),), bias, dtype=torch.float64)
        self._compact: list[tuple[torch.Tensor, torch.Tensor, int]] = []

    def ids(self, feature: tuple[str, ...]) -> tuple[torch.Tensor, torch.Tensor]:
        """Raw ids of a feature on train and valid."""
        train, _ = feature_ids(self.train, self.schema, feature, self.buckets)
        valid, _ = feature_ids(self.valid, self.schema, feature, self.buckets)
        return train, valid

    def add(self, feature: tuple[str, ...]) -> None:
        """Add a feature, fitting only its weights over the current logit."""
        tr, va, size = compact(*self.ids(feature))
        w = newton_weights(tr, self.logit_train, self.train.label, size, self.l2)
        self.features.append(feature)
        self.weights.append(w)
        self._compact.append((tr, va, size))
        self.logit_train += w[tr]
        self.logit_valid += w[va]

    def backfit(self, sweeps: int = BACKFIT_SWEEPS) -> None:
        """Refit every feature's weights given the others (coordinate-wise Newton)."""
        for _ in range(sweeps):
            for i in range(len(self.features)):
                tr, va, size = self._compact[i]
                w = self.weights[i]
                self.logit_train -= w[tr]
                self.logit_valid -= w[va]
                w = newton_weights(tr, self.logit_train, self.train.label, size, self.l2,
                                   start=w)
                self.weights[i] = w
                self.logit_train += w[tr]
                self.logit_valid += w[va]

    def valid_logloss(self) -> float:
        return logloss(self.logit_valid, self.valid.label)


Ids = dict[tuple[str, ...], tuple[torch.Tensor, torch.Tensor]]


def cross_gains(model: OffsetModel, candidates: list[tuple[str, ...]], rows: int,
                order: torch.Tensor, cache: Ids | None = None) -> dict[tuple[str, ...], float]:
    """Validation logloss gain of each candidate's field-wise LR fitted on the first
    ``rows`` train rows of ``order`` over the frozen logit of ``model``."""
    sub = order[:rows]
    y = model.train.label[sub]
    offset = model.logit_train[sub]
    base = model.valid_logloss()
    cache = {} if cache is None else cache
    gains = {}
    for cand in candidates:
        if cand not in cache:
            cache[cand] = model.ids(cand)
        tr, va, size = compact(cache[cand][0][sub], cache[cand][1])
        w = newton_weights(tr, offset, y, size, model.l2)
        gains[cand] = base - logloss(model.logit_valid + w[va], model.valid.label)
    return gains


def successive_halving(model: OffsetModel, candidates: list[tuple[str, ...]], seed: int,
                       min_rows: int = 2_000, keep: int = 1
                       ) -> tuple[dict[tuple[str, ...], float], dict[tuple[str, ...], int]]:
    """Score candidates on a growing prefix of a seeded shuffle of train: all on the first
    block, the better half on twice the rows, and so on until ``keep`` remain or the data
    runs out. Returns each candidate's last gain and the number of rounds it survived."""
    n = len(model.train)
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    halvings = int(np.ceil(np.log2(max(1, len(candidates) / max(1, keep)))))
    rows = min(n, max(min_rows, n >> halvings))
    alive = list(candidates)
    gains: dict[tuple[str, ...], float] = {}
    rounds = dict.fromkeys(candidates, 0)
    cache: Ids = {}
    while True:
        gains.update(cross_gains(model, alive, rows, order, cache))
        for c in alive:
            rounds[c] += 1
        if len(alive) <= keep or rows >= n:
            break
        alive = sorted(alive, key=lambda c: (-gains[c], c))[:max(keep, len(alive) // 2)]
        for c in set(cache) - set(alive):
            del cache[c]
        rows = min(n, rows * 2)
    return gains, rounds
