"""Graph recommenders over the user-item graph: LightGCN and a searchable SANE-style model.

A model holds one embedding per user and per item (layer 0) and propagates them along the
training graph, layer by layer; the score of a user-item pair is the inner product of their
combined layer outputs. Propagation is a sparse CSR matrix product (``propagate``, whose
backward multiplies by the stored transpose: several times quicker than autograd through
``torch.sparse.mm`` on CPU). The graphs here fit one machine, and a plain sparse product
keeps autodrs free of a graph library's compiled extensions.

The space is SANE's three parts (Zhao, Yao, Tu, ICDE 2021), all parameter-free here:

- a node aggregator per layer (``OPS``): ``sym``, ``D^-1/2 A D^-1/2 E`` (LightGCN / GCN);
  ``mean``, ``D^-1 A E`` (GraphSAGE-mean, no self term); ``gin``, ``(E + D^-1 A E) / 2``
  (GIN-style: the node beside its neighbours' mean);
- a skip choice per layer below the last (``skips``): whether layer ``l`` (0 = the
  embeddings themselves) feeds the layer aggregator; the last layer always does (SANE's
  ``fix_last``);
- a layer aggregator (``COMBINES``): ``mean`` (LightGCN), ``concat`` (the score is then the
  sum of the per-layer inner products) or element-wise ``max`` (jumping knowledge).

LightGCN is ``sym`` at every layer, every skip kept, ``mean``; matrix factorisation is zero
layers.
"""

from __future__ import annotations

import itertools
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn

OPS = ("sym", "mean", "gin")
COMBINES = ("mean", "concat", "max")


@dataclass
class GraphSpec:
    """A graph recommender: embedding dim, one node aggregator per layer, which layers below
    the last feed the layer aggregator (``skips``, default all), and that aggregator."""

    dim: int = 64
    ops: list[str] = field(default_factory=lambda: ["sym"] * 3)
    combine: str = "mean"
    skips: list[bool] | None = None

    def __post_init__(self) -> None:
        unknown = [op for op in self.ops if op not in OPS]
        if unknown:
            raise ValueError(f"unknown graph operation(s) {unknown}; choose from {OPS}")
        if self.combine not in COMBINES:
            raise ValueError(f"unknown layer combine {self.combine!r}; choose from {COMBINES}")
        if self.dim < 1:
            raise ValueError(f"dim must be at least 1, got {self.dim}")
        if self.skips is None:
            self.skips = [True] * len(self.ops)
        self.skips = [bool(s) for s in self.skips]
        if len(self.skips) != len(self.ops):
            raise ValueError(f"skips needs one entry per layer below the last "
                             f"({len(self.ops)}), got {len(self.skips)}")

    def to_dict(self) -> dict[str, object]:
        return asdict(self)

    def key(self) -> tuple[tuple[str, ...], tuple[bool, ...], str]:
        """The architecture without its dim, for comparing specs."""
        return tuple(self.ops), tuple(self.skips or ()), self.combine


def lightgcn(dim: int = 64, layers: int = 3) -> GraphSpec:
    return GraphSpec(dim=dim, ops=["sym"] * layers, combine="mean")


