"""``EmbeddingDimSpace``: one embedding dim per categorical field, from candidate dims.

The discrete face suggests a dim per field (``dim:<field>`` trial parameters) for the
black-box strategies (NIS-style RL, RULE-style evolution, random, TPE, grid). With a byte
budget, a sampled decision over the budget is repaired before it is trained: the field whose
table costs most steps down to its next smaller candidate until the stored size fits, so
every trial (and so the returned spec) is within the budget. Stored sizes are exact and
cheap: the embedding bytes of a spec are a fixed part plus ``vocab_f * d_f * 4`` per field.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from autodrs.data.schema import Schema
from autodrs.methods.embedding.common import measure
from autodrs.search.base import SearchContext, SearchError, SearchSpace
from autodrs.spec import ArchSpec

if TYPE_CHECKING:
    import optuna

FLOAT_BYTES = 4


class EmbeddingDimSpace(SearchSpace):
    """Per-field embedding dims over ``fields`` from ``candidates``, optionally under a
    stored-size budget (bytes of the embedding tables)."""

    name = "embedding_dims"

    def __init__(self, schema: Schema, base: ArchSpec, fields: list[str],
                 candidates: list[int], budget_bytes: int | None = None) -> None:
        if not fields:
            raise SearchError("an embedding-dim space needs at least one categorical field")
        self.fields = list(fields)
        self.candidates = sorted(int(c) for c in candidates)
        self.budget = budget_bytes
        self._row_bytes = {f: schema.field(f).vocab_size * FLOAT_BYTES for f in self.fields}
        at_one = measure(schema, self.apply(base, dict.fromkeys(self.fields, 1)))["bytes"]
        self._fixed = at_one - sum(self._row_bytes.values())
        if budget_bytes is not None and self.bytes_of(self.smallest()) > budget_bytes:
            raise SearchError(
                f"memory budget {budget_bytes:,} bytes is below the smallest spec of this "
                f"space ({self.bytes_of(self.smallest()):,} bytes with every field at dim "
                f"{self.candidates[0]}); raise the budget or drop fields")

    def smallest(self) -> dict[str, int]:
        return dict.fromkeys(self.fields, self.candidates[0])

    def bytes_of(self, decision: dict[str, Any]) -> int:
        """Stored embedding bytes of the spec ``decision`` gives."""
        return self._fixed + sum(self._row_bytes[f] * int(decision[f]) for f in self.fields)

    def repair(self, decision: dict[str, int]) -> dict[str, int]:
        """Step the costliest field down until ``decision`` fits the budget."""
        out = dict(decision)
        if self.budget is None:
            return out
        while self.bytes_of(out) > self.budget:
            shrinkable = [f for f in self.fields if out[f] > self.candidates[0]]
            worst = max(shrinkable, key=lambda f: (self._row_bytes[f] * out[f], f))
            out[worst] = max(c for c in self.candidates if c < out[worst])
        return out

    def suggest(self, trial: optuna.Trial, ctx: SearchContext) -> dict[str, Any]:
        sampled = {f: int(trial.suggest_categorical(f"dim:{f}", self.candidates))
                   for f in self.fields}
        decision = self.repair(sampled)
        trial.set_user_attr("bytes", self.bytes_of(decision))
        if decision != sampled:
            trial.set_user_attr("repaired", True)
        return decision

    def apply(self, spec: ArchSpec, decision: dict[str, Any]) -> ArchSpec:
        unknown = sorted(set(decision) - set(self.fields))
        if unknown:
            raise SearchError(f"embedding-dim decision names fields outside the space: {unknown}")
        dims = {f: int(d) for f, d in decision.items()}
        bad = {f: d for f, d in dims.items() if d <= 0}
        if bad:
            raise SearchError(f"embedding dims must be > 0, got {bad}")
        return spec.copy(field_dims={**spec.field_dims, **dims},
                         pruning={k: v for k, v in spec.pruning.items() if k not in dims})
