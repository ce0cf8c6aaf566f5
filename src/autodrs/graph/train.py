"""Training and evaluating graph recommenders: BPR on the training edges, full ranking on
the held-out items.

- Loss: BPR, ``-log sigmoid(s(u, i) - s(u, j))`` for each training edge ``(u, i)`` and one
  item ``j`` drawn uniformly among those ``u`` has no training edge to, plus
  ``l2 * (|e_u|^2 + |e_i|^2 + |e_j|^2) / 2`` on their layer-0 embeddings per batch row
  (LightGCN's defaults: dim 64, 3 layers, Adam 1e-3, l2 1e-4, batch 2048).
- Metrics: each held-out user's item is ranked against every item the user has no training
  edge to (the validation item is also left out when ranking the test item); recall@K is
  the share of users whose item ranks in the top K, NDCG@K the mean ``1 / log2(rank + 2)``
  over those (ties with the held-out item broken by item index, never in its favour), and
  AUC the per-user share of candidates ranked below it. Training stops on validation
  NDCG@K (patience) and keeps the best epoch.
- Search (SANE, Zhao et al., ICDE 2021; first-order DARTS): the supernet's embeddings step
  on training batches and, after a warm-up, its architecture weights on BPR batches of the
  validation edges, in turn; each layer keeps its strongest operation and the model its
  strongest combine, and the derived spec is retrained from scratch like any other.
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from autodrs.graph.data import GraphData, normalised
from autodrs.graph.models import (
    COMBINES,
    OPS,
    Adjacencies,
    GraphModel,
    GraphSpec,
    SearchGraphModel,
    apply_op,
    combine,
    model_key,
    vertices,
)


@dataclass
class GraphTrainConfig:
    epochs: int = 200
    batch_size: int = 2048
    lr: float = 1e-3
    l2: float = 1e-4
    patience: int = 10
    k: int = 20
    seed: int = 0
    arch_lr: float = 3e-3


@dataclass
class GraphFit:
    spec: GraphSpec
    valid: dict[str, float]
    test: dict[str, float]
    best_epoch: int
    epochs: int
    seconds: float
    history: list[dict[str, float]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"spec": self.spec.to_dict(), "valid": self.valid, "test": self.test,
                "best_epoch": self.best_epoch, "epochs": self.epochs,
                "seconds": round(self.seconds, 3), "history": self.history}



class BestEpoch:
    """Early stopping on a validation score: keeps the best epoch's weights and says when
    ``patience`` epochs have passed without a better score."""

    def __init__(self, patience: int) -> None:
        self.patience = patience
        self.score, self.epoch, self.since = -math.inf, 0, 0
        self.state: dict[str, torch.Tensor] | None = None

    def update(self, model: nn.Module, score: float, epoch: int) -> bool:
        """Record ``epoch``'s score; True when training should stop."""
        if score > self.score:
            self.score, self.epoch, self.since = score, epoch, 0
            self.state = copy.deepcopy(model.state_dict())
            return False
        self.since += 1
        return self.since >= self.patience

    def restore(self, model: nn.Module) -> None:
        assert self.state is not None, "no epoch was scored"
        model.load_state_dict(self.state)


def adjacencies(g: GraphData) -> Adjacencies:
    """The training graph's propagation matrices every operation needs, each with its
    transpose (``sym`` is its own)."""
    sym = g.adjacency()
    mean = normalised(g.users, g.items, g.train, power=-1.0)
    return {"sym": (sym, sym), "mean": (mean, mean.t().to_sparse_csr())}


def rank_metrics(user_emb: torch.Tensor, item_emb: torch.Tensor, g: GraphData, split: str,
                 k: int = 20) -> dict[str, float]:
    """recall@k, NDCG@k and AUC of ``split`` ("valid" or "test") by full ranking of the
    inner products of user and item embeddings."""
    held = held_out(g, split)
    with torch.no_grad():
        scores = user_emb[torch.as_tensor(held[:, 0])] @ item_emb.T
    return rank_scores(scores, g, split, k)


def held_out(g: GraphData, split: str) -> np.ndarray:
    if split not in ("valid", "test"):
        raise ValueError(f"split must be 'valid' or 'test', got {split!r}")
    held = g.valid if split == "valid" else g.test
    if not len(held):
        raise ValueError(f"graph: no user has a {split} item (each needs 3 interactions)")
    return held


