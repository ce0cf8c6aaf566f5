"""``benchmarks/peers.py``: the fixed task every library trains on, and the two runners that
live in autodrs's own environment (autodrs and the hand-written loop)."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from autodrs.models import backbone_spec, build_model

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"


@pytest.fixture(scope="module")
def peers():
    spec = importlib.util.spec_from_file_location("peers", BENCHMARKS / "peers.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def task(peers, tmp_path_factory):
    work = tmp_path_factory.mktemp("peers")
    return work, peers.write_task(work)


def test_the_task_is_one_fixed_split_encoded_on_train(peers, task):
    work, meta = task
    assert meta["rows"] == 100_000
    assert meta["sizes"] == {"train": 80_000, "valid": 10_000, "test": 10_000}
    arrays, _ = peers.load_task(work)
    for field in peers.FIELDS:
        train = arrays[f"train/{field}"]
        assert train.min() >= 1 and train.max() == meta["vocab"][field] - 1
        assert set(np.unique(train)) == set(range(1, meta["vocab"][field]))
    # values train never saw are 0 (item ids first rated in the held-out rows exist)
    assert (arrays["test/item_id"] == 0).any() and not (arrays["train/item_id"] == 0).any()
    # written twice, the same rows fall in the same splits
    again = work / "again"
    peers.write_task(again)
    second, _ = peers.load_task(again)
    for key, value in arrays.items():
        assert np.array_equal(value, second[key]), key


def test_autodrs_reads_the_same_split(peers, task):
    work, meta = task
    peers.check_same_split(work, meta)  # raises SystemExit when a split differs
    ds = peers.autodrs_dataset(work)
    assert [f.name for f in ds.schema.fields] == peers.FIELDS  # the order column is no feature


def test_autodrs_and_the_hand_written_loop_train_on_it(peers, task, monkeypatch):
    work, _ = task
    monkeypatch.setattr(peers, "EPOCHS", 1)
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    runs = {name: peers.RUNNERS[name](work, "deepfm", 0, 1)
            for name in ("autodrs", "handwritten")}
    for name, run in runs.items():
        assert run["epochs"] == 1 and run["samples"] == 80_000, name
        assert run["train_seconds"] > 0 and run["train_cpu_seconds"] > 0
        assert 0.72 < run["test_auc"] < 0.82, name  # one epoch of DeepFM on MovieLens-100k
    assert abs(runs["autodrs"]["test_auc"] - runs["handwritten"]["test_auc"]) < 0.02
    for run in runs.values():
        run["samples_per_s"] = run["samples"] / run["train_seconds"]
        run["samples_per_cpu_s"] = run["samples"] / run["train_cpu_seconds"]
        run["peak_rss_mib"], run["train_rss_mib"] = 1.0, 0.0
    table = peers.summary({("deepfm", k): [v] for k, v in runs.items()}, ["deepfm"],
                          ["autodrs", "handwritten"])
    assert "| deepfm | autodrs |" in table and "x hand-written" in table


def test_the_init_ablation_sets_each_part_as_its_variant_says(peers, tiny_synthetic):
    model = build_model(tiny_synthetic.schema, backbone_spec("deepfm"))
    first = model.mlp.net[0]
    bound = 1 / math.sqrt(first.weight.shape[1])  # PyTorch's default: uniform within it
    torch.manual_seed(0)
    peers.set_start(model, *peers.INIT_VARIANTS["before: tables 0.01, default MLP and head"])
    assert float(model.embedding.tables[0].weight.std()) == pytest.approx(0.01, rel=0.1)
    assert float(first.weight.abs().max()) <= bound
    assert torch.count_nonzero(first.bias) > 0 and torch.count_nonzero(model.head.bias) > 0
    peers.set_start(model, *peers.INIT_VARIANTS["tables 1e-4, xavier MLP, default head"])
    assert float(model.embedding.tables[0].weight.std()) == pytest.approx(1e-4, rel=0.1)
    assert float(first.weight.abs().max()) > bound
    assert torch.count_nonzero(first.bias) == 0 and torch.count_nonzero(model.head.bias) > 0
    peers.set_start(model, *peers.INIT_VARIANTS["tables 1e-4, xavier MLP and head"])
    assert torch.count_nonzero(model.head.bias) == 0
