"""What the interaction-function and block methods share: their stage results.

- function methods (SIF, AutoFeature, AIM): ``ranking`` is the pairs best first (kept pairs
  before dropped ones), ``scores`` is keyed ``"a*b"``, ``extra["functions"]`` maps every
  pair key to its function (``none`` when dropped);
- block methods (AutoCTR, AutoPI): ``dag`` is the chosen block graph with a label per node
  (what the report draws); ``ranking``/``scores`` list what the search compared.
"""

from __future__ import annotations

from typing import Any

from autodrs.methods.interaction.common import interaction_key
from autodrs.models.dag import BlockGraph
from autodrs.search.base import StageResult
from autodrs.spec import ArchSpec

NONE = "none"


def function_result(method: str, strategy: str, spec: ArchSpec,
                    scores: dict[tuple[str, str], float], functions: dict[str, str],
                    seconds: float, trials: list[dict[str, Any]] | None = None,
                    extra: dict[str, Any] | None = None) -> StageResult:
    """A function method's StageResult, with its decision recorded in the spec."""
    order = sorted(scores, key=lambda p: (functions.get(interaction_key(p), NONE) == NONE,
                                          -scores[p], p))
    out = spec.copy()
    out.record(method, strategy, ["interactions", "fm"], seconds,
               component="interaction_function",
               kept=sum(f != NONE for f in functions.values()))
    return StageResult(
        method=method, strategy=strategy, spec=out,
        ranking=[list(p) for p in order],
        scores={interaction_key(p): round(float(scores[p]), 6) for p in order},
        seconds=seconds, trials=trials or [],
        extra={"functions": {interaction_key(p): functions.get(interaction_key(p), NONE)
                             for p in order}, **(extra or {})},
    )


def dag_result(method: str, strategy: str, spec: ArchSpec, ranking: list[str],
               scores: dict[str, float], seconds: float,
               trials: list[dict[str, Any]] | None = None,
               extra: dict[str, Any] | None = None) -> StageResult:
    """A block method's StageResult: ``spec.dag`` (labelled) is the chosen graph."""
    assert spec.dag is not None
    graph = BlockGraph.from_dict(spec.dag).to_dict()
    out = spec.copy(dag=graph)
    out.record(method, strategy, ["dag"], seconds, component="blocks",
               blocks=len(graph["nodes"]))
    return StageResult(method=method, strategy=strategy, spec=out, ranking=ranking,
                       scores={k: round(float(v), 6) for k, v in scores.items()},
                       dag=graph, trials=trials or [], seconds=seconds, extra=extra or {})
