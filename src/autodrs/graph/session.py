"""Session-graph recommenders on the sequence task, and an AutoGSR-style search over them.

The task (next item): each interaction of the leave-last-out log (``autodrs.graph.data``)
is predicted from the same user's last ``max_len`` items strictly before it
(``autodrs.data.sequence.add_histories``, so no history holds its own item or a later one).
Training rows are the training interactions that have a history; the validation and test
rows are each user's held-out items, ranked over all items with the same masking and
metrics as the user-item graph models (``rank_scores``), so the two are comparable.

Each history is a session graph, as in SR-GNN (Wu et al., 2019): one node per distinct
item, a directed edge from each item to the next; in- and out-adjacency row-normalised.
Positions holding the same item share a node (their messages are pooled through an
item-equality matrix), so the graphs are batched as ``[B, L, L]`` dense tensors. A model
is ``layers`` graph operations (``SESSION_OPS``) and a readout (``READOUTS``):

- ``gated``: SR-GNN's gated graph step, a GRU cell fed the in- and out-neighbour sums;
- ``directed``: ``h + tanh(W [A_in h ; A_out h])``, a residual directed-neighbour layer;
- ``sym``: ``D^-1/2 (A + A^T + I) D^-1/2 h``, a parameter-free undirected GCN step;
- ``skip``: ``h``;

- readout ``last``: the last item's node; ``mean``: the nodes' mean; ``attn``: SR-GNN's
  soft attention of every node on the last one, joined with the last node linearly.

The session vector scores every item by inner product with the item embeddings (shared
with the input), trained by cross-entropy over all items (SR-GNN's loss).

AutoGSR (Chen et al., SIGIR 2022) searches the GNN of such a model differentiably. Here
each layer is the softmax(``alpha``)-weighted mix of every operation and the readout the
softmax(``beta``)-weighted mix of every readout; weights step on training rows and
architecture weights on validation rows, in turn (first-order DARTS); the argmax of each
is retrained from scratch. The space is SR-GNN's operations plus two simpler ones, not the
paper's own two operations, and the paper's item meta-knowledge is left out.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import polars as pl
import torch
import torch.nn.functional as F
from torch import nn

from autodrs.graph.data import TEST, TRAIN, VALID, GraphData
from autodrs.graph.train import BestEpoch, rank_scores

SESSION_OPS = ("gated", "directed", "sym", "skip")
READOUTS = ("last", "mean", "attn")


@dataclass
class SessionSpec:
    """A session-graph model: embedding dim, one operation per layer, the readout."""

    dim: int = 64
    ops: list[str] = field(default_factory=lambda: ["gated"])
    readout: str = "attn"

    def __post_init__(self) -> None:
        unknown = [op for op in self.ops if op not in SESSION_OPS]
        if unknown:
            raise ValueError(f"unknown session operation(s) {unknown}; choose from "
                             f"{SESSION_OPS}")
        if self.readout not in READOUTS:
            raise ValueError(f"unknown readout {self.readout!r}; choose from {READOUTS}")
        if self.dim < 1:
            raise ValueError(f"dim must be at least 1, got {self.dim}")

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def srgnn(dim: int = 64) -> SessionSpec:
    """SR-GNN: one gated step, attention readout."""
    return SessionSpec(dim=dim, ops=["gated"], readout="attn")


@dataclass
class SessionRows:
    """``history`` ``[N, L]`` item ids + 1, oldest first and right-aligned (0 pads the
    front); ``target`` ``[N]`` item ids; ``user`` ``[N]``."""

    history: torch.Tensor
    target: torch.Tensor
    user: torch.Tensor

    def __len__(self) -> int:
        return len(self.target)


@dataclass
class SessionData:
    items: int
    max_len: int
    train: SessionRows
    valid: SessionRows
    test: SessionRows


def session_task(g: GraphData, max_len: int = 20, recent: int | None = None) -> SessionData:
    """The next-item task of ``g``'s log: every row with its user's earlier items.
    ``recent`` keeps only each user's last ``recent`` training rows (a cheaper search and
    fit; the histories still reach back ``max_len`` items)."""
    if max_len < 1:
        raise ValueError(f"max_len must be at least 1, got {max_len}")
    if recent is not None and recent < 1:
        raise ValueError(f"recent must be at least 1, got {recent}")
    from autodrs.data.sequence import add_histories

    log = add_histories(g.log, "user", "item", "time", max_len=max_len)
    lengths = log["history"].list.len().to_numpy().astype(np.int64)
    flat = log["history"].explode().drop_nulls().cast(pl.Int64).to_numpy() + 1
    history = np.zeros((log.height, max_len), dtype=np.int64)
    row = np.repeat(np.arange(log.height), lengths)
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    col = np.arange(len(flat)) - np.repeat(offsets[:-1], lengths) + np.repeat(
        max_len - lengths, lengths)
    history[row, col] = flat
    part = log["part"].to_numpy()

    def rows(mask: np.ndarray) -> SessionRows:
        return SessionRows(history=torch.as_tensor(history[mask]),
                           target=torch.as_tensor(log["item"].to_numpy()[mask]),
                           user=torch.as_tensor(log["user"].to_numpy()[mask]))

    keep = (part == TRAIN) & (lengths > 0)
    if recent is not None:
        user = log["user"].to_numpy()
        # rows are in (user, time) order: count each training row's later training rows
        is_train = (part == TRAIN).astype(np.int64)
        for_user = np.bincount(user, weights=is_train, minlength=g.users).astype(np.int64)
        seen = np.cumsum(is_train) - np.concatenate(
            [[0], np.cumsum(for_user)])[user]  # training rows of the user up to this one
        later = for_user[user] - seen
        keep &= later < recent
    train = rows(keep)
    if not len(train):
        raise ValueError("session task: no training interaction has an earlier one")
    return SessionData(items=g.items, max_len=max_len, train=train,
                       valid=rows(part == VALID), test=rows(part == TEST))


def session_graphs(history: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Each history's row-normalised in- and out-adjacency and its symmetric-normalised
    undirected adjacency with self-loops, over positions (``[B, L, L]``), with positions of
    one item sharing that item's edges."""
    valid = history > 0
    same = ((history.unsqueeze(2) == history.unsqueeze(1))
            & valid.unsqueeze(2) & valid.unsqueeze(1)).float()
    step = (valid[:, :-1] & valid[:, 1:]).float()
    nxt = torch.diag_embed(F.pad(step, (0, 1)))[:, :, :]  # [B, L, L]: p -> p (shifted below)
    nxt = torch.roll(nxt, shifts=1, dims=2)  # p -> p + 1 where both hold an item
    out_adj = same @ nxt
    in_adj = same @ nxt.transpose(1, 2)
    out_adj = out_adj / out_adj.sum(2, keepdim=True).clamp_min(1.0)
    in_adj = in_adj / in_adj.sum(2, keepdim=True).clamp_min(1.0)
    und = ((same @ (nxt + nxt.transpose(1, 2))) > 0).float() + torch.diag_embed(
        valid.float())
    degree = und.sum(2).clamp_min(1.0).rsqrt()
    sym = degree.unsqueeze(2) * und * degree.unsqueeze(1)
    return in_adj, out_adj, sym