def rank_scores(scores: torch.Tensor, g: GraphData, split: str,
                k: int = 20) -> dict[str, float]:
    """The metrics of ``scores`` (``[users held out, items]``, rows in ``held_out(g,
    split)`` order). Each user's held-out item is ranked against every item the user has no
    training edge to (nor, for the test item, the validation edge); a tie with the held-out
    item counts against it when the tied item comes first by index (a fixed order, so a
    constant score ranks by index rather than putting the item first). recall@k is the share
    of users whose item is in the top k, NDCG@k the mean ``1 / log2(rank + 2)`` over those,
    and AUC the mean share of a user's candidate items ranked below theirs (ties half)."""
    held = held_out(g, split)
    users = torch.as_tensor(held[:, 0])
    target = torch.as_tensor(held[:, 1])
    scores = scores.detach().clone().float()
    row_of = torch.full((g.users,), -1, dtype=torch.long)
    row_of[users] = torch.arange(len(users))
    masked = [g.train] + ([g.valid] if split == "test" and len(g.valid) else [])
    for edges in masked:
        pairs = torch.as_tensor(edges)
        rows = row_of[pairs[:, 0]]
        keep = rows >= 0
        scores[rows[keep], pairs[keep, 1]] = -math.inf
    own = scores[torch.arange(len(users)), target].unsqueeze(1)
    above = scores > own
    tied = scores == own
    before = torch.arange(g.items).unsqueeze(0) < target.unsqueeze(1)
    rank = (above | (tied & before)).sum(1).float()
    candidates = torch.isfinite(scores).sum(1).float() - 1.0
    below = candidates - above.sum(1).float() - 0.5 * (tied.sum(1).float() - 1.0)
    auc = torch.where(candidates > 0, below / candidates.clamp_min(1.0), torch.ones_like(rank))
    hit = rank < k
    ndcg = torch.where(hit, 1.0 / torch.log2(rank + 2.0), torch.zeros_like(rank))
    return {f"recall@{k}": float(hit.float().mean()), f"ndcg@{k}": float(ndcg.mean()),
            "auc": float(auc.mean())}


def popularity(g: GraphData, split: str, k: int = 20) -> dict[str, float]:
    """The most-trained-on items first, for every user: the graph models' floor."""
    degree = torch.bincount(torch.as_tensor(g.train[:, 1]), minlength=g.items).float()
    users = torch.zeros(g.users, 1)
    return rank_metrics(users + 1.0, degree.unsqueeze(1), g, split, k)


def _negatives(g: GraphData, users: np.ndarray, rng: np.random.Generator,
               known: np.ndarray) -> np.ndarray:
    """One item per user, uniform among the user's non-training items (redrawn where a
    draw hits a training item; a handful of rounds settle every row on sparse graphs).
    ``known`` is the sorted ``user * items + item`` keys of the training edges."""
    items = rng.integers(0, g.items, len(users))
    keys = users.astype(np.int64) * g.items
    for _ in range(20):
        bad = _is_known(keys + items, known)
        if not bad.any():
            break
        items[bad] = rng.integers(0, g.items, int(bad.sum()))
    return items


def _is_known(keys: np.ndarray, known: np.ndarray) -> np.ndarray:
    at = np.searchsorted(known, keys).clip(max=len(known) - 1)
    return known[at] == keys


def _bpr(model: nn.Module, adj: Adjacencies, edges: np.ndarray, negatives: np.ndarray,
         l2: float) -> torch.Tensor:
    user_emb, item_emb = model(adj)
    u = torch.as_tensor(edges[:, 0])
    i = torch.as_tensor(edges[:, 1])
    j = torch.as_tensor(negatives)
    pos = (user_emb[u] * item_emb[i]).sum(1)
    neg = (user_emb[u] * item_emb[j]).sum(1)
    ego = model.ego.weight
    reg = (ego[u].pow(2).sum() + ego[i + model.users].pow(2).sum()
           + ego[j + model.users].pow(2).sum()) / (2 * len(u))
    return -F.logsigmoid(pos - neg).mean() + l2 * reg


def _known_keys(g: GraphData) -> np.ndarray:
    return np.unique(g.train[:, 0].astype(np.int64) * g.items + g.train[:, 1])