class _Propagate(torch.autograd.Function):
    """``A @ x`` with the gradient ``A^T @ grad`` from a stored CSR transpose."""

    @staticmethod
    def forward(ctx: Any, a: torch.Tensor, at: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        ctx.at = at
        return a @ x

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[None, None, torch.Tensor]:
        return None, None, ctx.at @ grad


def propagate(pair: tuple[torch.Tensor, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """``A @ x`` for ``pair = (A, A^T)``, both sparse CSR."""
    return _Propagate.apply(pair[0], pair[1], x)


Adjacencies = dict[str, tuple[torch.Tensor, torch.Tensor]]


def apply_op(op: str, x: torch.Tensor, adj: Adjacencies) -> torch.Tensor:
    if op == "sym":
        return propagate(adj["sym"], x)
    if op == "mean":
        return propagate(adj["mean"], x)
    return 0.5 * (x + propagate(adj["mean"], x))


def combine(how: str, layers: list[torch.Tensor]) -> torch.Tensor:
    if how == "mean":
        return torch.stack(layers).mean(0)
    if how == "concat":
        return torch.cat(layers, -1)
    return torch.stack(layers).amax(0)


class GraphModel(nn.Module):
    """The model of a ``GraphSpec``: ``forward()`` gives every user's and item's final
    embedding; ``ego`` (layer 0) is what L2 regularisation acts on, as in LightGCN."""

    def __init__(self, users: int, items: int, spec: GraphSpec) -> None:
        super().__init__()
        self.users, self.items, self.spec = users, items, spec
        self.ego = nn.Embedding(users + items, spec.dim)
        nn.init.normal_(self.ego.weight, std=0.1)

    def forward(self, adj: Adjacencies) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.ego.weight
        fed = []
        for op, keep in zip(self.spec.ops, self.spec.skips or [], strict=True):
            if keep:
                fed.append(x)
            x = apply_op(op, x, adj)
        fed.append(x)
        out = combine(self.spec.combine, fed)
        return out[:self.users], out[self.users:]


class SearchGraphModel(nn.Module):
    """SANE-style supernet: each layer is the softmax(``alpha``)-weighted mix of every node
    aggregator, each layer below the last feeds the layer aggregator scaled by its skip
    weight (softmax(``gamma``) over keep / drop: a dropped layer is zero), and the layer
    aggregators are mixed by softmax(``beta``). Their outputs differ in width (``concat``),
    so they are mixed at the score: the supernet returns each aggregator's output side by
    side, the users' scaled by ``beta_c``, so the inner product is
    ``sum_c beta_c <u_c, i_c>``. ``derive`` keeps the strongest choice of each part;
    ``ranked`` lists the most probable specs."""

    def __init__(self, users: int, items: int, dim: int, layers: int) -> None:
        super().__init__()
        self.users, self.items, self.dim = users, items, dim
        self.ego = nn.Embedding(users + items, dim)
        nn.init.normal_(self.ego.weight, std=0.1)
        self.alpha = nn.Parameter(torch.zeros(layers, len(OPS)))
        self.gamma = nn.Parameter(torch.zeros(layers, 2))  # (keep, drop) per layer below the last
        self.beta = nn.Parameter(torch.zeros(len(COMBINES)))

    def arch_parameters(self) -> list[nn.Parameter]:
        return [self.alpha, self.gamma, self.beta]

    def weight_parameters(self) -> list[nn.Parameter]:
        return [self.ego.weight]

    def forward(self, adj: Adjacencies) -> tuple[torch.Tensor, torch.Tensor]:
        ops, keep, mix = self.weights()
        x = self.ego.weight
        fed = []
        for weights, k in zip(ops, keep[:, 0], strict=True):
            fed.append(k * x)
            x = sum(w * apply_op(op, x, adj) for w, op in zip(weights, OPS, strict=True))
        fed.append(x)
        outs = [combine(how, fed) for how in COMBINES]
        users = torch.cat([w * out[:self.users] for w, out in zip(mix, outs, strict=True)], -1)
        items = torch.cat([out[self.users:] for out in outs], -1)
        return users, items

    def weights(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Each part's mixing weights (softmaxes): ops, (keep, drop) per layer, combines."""
        return (torch.softmax(self.alpha, -1), torch.softmax(self.gamma, -1),
                torch.softmax(self.beta, -1))

    def probabilities(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The softmax of each part: ops ``[layers, OPS]``, keep ``[layers]``, combines."""
        with torch.no_grad():
            return (torch.softmax(self.alpha, -1), torch.softmax(self.gamma, -1)[:, 0],
                    torch.softmax(self.beta, -1))

    def derive(self) -> GraphSpec:
        return self.ranked(1)[0]

    def ranked(self, top: int) -> list[GraphSpec]:
        """The ``top`` specs of highest probability under the product of the parts'
        softmaxes (the first is the argmax of every part, SANE's derived architecture)."""
        ops, keep, mix = self.probabilities()
        # each part's choices as (log-probability, choice); a beam over the parts
        parts: list[list[tuple[float, Any]]] = []
        for row in ops:
            parts.append([(float(p.log()), ("op", op)) for p, op in zip(row, OPS, strict=True)])
        for k in keep:
            parts.append([(float(k.log()), ("skip", True)),
                          (float((1 - k).clamp_min(1e-12).log()), ("skip", False))])
        parts.append([(float(p.log()), ("combine", c)) for p, c in zip(mix, COMBINES,
                                                                       strict=True)])
        beam: list[tuple[float, list[Any]]] = [(0.0, [])]
        width = 4 * top  # room for the equivalent specs dropped below
        for choices in parts:
            beam = sorted(((lp + c_lp, [*picked, c]) for lp, picked in beam
                           for c_lp, c in choices), key=lambda b: -b[0])[:width]
        specs: list[GraphSpec] = []
        seen = set()
        for _, picked in beam:
            chosen_ops = [v for kind, v in picked if kind == "op"]
            skips = [v for kind, v in picked if kind == "skip"]
            how = next(v for kind, v in picked if kind == "combine")
            spec = GraphSpec(dim=self.dim, ops=chosen_ops, skips=skips, combine=how)
            if model_key(spec) not in seen:
                seen.add(model_key(spec))
                specs.append(spec)
        return specs[:top]


def model_key(spec: GraphSpec) -> tuple[tuple[str, ...], tuple[bool, ...], str]:
    """``spec.key()`` with the specs that are one model made equal: with every skip dropped
    one layer is aggregated, so the layer aggregator does not matter."""
    ops, skips, how = spec.key()
    return ops, skips, how if any(skips) else ""


def vertices(layers: int, dim: int = 64) -> list[GraphSpec]:
    """Every discrete spec of the ``layers``-layer space, each model once (every skip dropped:
    one spec, with ``mean``)."""
    specs = []
    for ops in itertools.product(OPS, repeat=layers):
        for skips in itertools.product((True, False), repeat=layers):
            for how in COMBINES if any(skips) else COMBINES[:1]:
                specs.append(GraphSpec(dim=dim, ops=list(ops), skips=list(skips), combine=how))
    return specs
