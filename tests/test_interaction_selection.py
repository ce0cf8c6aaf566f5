"""Selection that selects: on planted data (13 fields, 78 pairs, 5 planted) each interaction
method ranks at least 3 planted pairs in its top 5 and its delivered model leaves out at
least half of the 73 others. A random ranking puts 3 of the 5 planted pairs among its first
5 with probability 0.12%, and the input (every pair) leaves out none."""

from __future__ import annotations

from itertools import combinations

import pytest

from autodrs.data.dataset import Dataset, load_dataset
from autodrs.methods.interaction.common import modelled_pairs
from autodrs.search.base import SearchContext, get_method
from autodrs.spec import ArchSpec
from autodrs.train.trainer import TrainConfig


@pytest.fixture(scope="module")
def planted() -> Dataset:
    return load_dataset("synthetic?rows=50000&seed=1", seed=0)


def recovered(method: str, ds: Dataset, batch_size: int = 256,
              **options: object) -> tuple[int, int, int]:
    """Planted pairs in the method's top 5, other pairs it pruned, and the other pairs."""
    config = TrainConfig(epochs=10, batch_size=batch_size, lr=3e-3, patience=2,
                         progress=False, threads=1, seed=0)
    ctx = SearchContext(dataset=ds, spec=ArchSpec(), train=config, seed=0,
                        options=dict(options))
    result = get_method(method).search(ctx)
    truth = {frozenset(p) for p in ds.info["truth"]["pairs"]}
    pairs = [frozenset(r) for r in result.ranking if len(r) == 2]
    names = ds.schema.field_names
    assert set(pairs) == {frozenset(p) for p in combinations(names, 2)}
    assert result.spec.interactions is not None
    kept = modelled_pairs(result.spec, names)
    others = [p for p in pairs if p not in truth]
    return (sum(p in truth for p in pairs[:5]), sum(p not in kept for p in others),
            len(others))


@pytest.mark.parametrize("method", ["optinter", "profit"])
def test_method_ranks_the_planted_pairs_first_and_prunes_most_others(
        method: str, planted: Dataset) -> None:
    top5, pruned, others = recovered(method, planted)
    assert top5 >= 3
    assert pruned >= others / 2


def test_fives_ranks_the_planted_pairs_first_and_prunes_most_others() -> None:
    """FIVES needs more rows than the others: at 50,000 (seed 0) and 100,000 rows (seed 1)
    it ranked 2 planted pairs in its top 5. It searches under the FM head here (no MLP
    to train), which recovers as the DeepFM head does on these rows (4 of 5; 44 and 40 of
    the 73 others pruned) at a fraction of the cost."""
    top5, pruned, others = recovered("fives", load_dataset("synthetic", seed=0),
                                     batch_size=1024, backbone="fm")
    assert top5 >= 3
    assert pruned >= others / 2
