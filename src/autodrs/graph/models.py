"""Graph recommenders over the user-item graph: LightGCN and a searchable SANE-style model.

A model holds one embedding per user and per item (layer 0) and propagates them along the
training graph, layer by layer; the score of a user-item pair is the inner product of their
combined layer outputs. Propagation is a sparse CSR matrix product (``propagate``, whose
backward multiplies by the stored transpose: several times quicker than autograd through
``torch.sparse.mm`` on CPU). The graphs here fit one machine, and a plain sparse product
keeps autodrs free of a graph library's compiled extensions.

Each layer applies one operation (``OPS``):

- ``sym``: ``D^-1/2 A D^-1/2 E``, LightGCN's symmetric-normalised neighbour sum;
- ``mean``: ``D^-1 A E``, the neighbours' mean (GraphSAGE-style, no self term);
- ``gin``: ``(E + D^-1 A E) / 2``, the node itself beside its neighbours' mean (GIN-style);
- ``skip``: ``E``, no propagation at that layer.

The layers are combined (``COMBINES``) by their ``mean`` (LightGCN), the ``last`` layer
alone, or their element-wise ``max`` (jumping-knowledge style). LightGCN is ``sym`` at every
layer with ``mean``; matrix factorisation is zero layers.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn

OPS = ("sym", "mean", "gin", "skip")
COMBINES = ("mean", "last", "max")


@dataclass
class GraphSpec:
    """A graph recommender: embedding dim, one operation per layer, the layers' combine."""

    dim: int = 64
    ops: list[str] = field(default_factory=lambda: ["sym"] * 3)
    combine: str = "mean"

    def __post_init__(self) -> None:
        unknown = [op for op in self.ops if op not in OPS]
        if unknown:
            raise ValueError(f"unknown graph operation(s) {unknown}; choose from {OPS}")
        if self.combine not in COMBINES:
            raise ValueError(f"unknown layer combine {self.combine!r}; choose from {COMBINES}")
        if self.dim < 1:
            raise ValueError(f"dim must be at least 1, got {self.dim}")

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


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
    if op == "gin":
        return 0.5 * (x + propagate(adj["mean"], x))
    return x


def combine(how: str, layers: list[torch.Tensor]) -> torch.Tensor:
    if how == "mean":
        return torch.stack(layers).mean(0)
    if how == "last":
        return layers[-1]
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
        layers = [x]
        for op in self.spec.ops:
            x = apply_op(op, x, adj)
            layers.append(x)
        out = combine(self.spec.combine, layers)
        return out[:self.users], out[self.users:]


class SearchGraphModel(nn.Module):
    """SANE-style supernet: each layer is the softmax(``alpha``)-weighted mix of every
    operation, and the layers' combine the softmax(``beta``)-weighted mix of every combine;
    ``derive`` keeps the strongest of each."""

    def __init__(self, users: int, items: int, dim: int, layers: int) -> None:
        super().__init__()
        self.users, self.items, self.dim = users, items, dim
        self.ego = nn.Embedding(users + items, dim)
        nn.init.normal_(self.ego.weight, std=0.1)
        self.alpha = nn.Parameter(torch.zeros(layers, len(OPS)))
        self.beta = nn.Parameter(torch.zeros(len(COMBINES)))

    def arch_parameters(self) -> list[nn.Parameter]:
        return [self.alpha, self.beta]

    def weight_parameters(self) -> list[nn.Parameter]:
        return [self.ego.weight]

    def forward(self, adj: Adjacencies) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.ego.weight
        layers = [x]
        for weights in torch.softmax(self.alpha, -1):
            x = sum(w * apply_op(op, x, adj) for w, op in zip(weights, OPS, strict=True))
            layers.append(x)
        mix = torch.softmax(self.beta, -1)
        out = sum(w * combine(how, layers) for w, how in zip(mix, COMBINES, strict=True))
        return out[:self.users], out[self.users:]

    def derive(self) -> GraphSpec:
        ops = [OPS[int(k)] for k in self.alpha.argmax(-1)]
        return GraphSpec(dim=self.dim, ops=ops, combine=COMBINES[int(self.beta.argmax())])