def fit_graph(g: GraphData, spec: GraphSpec, config: GraphTrainConfig | None = None,
              test: bool = True) -> GraphFit:
    """Train ``spec`` on ``g``'s training edges with BPR, early-stopped on validation
    NDCG@k; the best epoch's model is scored on the test items."""
    config = config or GraphTrainConfig()
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    adj = adjacencies(g)
    known = _known_keys(g)
    model = GraphModel(g.users, g.items, spec)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    metric = f"ndcg@{config.k}"
    best = BestEpoch(config.patience)
    history = []
    started = time.perf_counter()
    epoch = 0
    for epoch in range(1, config.epochs + 1):
        model.train()
        order = rng.permutation(len(g.train))
        for start in range(0, len(order), config.batch_size):
            edges = g.train[order[start:start + config.batch_size]]
            loss = _bpr(model, adj, edges, _negatives(g, edges[:, 0], rng, known), config.l2)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        model.eval()
        with torch.no_grad():
            scores = rank_metrics(*model(adj), g, "valid", config.k)
        history.append({"epoch": epoch, **scores})
        if best.update(model, scores[metric], epoch):
            break
    seconds = time.perf_counter() - started
    best.restore(model)
    model.eval()
    with torch.no_grad():
        user_emb, item_emb = model(adj)
        valid = rank_metrics(user_emb, item_emb, g, "valid", config.k)
        tested = rank_metrics(user_emb, item_emb, g, "test", config.k) if test else {}
    return GraphFit(spec=spec, valid=valid, test=tested, best_epoch=best.epoch, epochs=epoch,
                    seconds=seconds, history=history)


@dataclass
class GraphSearch:
    spec: GraphSpec
    op_weights: list[dict[str, float]]
    combine_weights: dict[str, float]
    seconds: float
    skip_weights: list[float] = field(default_factory=list)
    argmax: GraphSpec | None = None
    candidates: list[dict[str, Any]] = field(default_factory=list)
    one_shot: list[dict[str, Any]] = field(default_factory=list)
    # the candidates' fits, in ``candidates`` order, when they were trained like the final
    # model (``candidate_epochs=None``): the chosen one's is then its final fit
    fits: list[GraphFit] = field(default_factory=list, repr=False)

    def fit_of(self, spec: GraphSpec) -> GraphFit | None:
        """The candidate fit of ``spec`` when it was trained like the final model."""
        return next((f for f in self.fits if model_key(f.spec) == model_key(spec)), None)

    def to_dict(self) -> dict[str, Any]:
        return {"spec": self.spec.to_dict(), "op_weights": self.op_weights,
                "combine_weights": self.combine_weights, "skip_weights": self.skip_weights,
                "argmax": self.argmax.to_dict() if self.argmax else None,
                "candidates": self.candidates, "one_shot": self.one_shot,
                "seconds": round(self.seconds, 3)}


def score_vertices(model: SearchGraphModel, g: GraphData, adj: Adjacencies,
                   k: int = 20) -> list[tuple[float, GraphSpec]]:
    """Every discrete spec of the supernet's space scored with the supernet's own
    embeddings (one-shot, Bender et al. 2018): validation NDCG@k, best first (ties: the
    enumeration order). Each prefix of node aggregators is propagated once."""
    layers = model.alpha.shape[0]
    metric = f"ndcg@{k}"
    with torch.no_grad():
        hs: dict[tuple[str, ...], list[torch.Tensor]] = {(): [model.ego.weight.detach()]}
        for depth in range(layers):
            for prefix in [p for p in hs if len(p) == depth]:
                for op in OPS:
                    hs[(*prefix, op)] = [*hs[prefix], apply_op(op, hs[prefix][-1], adj)]
        scored = []
        for spec in vertices(layers, model.dim):
            out = hs[tuple(spec.ops)]
            fed = [h for h, keep in zip(out[:-1], spec.skips or [], strict=True) if keep]
            final = combine(spec.combine, [*fed, out[-1]])
            valid = rank_metrics(final[:model.users], final[model.users:], g, "valid", k)
            scored.append((valid[metric], spec))
    return sorted(scored, key=lambda s: -s[0])