class SessionOp(nn.Module):
    def __init__(self, op: str, dim: int) -> None:
        super().__init__()
        self.op = op
        if op == "gated":
            self.w_in = nn.Linear(dim, dim)
            self.w_out = nn.Linear(dim, dim)
            self.cell = nn.GRUCell(2 * dim, dim)
        elif op == "directed":
            self.w = nn.Linear(2 * dim, dim)

    def forward(self, h: torch.Tensor, graphs: tuple[torch.Tensor, ...]) -> torch.Tensor:
        in_adj, out_adj, sym = graphs
        if self.op == "gated":
            a = torch.cat([in_adj @ self.w_in(h), out_adj @ self.w_out(h)], -1)
            return self.cell(a.flatten(0, 1), h.flatten(0, 1)).view_as(h)
        if self.op == "directed":
            return h + torch.tanh(self.w(torch.cat([in_adj @ h, out_adj @ h], -1)))
        if self.op == "sym":
            return sym @ h
        return h


class Readout(nn.Module):
    def __init__(self, how: str, dim: int) -> None:
        super().__init__()
        self.how = how
        if how == "attn":
            self.w1 = nn.Linear(dim, dim)
            self.w2 = nn.Linear(dim, dim, bias=False)
            self.q = nn.Linear(dim, 1, bias=False)
            self.w3 = nn.Linear(2 * dim, dim, bias=False)

    def forward(self, h: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        last = h[:, -1]
        if self.how == "last":
            return last
        mask = valid.unsqueeze(2).float()
        if self.how == "mean":
            return (h * mask).sum(1) / mask.sum(1).clamp_min(1.0)
        alpha = self.q(torch.sigmoid(self.w1(last).unsqueeze(1) + self.w2(h))) * mask
        return self.w3(torch.cat([(alpha * h).sum(1), last], -1))


class _SessionBase(nn.Module):
    def __init__(self, items: int, dim: int) -> None:
        super().__init__()
        self.items, self.dim = items, dim
        self.embedding = nn.Embedding(items + 1, dim, padding_idx=0)
        bound = 1.0 / math.sqrt(dim)
        nn.init.uniform_(self.embedding.weight, -bound, bound)
        with torch.no_grad():
            self.embedding.weight[0].zero_()

    def session(self, history: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, history: torch.Tensor) -> torch.Tensor:
        """Scores ``[B, items]`` of every item as each history's next."""
        return self.session(history) @ self.embedding.weight[1:].T


class SessionModel(_SessionBase):
    """The model of a ``SessionSpec``."""

    def __init__(self, items: int, spec: SessionSpec) -> None:
        super().__init__(items, spec.dim)
        self.spec = spec
        self.layers = nn.ModuleList(SessionOp(op, spec.dim) for op in spec.ops)
        self.readout = Readout(spec.readout, spec.dim)

    def session(self, history: torch.Tensor) -> torch.Tensor:
        graphs = session_graphs(history)
        h = self.embedding(history)
        for layer in self.layers:
            h = layer(h, graphs)
        return self.readout(h, history > 0)


class SearchSessionModel(_SessionBase):
    """The AutoGSR-style supernet: every operation in every layer and every readout, mixed
    by the softmax of ``alpha`` (per layer) and ``beta``."""

    def __init__(self, items: int, dim: int, layers: int) -> None:
        super().__init__(items, dim)
        self.layers = nn.ModuleList(
            nn.ModuleList(SessionOp(op, dim) for op in SESSION_OPS) for _ in range(layers))
        self.readouts = nn.ModuleList(Readout(how, dim) for how in READOUTS)
        self.alpha = nn.Parameter(torch.zeros(layers, len(SESSION_OPS)))
        self.beta = nn.Parameter(torch.zeros(len(READOUTS)))

    def arch_parameters(self) -> list[nn.Parameter]:
        return [self.alpha, self.beta]

    def weight_parameters(self) -> list[nn.Parameter]:
        arch = {id(p) for p in self.arch_parameters()}
        return [p for p in self.parameters() if id(p) not in arch]

    def session(self, history: torch.Tensor) -> torch.Tensor:
        graphs = session_graphs(history)
        h = self.embedding(history)
        for weights, ops in zip(torch.softmax(self.alpha, -1), self.layers, strict=True):
            h = sum(w * op(h, graphs) for w, op in zip(weights, ops, strict=True))
        valid = history > 0
        mix = torch.softmax(self.beta, -1)
        return sum(w * r(h, valid) for w, r in zip(mix, self.readouts, strict=True))

    def derive(self) -> SessionSpec:
        return SessionSpec(dim=self.dim,
                           ops=[SESSION_OPS[int(k)] for k in self.alpha.argmax(-1)],
                           readout=READOUTS[int(self.beta.argmax())])


@dataclass
class SessionConfig:
    epochs: int = 30
    batch_size: int = 512
    lr: float = 1e-3
    l2: float = 1e-5
    patience: int = 3
    k: int = 20
    seed: int = 0
    arch_lr: float = 3e-3


def session_metrics(model: _SessionBase, rows: SessionRows, g: GraphData, split: str,
                    k: int = 20, batch_size: int = 1024) -> dict[str, float]:
    model.eval()
    with torch.no_grad():
        scores = torch.cat([model(rows.history[s:s + batch_size])
                            for s in range(0, len(rows), batch_size)])
    return rank_scores(scores, g, split, k)


def fit_session(g: GraphData, data: SessionData, spec: SessionSpec,
                config: SessionConfig | None = None, test: bool = True) -> dict[str, Any]:
    """Train ``spec`` by cross-entropy on the training rows, early-stopped on validation
    NDCG@k; the best epoch's model is scored on the test rows."""
    config = config or SessionConfig()
    torch.manual_seed(config.seed)
    gen = torch.Generator().manual_seed(config.seed)
    model = SessionModel(data.items, spec)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.l2)
    metric = f"ndcg@{config.k}"
    best, epoch = BestEpoch(config.patience), 0
    history = []
    started = time.perf_counter()
    for epoch in range(1, config.epochs + 1):
        model.train()
        order = torch.randperm(len(data.train), generator=gen)
        for start in range(0, len(order), config.batch_size):
            idx = order[start:start + config.batch_size]
            loss = F.cross_entropy(model(data.train.history[idx]), data.train.target[idx])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        scores = session_metrics(model, data.valid, g, "valid", config.k)
        history.append({"epoch": epoch, **scores})
        if best.update(model, scores[metric], epoch):
            break
    seconds = time.perf_counter() - started
    best.restore(model)
    valid = session_metrics(model, data.valid, g, "valid", config.k)
    tested = session_metrics(model, data.test, g, "test", config.k) if test else {}
    return {"spec": spec.to_dict(), "valid": valid, "test": tested, "best_epoch": best.epoch,
            "epochs": epoch, "seconds": round(seconds, 3), "history": history}


