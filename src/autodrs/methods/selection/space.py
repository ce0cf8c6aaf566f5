"""The keep/drop space over fields, for black-box strategies (random, grid, TPE, evolution,
RL): one categorical decision ``keep:<field>`` in {keep, drop} per candidate field, so the
RL strategy's per-parameter policies are one agent per field, as in MARLFS."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from autodrs.methods.selection.subset import with_fields
from autodrs.search.base import SearchContext, SearchError, SearchSpace
from autodrs.spec import ArchSpec

if TYPE_CHECKING:
    import optuna

KEEP, DROP = "keep", "drop"


class FieldSelectionSpace(SearchSpace):
    """Which of ``fields`` the spec uses; a decision is ``{"keep": [names]}``."""

    name = "fields"

    def __init__(self, fields: list[str]) -> None:
        if not fields:
            raise SearchError("the field-selection space needs at least one candidate field")
        if len(set(fields)) != len(fields):
            raise SearchError(f"candidate fields repeat a name: {fields}")
        self.fields = list(fields)

    def suggest(self, trial: optuna.Trial, ctx: SearchContext) -> dict[str, Any]:
        keep = [f for f in self.fields
                if trial.suggest_categorical(f"keep:{f}", [KEEP, DROP]) == KEEP]
        if not keep:
            # a model needs a field; the trial fails and the search goes on
            raise SearchError("the sampled decision drops every field")
        return {"keep": keep}

    def apply(self, spec: ArchSpec, decision: dict[str, Any]) -> ArchSpec:
        keep = list(decision.get("keep", []))
        unknown = [f for f in keep if f not in self.fields]
        if unknown:
            raise SearchError(f"decision keeps fields outside the space: {unknown}")
        if not keep:
            raise SearchError("a field-selection decision must keep at least one field")
        return with_fields(spec, [f for f in self.fields if f in keep])

    def grid(self, ctx: SearchContext) -> dict[str, list[Any]]:
        return {f"keep:{f}": [KEEP, DROP] for f in self.fields}
