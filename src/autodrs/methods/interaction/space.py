"""The keep/drop space over field pairs, for the engine's black-box strategies: one
categorical decision ``pair:<a*b>`` in {keep, drop} per candidate pair; a decision is
``{"pairs": [[a, b], ...]}``, written into ``spec.interactions``."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from autodrs.search.base import SearchContext, SearchError, SearchSpace
from autodrs.spec import ArchSpec, Interaction

if TYPE_CHECKING:
    import optuna

KEEP, DROP = "keep", "drop"


class PairSelectionSpace(SearchSpace):
    """Which of the candidate ``pairs`` the spec's FM/inner towers model."""

    name = "pairs"

    def __init__(self, pairs: list[tuple[str, str]]) -> None:
        if not pairs:
            raise SearchError("the pair-selection space needs at least one candidate pair")
        keys = ["*".join(p) for p in pairs]
        if len(set(keys)) != len(keys):
            raise SearchError("candidate pairs repeat a pair")
        if any(len(p) != 2 or p[0] == p[1] for p in pairs):
            raise SearchError("every candidate must be a pair of two distinct fields")
        self.pairs = [tuple(p) for p in pairs]

    @staticmethod
    def param(pair: tuple[str, ...]) -> str:
        return "pair:" + "*".join(pair)

    def suggest(self, trial: optuna.Trial, ctx: SearchContext) -> dict[str, Any]:
        keep = [list(p) for p in self.pairs
                if trial.suggest_categorical(self.param(p), [KEEP, DROP]) == KEEP]
        return {"pairs": keep}

    def apply(self, spec: ArchSpec, decision: dict[str, Any]) -> ArchSpec:
        chosen = [tuple(p) for p in decision.get("pairs", [])]
        outside = [p for p in chosen if p not in self.pairs]
        if outside:
            raise SearchError(f"decision keeps pairs outside the space: {outside}")
        if not (spec.fm or spec.inner):
            raise SearchError("pair selection needs a spec with an fm or inner tower")
        return spec.copy(interactions=[Interaction(fields=list(p)) for p in self.pairs
                                       if p in chosen])

    def grid(self, ctx: SearchContext) -> dict[str, list[Any]]:
        return {self.param(p): [KEEP, DROP] for p in self.pairs}