def search_session(g: GraphData, data: SessionData, layers: int = 2, dim: int = 64,
                   epochs: int = 3, config: SessionConfig | None = None,
                   warmup: int = 0) -> dict[str, Any]:
    """AutoGSR-style differentiable search of each layer's operation and the readout;
    returns the derived spec and the final architecture weights. The first ``warmup``
    epochs train the weights alone (as in ``search_graph``)."""
    config = config or SessionConfig()
    if not 0 <= warmup < epochs:
        raise ValueError(f"warmup must be in [0, epochs), got {warmup} with {epochs} epochs")
    if not len(data.valid):
        raise ValueError("session search needs validation rows (users with 3+ interactions)")
    torch.manual_seed(config.seed)
    gen = torch.Generator().manual_seed(config.seed)
    model = SearchSessionModel(data.items, dim, layers)
    weights = torch.optim.Adam(model.weight_parameters(), lr=config.lr, weight_decay=config.l2)
    arch = torch.optim.Adam(model.arch_parameters(), lr=config.arch_lr)
    started = time.perf_counter()
    model.train()
    for epoch in range(epochs):
        order = torch.randperm(len(data.train), generator=gen)
        for start in range(0, len(order), config.batch_size):
            idx = order[start:start + config.batch_size]
            loss = F.cross_entropy(model(data.train.history[idx]), data.train.target[idx])
            weights.zero_grad()
            loss.backward()
            weights.step()
            if epoch < warmup:
                continue
            held = torch.randint(0, len(data.valid), (min(config.batch_size, len(data.valid)),),
                                 generator=gen)
            arch_loss = F.cross_entropy(model(data.valid.history[held]),
                                        data.valid.target[held])
            arch.zero_grad()
            arch_loss.backward()
            arch.step()
    probs = torch.softmax(model.alpha.detach(), -1)
    mix = torch.softmax(model.beta.detach(), -1)
    return {"spec": model.derive(),
            "op_weights": [{op: round(float(p), 4) for op, p in zip(SESSION_OPS, r, strict=True)}
                           for r in probs],
            "readout_weights": {h: round(float(p), 4) for h, p in zip(READOUTS, mix,
                                                                       strict=True)},
            "seconds": round(time.perf_counter() - started, 3)}
