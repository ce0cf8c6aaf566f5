"""``PairFunctionSpace``: one interaction function per field pair (SIF, AutoFeature).

The pairs are the ones the spec so far keeps (``spec.interactions`` from an earlier
interaction stage, memorised pairs excepted), else every pair of the embedded fields. The
discrete face suggests a function per pair (``fn:<a*b>`` trial parameters; ``none`` drops
the pair); the relaxed face is SIF's supernet, which mixes the candidate functions of every
pair with binarised weights (``methods.blocks.sif``). ``apply`` writes the decision into
``spec.interactions``: ``product`` pairs go to the FM term, the others to the pair-function
tower (``autodrs.nn.functions``), and the rest of the spec (fields, dims, deep part) stays.
"""

from __future__ import annotations

from itertools import combinations
from typing import TYPE_CHECKING, Any

import torch

from autodrs.data.schema import Schema
from autodrs.methods.blocks.common import NONE
from autodrs.methods.interaction.common import embedded_names, interaction_key
from autodrs.models.backbones import DEFAULT_MLP
from autodrs.nn.functions import FUNCTIONS
from autodrs.search.base import SearchContext, SearchError, SearchSpace, Supernet
from autodrs.spec import ArchSpec, Interaction

if TYPE_CHECKING:
    import optuna

BACKBONES = ("fm", "deepfm")


def searched_pairs(schema: Schema, spec: ArchSpec) -> list[tuple[str, str]]:
    """The spec's kept pairs (an earlier stage's decision), else every embedded pair."""
    if spec.interactions is not None:
        pairs = [(i.fields[0], i.fields[1]) for i in spec.interactions
                 if len(i.fields) == 2 and i.function != "memorise"]
    else:
        pairs = list(combinations(embedded_names(schema, spec), 2))
    if not pairs:
        raise SearchError("interaction-function search needs at least one field pair; the "
                          "spec keeps none")
    return pairs


def with_backbone(spec: ArchSpec, backbone: str) -> ArchSpec:
    """``spec`` with a first-order term, no FM / inner / cross / attention tower or DAG, and
    an MLP (``deepfm``: the spec's own, else DeepFM's) or none (``fm``)."""
    out = spec.copy(dag=None, inner=False, fm=False, pair_norm=False, cross_layers=0,
                    attention_layers=0, linear=True)
    if backbone == "fm":
        out.mlp = []
    elif not out.mlp:
        out.mlp = list(DEFAULT_MLP)
    return out


class PairFunctionSpace(SearchSpace):
    """A function per pair from ``choices`` (names of ``autodrs.nn.functions`` or ``none``)."""

    name = "pair_functions"

    def __init__(self, schema: Schema, base: ArchSpec, choices: tuple[str, ...],
                 backbone: str = "deepfm", search_backbone: str | None = None) -> None:
        bad = [c for c in choices if c not in (*FUNCTIONS, NONE)]
        if bad or len(choices) < 2:
            raise SearchError(f"pair-function choices must be two or more of "
                              f"{', '.join((*FUNCTIONS, NONE))}; got {list(choices)}")
        for value in (backbone, search_backbone or backbone):
            if value not in BACKBONES:
                raise SearchError(f"pair-function backbone must be one of {BACKBONES}, "
                                  f"got {value!r}")
        self.schema = schema
        self.choices = tuple(choices)
        # the final spec (``apply``) has the ``backbone``'s deep part; the supernet that of
        # ``search_backbone`` (default the same); pair terms replace the FM / inner towers
        self.base = with_backbone(base, backbone)
        self.search_base = with_backbone(base, search_backbone or backbone)
        self.pairs = searched_pairs(schema, base)
        self.memorised = [i for i in base.interactions or [] if i.function == "memorise"]

    def keys(self) -> list[str]:
        return [interaction_key(p) for p in self.pairs]

    def suggest(self, trial: optuna.Trial, ctx: SearchContext) -> dict[str, Any]:
        return {key: trial.suggest_categorical(f"fn:{key}", list(self.choices))
                for key in self.keys()}

    def apply(self, spec: ArchSpec, decision: dict[str, Any]) -> ArchSpec:
        unknown = sorted(set(decision) - set(self.keys()))
        if unknown:
            raise SearchError(f"pair-function decision names pairs outside the space: "
                              f"{unknown[:3]}")
        kept = []
        for pair, key in zip(self.pairs, self.keys(), strict=True):
            function = decision.get(key, NONE)
            if function not in self.choices:
                raise SearchError(f"pair {key}: function {function!r} is not one of "
                                  f"{list(self.choices)}")
            if function != NONE:
                kept.append(Interaction(fields=list(pair), function=function))
        out = self.base.copy(interactions=[*self.memorised, *kept],
                             fm=any(i.function == "product" for i in kept),
                             pair_norm=False, provenance=list(spec.provenance))
        return out

    def supernet(self, ctx: SearchContext) -> Supernet:
        from autodrs.methods.blocks.sif import SIFSupernet

        torch.manual_seed(ctx.seed)
        return SIFSupernet(self.schema, self.search_base, self.pairs, self.choices)
