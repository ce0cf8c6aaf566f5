"""PEP where most values are rare (issue #22): the lazy optimiser for lookup tables
(``TrainConfig.lazy_tables``) and PEP's mask on planted frequent-useful and rare-noise
values."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch
from torch import nn

from autodrs.data.dataset import Dataset, load_dataset
from autodrs.models.backbones import backbone_spec
from autodrs.nn.pruned import decode_mask
from autodrs.search.base import SearchContext, get_method
from autodrs.train.lazy import LazyAdam, lookup_parameters
from autodrs.train.trainer import TrainConfig, Trainer


class Toy(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.table = nn.Embedding(10, 4)
        self.out = nn.Linear(4, 1)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.out(self.table(ids)).sum()


def steps(lazy: bool, batches: list[list[int]]) -> list[torch.Tensor]:
    """The table after each step of ``batches`` (a sum loss, weight decay 0.1)."""
    model = Toy()
    config = TrainConfig(lr=0.01, weight_decay=0.1, lazy_tables=lazy, threads=1, progress=False)
    optimizer = Trainer(config).make_optimizer(model)
    after = []
    for ids in batches:
        optimizer.zero_grad()
        model(torch.tensor(ids)).backward()
        optimizer.step()
        after.append(model.table.weight.detach().clone())
    return after


def test_lazy_tables_leave_the_rows_outside_the_batch_alone() -> None:
    start = Toy().table.weight.detach().clone()
    first, second = steps(True, [[1, 2], [3]])
    untouched = [0, 4, 5, 6, 7, 8, 9]
    # no decay, no momentum on rows not in the batch
    assert torch.equal(first[untouched], start[untouched])
    assert torch.equal(second[[1, 2]], first[[1, 2]])
    assert not torch.equal(first[[1, 2]], start[[1, 2]])
    # row 3's first step at the optimiser's second step is Adam's first step (its own
    # bias correction): lr times the sign of its gradient (plus its decay)
    assert torch.allclose((second[3] - first[3]).abs(), torch.full((4,), 0.01), rtol=1e-3)
    # the dense Adam moves every row at every step (its decay and momentum)
    dense_first, dense_second = steps(False, [[1, 2], [3]])
    assert not torch.equal(dense_first[untouched], start[untouched])
    assert not torch.equal(dense_second[[1, 2]], dense_first[[1, 2]])


def test_lazy_adam_is_adam_on_a_table_stepped_whole_and_finds_every_table() -> None:
    # a lazy table whose every row has a gradient, and a plain parameter, step as Adam
    for as_table in (True, False):
        torch.manual_seed(1)
        a = nn.Parameter(torch.randn(6, 3))
        b = nn.Parameter(a.detach().clone())
        lazy = LazyAdam([a], [a] if as_table else [], lr=0.05, weight_decay=0.01)
        dense = torch.optim.Adam([b], lr=0.05, weight_decay=0.01)
        for _ in range(5):
            g = torch.randn(6, 3)
            a.grad, b.grad = g.clone(), g.clone()
            lazy.step()
            dense.step()
        assert torch.allclose(a, b, atol=1e-5)
        assert not torch.allclose(a, torch.zeros(6, 3))
    model = Toy()
    assert [id(p) for p in lookup_parameters(model)] == [id(model.table.weight)]


@pytest.fixture(scope="module")
def frequent_and_rare(tmp_path_factory: pytest.TempPathFactory) -> Dataset:
    """12,000 rows: half hold one of 20 frequent values of field ``a`` whose effect is
    +-2 on the logit; the other half one of 3,000 rare values (about 2 rows each in
    training) with no effect. Field ``n`` (50 values) is noise."""
    rng = np.random.default_rng(0)
    rows, frequent, rare = 12_000, 20, 3_000
    useful = rng.random(rows) < 0.5
    a = np.where(useful, rng.integers(0, frequent, rows), frequent + rng.integers(0, rare, rows))
    effect = np.where(np.arange(frequent) % 2 == 0, 2.0, -2.0)
    logit = np.where(useful, effect[np.minimum(a, frequent - 1)], 0.0)
    label = (rng.random(rows) < 1 / (1 + np.exp(-logit))).astype(int)
    path = Path(tmp_path_factory.mktemp("pep_rare")) / "rare.parquet"
    pl.DataFrame(
        {"a": a.astype(str), "n": rng.integers(0, 50, rows).astype(str), "label": label}
    ).write_parquet(path)
    return load_dataset(str(path), label="label", seed=1, cache_dir=path.parent / "cache")


def kept_shares(ds: Dataset, spec_pruning: dict[str, str]) -> tuple[float, float]:
    """Kept share of ``a``'s entries over the frequent (useful) and the rare values."""
    f = ds.schema.field("a")
    mask = decode_mask(spec_pruning["a"], f.vocab_size, 8, "a")
    ids = {v: i + 3 for i, v in enumerate(f.vocab or [])}  # ids 0-2 are reserved
    frequent = [i for v, i in ids.items() if int(v) < 20]
    rare = [i for v, i in ids.items() if int(v) >= 20]
    return float(mask[frequent].float().mean()), float(mask[rare].float().mean())


@pytest.mark.parametrize(("lazy", "threshold"), [(False, "feature_dim"), (True, "field_dim")])
def test_pep_keeps_the_frequent_useful_values_and_prunes_the_rare_noise(
    frequent_and_rare: Dataset, lazy: bool, threshold: str
) -> None:
    # 90% of the entries pruned. Measured (seed 0): the dense Adam with per-entry
    # thresholds kept 42% of the frequent values' entries and 8% of the rare ones'; the
    # lazy optimiser with per-field thresholds 32% and 0.5%. A random mask at 90% keeps
    # about 10% of either, and fails the ratio below.
    config = TrainConfig(
        epochs=2, batch_size=256, patience=1, progress=False, threads=1, seed=0, lazy_tables=lazy
    )
    ctx = SearchContext(
        frequent_and_rare,
        backbone_spec("fm", 8),
        config,
        seed=0,
        options={
            "sparsity": 0.9,
            "levels": "0.9",
            "threshold_init": -6,
            "threshold_scale": 30,
            "search_epochs": 40,
            "threshold": threshold,
        },
    )
    found = get_method("pep").search(ctx)
    assert found.extra["reached_target"]
    frequent, rare = kept_shares(frequent_and_rare, found.spec.pruning)
    assert frequent >= 0.25 and frequent > 4 * rare, (frequent, rare)
