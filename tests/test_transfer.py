"""Transfer: the source/target splits, carrying pre-trained weights across schemas, AutoFT's
recovery of the planted changed fields, and the ``autodrs transfer`` command."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch
from typer.testing import CliRunner

from autodrs.cli import app
from autodrs.data.dataset import Dataset, load_dataset
from autodrs.data.errors import DataError
from autodrs.data.schema import FIRST_ID, OOV
from autodrs.data.sources import load_table
from autodrs.data.synthetic import TRANSFER_CHANGED, SyntheticGenerator
from autodrs.methods.transfer.autoft import (
    AutoFT,
    pretrain,
    rate_auc,
    run_autoft,
    transferred,
)
from autodrs.methods.transfer.weights import table_rows
from autodrs.models.backbones import backbone_spec
from autodrs.search.base import SearchContext, SearchError
from autodrs.train.trainer import TrainConfig


def test_movielens_domains_split_users_by_age() -> None:
    source = load_table("movielens-100k?domain=source").df
    target = load_table("movielens-100k?domain=target").df
    assert source.height + target.height == 100_000
    assert not set(source["user_id"]) & set(target["user_id"])  # no user (row) in both
    assert target["age"].cast(pl.Int64).min() >= 45 > source["age"].cast(pl.Int64).max()
    assert target.height < source.height / 3  # the target is the small domain
    older = load_table("movielens-100k?domain=target&age=50").df
    assert older["age"].cast(pl.Int64).min() >= 50 and older.height < target.height
    with pytest.raises(DataError, match="source or target"):
        load_table("movielens-100k?domain=elsewhere")


def test_synthetic_domains_plant_changed_fields() -> None:
    src, tgt = SyntheticGenerator(1, domain="source"), SyntheticGenerator(1, domain="target")
    for f in src.main:
        same = np.array_equal(src.main[f], tgt.main[f])
        assert same == (f not in TRANSFER_CHANGED), f
    truth = tgt.truth(100)["transfer"]
    assert truth["changed"] == TRANSFER_CHANGED and not set(truth["changed"]) & set(
        truth["unchanged"])
    # the target's rows are drawn apart from the source's (none shared)
    a, b = src.chunk(0, 500), tgt.chunk(0, 500)
    assert not set(a["num0"]) & set(b["num0"])
    assert load_table("synthetic?domain=target").df.height == 20_000  # small by default
    with pytest.raises(DataError, match="source or target"):
        load_table("synthetic?domain=other&rows=200")


@pytest.fixture(scope="module")
def planted() -> tuple[Dataset, Dataset]:
    return (load_dataset("synthetic?domain=source&rows=20000&seed=1", seed=0),
            load_dataset("synthetic?domain=target&rows=8000&seed=1", seed=0))


def config(seed: int = 0, epochs: int = 6) -> TrainConfig:
    return TrainConfig(epochs=epochs, batch_size=512, lr=3e-3, patience=2, progress=False,
                       threads=1, seed=seed)


def test_carried_weights_follow_values_not_ids(planted: tuple[Dataset, Dataset]) -> None:
    source, target = planted
    pre = pretrain(source, backbone_spec("deepfm", 8), config(epochs=1))
    model, carried = transferred(pre, target, seed=0)
    s_rows, t_rows = table_rows(pre.model.embedding), table_rows(model.embedding)
    for name in ("r0", "n0"):
        s_field, t_field = source.schema.field(name), target.schema.field(name)
        s_ids = {v: k + FIRST_ID for k, v in enumerate(s_field.vocab or [])}
        s_tab, s_start, _ = s_rows[name]
        t_tab, t_start, _ = t_rows[name]
        for k, value in enumerate(t_field.vocab or []):
            want = s_ids.get(value, OOV)
            assert torch.equal(t_tab.weight[t_start + FIRST_ID + k],
                               s_tab.weight[s_start + want]), (name, value)
        assert carried.shared[name] + carried.new[name] == len(t_field.vocab or [])
    assert torch.equal(model.mlp.net[0].weight, pre.model.mlp.net[0].weight)


def test_autoft_fine_tunes_the_changed_fields(planted: tuple[Dataset, Dataset]) -> None:
    """On the planted domains the fields AutoFT fine-tunes most are the ones whose effect
    changed: their ranking beats chance by far, where fine-tuning everything (or a random
    policy) ranks them at chance."""
    source, target = planted
    pre = pretrain(source, backbone_spec("deepfm", 8), config())
    run = run_autoft(pre, target, config())
    truth = target.info["truth"]["transfer"]
    fields = [f for f in run.model.fields if f in truth["changed"] + truth["unchanged"]]
    score = rate_auc(run.rates, truth["changed"], fields)
    assert score >= 0.8, run.rates
    assert all(run.rates[f] >= 0.5 for f in truth["changed"]), run.rates
    # the trivial policies fail the same check
    assert rate_auc(dict.fromkeys(fields, 1.0), truth["changed"], fields) == 0.5
    rng = np.random.default_rng(0)
    randoms = [rate_auc(dict(zip(fields, rng.random(len(fields)), strict=True)),
                        truth["changed"], fields) for _ in range(200)]
    assert np.mean(randoms) < 0.6 and np.mean(np.array(randoms) >= 0.8) < 0.2


def test_autoft_without_a_source_points_to_the_transfer_command(
        tiny_synthetic: Dataset) -> None:
    ctx = SearchContext(tiny_synthetic, backbone_spec("deepfm", 8), config(epochs=1),
                        options={"source": "synthetic?domain=source"})
    with pytest.raises(SearchError, match="autodrs transfer"):
        AutoFT().search(ctx)
    spec = backbone_spec("deepfm", 8).copy(crosses=[["r0", "r1"]])
    ctx = SearchContext(tiny_synthetic, spec, config(epochs=1),
                        options={"source": tiny_synthetic})
    with pytest.raises(SearchError, match="crosses"):
        AutoFT().search(ctx)


def test_transfer_command_writes_result_and_report(tmp_path: Path) -> None:
    out = tmp_path / "run"
    args = ["transfer", "--source", "synthetic?domain=source&rows=3000&seed=2",
            "--data", "synthetic?domain=target&rows=2000&seed=2", "--epochs", "2",
            "--embed-dim", "4", "--batch-size", "256", "--seed", "3", "--no-progress",
            "--threads", "1", "--out", str(out)]
    done = CliRunner().invoke(app, args)
    assert done.exit_code == 0, done.output
    result = json.loads((out / "result.json").read_text())
    assert result["command"] == "transfer" and result["seed"] == 3
    assert 0.5 < result["metrics"]["test"]["auc"] <= 1.0
    assert set(result["baselines"]) == {"scratch", "finetune_all", "freeze_embeddings"}
    stage = result["stages"][0]
    assert stage["method"] == "autoft" and set(stage["ranking"]) == set(stage["scores"])
    assert set(stage["fine_tune"]) | set(stage["frozen"]) == set(stage["ranking"])
    page = (out / "report.html").read_text()
    assert "policy fine-tunes each field and layer" in page
    assert "fields whose effect changed between domains in red" in page
    assert "planted relevant fields" not in page
    assert (out / "autoft.pt").exists() and "AutoFT on" in (out / "run.log").read_text()
    bad = CliRunner().invoke(app, ["transfer", "--source", "synthetic?domain=target",
                                   "--data", "synthetic?domain=target",
                                   "--out", str(tmp_path / "bad")])
    assert bad.exit_code == 2 and "same data" in bad.output
    bad = CliRunner().invoke(app, [*args[:-1], str(tmp_path / "bad2"), "--policy-data", "x"])
    assert bad.exit_code == 2 and "policy-data" in bad.output
