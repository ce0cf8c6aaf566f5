"""One battery for every registered method x every strategy it accepts (new methods join
by registering): it runs on a tiny dataset, writes a valid spec, is deterministic under a
seed, respects the trial cap and the wall-time budget, and rejects a bad strategy."""

from __future__ import annotations

import pytest

import autodrs.methods  # noqa: F401  (fills the registry)
from autodrs.data.dataset import Dataset
from autodrs.models.backbones import backbone_spec
from autodrs.search.base import METHODS, SearchContext, SearchError, get_method
from autodrs.search.strategies import BLACKBOX_STRATEGIES, STRATEGIES
from autodrs.spec import ArchSpec
from autodrs.train.trainer import TrainConfig

CASES = [(name, strategy) for name, cls in sorted(METHODS.items())
         for strategy in cls.strategies]
TRIALS = 2


def context(ds: Dataset, config: TrainConfig, strategy: str | None, **kw: object) -> SearchContext:
    # transfer methods pre-train on ``source``: here the data itself (the contract only)
    base = dict(trials=TRIALS, seed=5, options={"fast": True, "source": ds})
    base.update(kw)
    return SearchContext(ds, backbone_spec("deepfm", 8), config, strategy=strategy,
                         **base)  # type: ignore[arg-type]


def decided(spec: ArchSpec) -> dict[str, object]:
    """The spec without its cost records (provenance keeps only who decided)."""
    d = spec.to_dict()
    d["provenance"] = [(p.get("method"), p.get("strategy")) for p in d["provenance"]]
    return d


@pytest.mark.parametrize(("name", "strategy"), CASES, ids=[f"{n}-{s}" for n, s in CASES])
def test_method_conforms(name: str, strategy: str, tiny_synthetic: Dataset,
                         fast_config: TrainConfig) -> None:
    cls = METHODS[name]
    assert cls.strategies and set(cls.strategies) <= set(STRATEGIES), cls.strategies
    schema = tiny_synthetic.schema

    ctx = context(tiny_synthetic, fast_config, strategy)
    start = ctx.spec.copy()
    first = get_method(name).search(ctx)
    assert ctx.spec == start, "search edited ctx.spec in place"
    assert first.method == name and first.strategy == strategy
    first.spec.validate(schema)
    entry = first.to_dict()
    assert {"method", "strategy", "ranking", "scores", "seconds"} <= set(entry)
    if strategy in BLACKBOX_STRATEGIES and first.trials:
        assert len(first.trials) <= TRIALS

    second = get_method(name).search(context(tiny_synthetic, fast_config, strategy))
    assert decided(second.spec) == decided(first.spec), second.spec.diff(first.spec)

    budgeted = get_method(name).search(
        context(tiny_synthetic, fast_config, strategy, trials=None, budget_seconds=1.0))
    budgeted.spec.validate(schema)
    if strategy in BLACKBOX_STRATEGIES and budgeted.trials:
        assert len(budgeted.trials) < 1000

    with pytest.raises(SearchError, match="strategy"):
        get_method(name).search(context(tiny_synthetic, fast_config, "no-such-strategy"))
