"""Embedding searches against trivial stand-ins: on planted data AutoEmb and DNIS give the
planted fields more than the noise fields (a random spec, or the input unchanged, would
not), a search the budget stopped before it learned anything is an error rather than a
spec, and ``--trial-epochs`` (option ``epochs``) leaves the methods' own searches alone."""

from __future__ import annotations

from typing import Any

import pytest

from autodrs.data.dataset import Dataset
from autodrs.models.backbones import backbone_spec
from autodrs.search.base import SearchContext, SearchError, StageResult, get_method
from autodrs.train.trainer import TrainConfig


def run(name: str, ds: Dataset, config: TrainConfig, **kw: Any) -> StageResult:
    ctx = SearchContext(ds, backbone_spec("deepfm", 8), config, seed=3,
                        options=kw.pop("options", {}), **kw)
    result = get_method(name).search(ctx)
    result.spec.validate(ds.schema)
    return result


@pytest.mark.parametrize("method", ["autodim", "dnis", "autoemb"])
def test_a_search_the_budget_stopped_at_once_is_an_error(method: str, tiny_synthetic: Dataset,
                                                         fast_config: TrainConfig) -> None:
    with pytest.raises(SearchError, match=f"{method} found no embedding dims: the budget ran "
                                          "out after"):
        run(method, tiny_synthetic, fast_config, budget_seconds=0.0)
