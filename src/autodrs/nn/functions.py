"""Per-pair interaction functions: how two field embeddings are combined into a logit term.

SIF (Yao, Chen, Kwok, Li, Hsieh; WWW 2020) writes an interaction function as
``f(a, b) = w^T o(a, b)``: a binary operator ``o`` followed by a linear read-out ``w``.
AutoFeature (Khawar et al., CIKM 2020) and AIM (Zhu et al., TKDE 2021) choose among a
similar set per pair. The functions here:

- ``product``: the inner product ``<a, b>`` (the FM term; ``build_model`` models these pairs
  with its ``fm`` / ``inner`` towers);
- ``multiply``: ``w^T (a * b)`` (Hadamard product, read out);
- ``plus``, ``max``, ``min``: ``w^T o(a, b)`` with the element-wise operator;
- ``concat``: ``w^T [a; b]``;
- ``generalised``: the bilinear (kernel) product ``a^T W b`` with a full ``W`` per pair.

SIF also passes each side through a small element-wise MLP first (``Linear(1, 8) -> tanh ->
Linear(8, 1)`` on every coordinate), made for its two-dim user/item embeddings; on field
pairs of CTR data it overfits (planted ``synthetic``, 20k rows, the five true pairs as
``multiply``: test AUC 0.762 with the MLPs, 0.776 without, 0.781 for the FM), so it is left
out.

``PairFunctions`` evaluates K candidate functions on P pairs at once (``[B, P, K]`` logit
terms), so a supernet can mix them and a final model can sum one function per pair.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

FUNCTIONS = ("product", "multiply", "plus", "max", "min", "concat", "generalised")
HEADED = ("multiply", "plus", "max", "min", "concat")  # read out by a vector w per pair


def combine(name: str, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """The element-wise operator of a headed function (``[..., D]`` each; concat gives 2D)."""
    if name == "multiply":
        return a * b
    if name == "plus":
        return a + b
    if name == "max":
        return torch.maximum(a, b)
    if name == "min":
        return torch.minimum(a, b)
    if name == "concat":
        return torch.cat([a, b], dim=-1)
    raise ValueError(f"{name!r} is not an element-wise interaction operator; "
                     f"choose from {', '.join(HEADED)}")


class PairFunctions(nn.Module):
    """K candidate functions on P field pairs of a ``[B, F, D]`` embedding stack.

    ``forward`` returns the ``[B, P, K]`` logit terms ``f_k(e_i, e_j)``. Heads ``w`` and the
    kernels of ``generalised`` are per (pair, function).
    """

    def __init__(self, pairs: Sequence[tuple[int, int]], functions: Sequence[str],
                 dim: int) -> None:
        super().__init__()
        unknown = [f for f in functions if f not in FUNCTIONS]
        if unknown:
            raise ValueError(f"unknown interaction function {unknown[0]!r}; choose from "
                             f"{', '.join(FUNCTIONS)}")
        if not functions:
            raise ValueError("PairFunctions needs at least one function")
        self.functions = list(functions)
        self.n_pairs = len(pairs)
        self.register_buffer("left", torch.tensor([p[0] for p in pairs], dtype=torch.long),
                             persistent=False)
        self.register_buffer("right", torch.tensor([p[1] for p in pairs], dtype=torch.long),
                             persistent=False)
        bound = dim ** -0.5  # the default init of a Linear(dim, 1) read-out
        self.heads = nn.ParameterDict({
            f: nn.Parameter(torch.empty(len(pairs), 2 * dim if f == "concat" else dim)
                            .uniform_(-bound, bound))
            for f in self.functions if f in HEADED
        })
        if "generalised" in self.functions:
            eye = torch.eye(dim).expand(len(pairs), dim, dim)
            # identity plus noise: starts as an inner product, so the kernel learns a change
            self.kernel = nn.Parameter(eye + torch.randn(len(pairs), dim, dim) * bound * 0.1)

    def forward(self, stacked: torch.Tensor) -> torch.Tensor:
        a = stacked.index_select(1, self.left)
        b = stacked.index_select(1, self.right)
        out = []
        for name in self.functions:
            if name == "product":
                out.append((a * b).sum(-1))
            elif name == "generalised":
                out.append((torch.einsum("bpd,pde->bpe", a, self.kernel) * b).sum(-1))
            else:
                out.append((combine(name, a, b) * self.heads[name]).sum(-1))
        return torch.stack(out, dim=-1)

    def constrain_heads(self, max_norm: float = 1.0) -> None:
        """Project each read-out ``w`` onto the ball of radius ``max_norm`` (SIF's
        ``constrain``), so a function's score is not won by scaling its head."""
        with torch.no_grad():
            for head in self.heads.values():
                norms = head.norm(dim=1, keepdim=True).clamp(min=max_norm)
                head.mul_(max_norm / norms)


class PairFunctionTower(nn.Module):
    """The logit term of pairs that each have their own function: ``sum_p s_p f_p(e_i, e_j)``
    with an optional trainable scale ``s_p`` per pair (a searched gate kept as attention)."""

    def __init__(self, pairs: Sequence[tuple[int, int]], functions: Sequence[str], dim: int,
                 weights: Sequence[float] | None = None) -> None:
        super().__init__()
        if len(pairs) != len(functions):
            raise ValueError("one function per pair is needed")
        self.groups = nn.ModuleDict()
        order: list[int] = []
        for name in dict.fromkeys(functions):
            members = [k for k, f in enumerate(functions) if f == name]
            self.groups[name] = PairFunctions([pairs[k] for k in members], [name], dim)
            order.extend(members)
        # pair k of the spec is column position[k] of the grouped output
        position = torch.empty(len(pairs), dtype=torch.long)
        position[torch.tensor(order, dtype=torch.long)] = torch.arange(len(pairs))
        self.register_buffer("position", position, persistent=False)
        self.weight = (nn.Parameter(torch.tensor([float(w) for w in weights]))
                       if weights is not None else None)

    def pair_logits(self, stacked: torch.Tensor) -> torch.Tensor:
        """``[B, P]`` logit terms, in the order the pairs were given."""
        grouped = torch.cat([g(stacked)[..., 0] for g in self.groups.values()], dim=1)
        terms = grouped.index_select(1, self.position)
        return terms * self.weight if self.weight is not None else terms

    def forward(self, stacked: torch.Tensor) -> torch.Tensor:
        return self.pair_logits(stacked).sum(1)