def search_graph(g: GraphData, layers: int = 3, dim: int = 64, epochs: int = 30,
                 config: GraphTrainConfig | None = None, warmup: int | None = None,
                 candidates: int = 1, candidate_epochs: int | None = 10,
                 one_shot: int = 0) -> GraphSearch:
    """SANE-style differentiable search of each layer's node aggregator, the skips and the
    layer aggregator; returns the derived spec and the final architecture weights. The
    first ``warmup`` epochs (default: a third) train the embeddings alone.

    ``candidates=1`` derives SANE's argmax. With ``candidates=K > 1`` the derivation keeps
    the K most probable specs (the argmax first). ``one_shot=M`` adds, for each layer
    aggregator, the M specs whose one-shot validation NDCG@k is best at the end of the
    warm-up (``score_vertices``: the supernet's embeddings, trained at uniform architecture
    weights, scoring each discrete spec), those not already listed. With more than one candidate each is trained from
    scratch with the final training's settings, for ``candidate_epochs`` (``None``: to
    early stopping, exactly as the final model, whose fit is then kept in ``fits``), and
    the one with the best validation NDCG@k is returned (ties: the earlier listed)."""
    config = config or GraphTrainConfig()
    warmup = epochs // 3 if warmup is None else warmup
    if not 0 <= warmup < epochs:
        raise ValueError(f"warmup must be in [0, epochs), got {warmup} with {epochs} epochs")
    if candidates < 1 or (candidate_epochs is not None and candidate_epochs < 1):
        raise ValueError("candidates and candidate_epochs must be at least 1")
    if one_shot < 0 or (one_shot and not warmup):
        raise ValueError("one_shot must be at least 0, and needs a warm-up to score after")
    if not len(g.valid):
        raise ValueError("graph search needs validation items (users with 3+ interactions)")
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    adj = adjacencies(g)
    known = _known_keys(g)
    model = SearchGraphModel(g.users, g.items, dim, layers)
    weights = torch.optim.Adam(model.weight_parameters(), lr=config.lr)
    arch = torch.optim.Adam(model.arch_parameters(), lr=config.arch_lr)
    started = time.perf_counter()
    metric = f"ndcg@{config.k}"
    shot: list[tuple[float, GraphSpec]] = []
    for epoch in range(epochs):
        order = rng.permutation(len(g.train))
        for start in range(0, len(order), config.batch_size):
            edges = g.train[order[start:start + config.batch_size]]
            loss = _bpr(model, adj, edges, _negatives(g, edges[:, 0], rng, known), config.l2)
            weights.zero_grad()
            loss.backward()
            weights.step()
            if epoch < warmup:
                continue
            held = g.valid[rng.integers(0, len(g.valid), min(config.batch_size, len(g.valid)))]
            arch_loss = _bpr(model, adj, held, _negatives(g, held[:, 0], rng, known), 0.0)
            arch.zero_grad()
            arch_loss.backward()
            arch.step()
        if one_shot and epoch + 1 == warmup:
            # the best of each layer aggregator: their score scales differ (concat sums the
            # layers' inner products), so one-shot scores compare within one only
            every = score_vertices(model, g, adj, config.k)
            shot = [s for how in COMBINES
                    for s in [s for s in every if s[1].combine == how][:one_shot]]
    probs, keep, mix = model.probabilities()
    ranked = model.ranked(candidates)
    argmax = ranked[0]
    sources = ["probability"] * len(ranked)
    listed = {model_key(s) for s in ranked}
    for _, candidate in shot:
        if model_key(candidate) not in listed:
            listed.add(model_key(candidate))
            ranked.append(candidate)
            sources.append("one-shot")
    tried: list[dict[str, Any]] = []
    fits: list[GraphFit] = []
    spec = ranked[0]
    if len(ranked) > 1:
        brief = config if candidate_epochs is None else GraphTrainConfig(
            **{**config.__dict__, "epochs": candidate_epochs, "patience": candidate_epochs})
        for rank, candidate in enumerate(ranked):
            # the test items are scored only for the kept fit's report, never compared
            fit = fit_graph(g, candidate, brief, test=candidate_epochs is None)
            if candidate_epochs is None:
                fits.append(fit)
            tried.append({"rank": rank, "from": sources[rank], "spec": candidate.to_dict(),
                          f"valid {metric}": round(fit.valid[metric], 5),
                          "best_epoch": fit.best_epoch})
        best = max(tried, key=lambda t: (t[f"valid {metric}"], -t["rank"]))
        spec = ranked[best["rank"]]
    return GraphSearch(
        spec=spec,
        op_weights=[{op: round(float(p), 4) for op, p in zip(OPS, row, strict=True)}
                    for row in probs],
        combine_weights={c: round(float(p), 4) for c, p in zip(COMBINES, mix, strict=True)},
        seconds=time.perf_counter() - started,
        skip_weights=[round(float(k), 4) for k in keep],
        argmax=argmax, candidates=tried,
        one_shot=[{"spec": s.to_dict(), f"valid {metric}": round(v, 5)} for v, s in shot],
        fits=fits)
