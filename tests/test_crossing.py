"""Generated cross features: field-wise LR, AutoCross finding planted pairs, GLIDER-style
proposals, crosses that help an LR on movielens, and clear errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from autodrs.cli import app
from autodrs.data.dataset import Dataset
from autodrs.experiment import fit_spec
from autodrs.methods.crossing.fieldwise import compact, newton_weights
from autodrs.models.backbones import backbone_spec
from autodrs.models.builder import build_model
from autodrs.nn.embedding import CrossIds
from autodrs.search.base import SearchContext, SearchError, get_method
from autodrs.spec import ArchSpec
from autodrs.train.trainer import TrainConfig


def planted_pairs(ds: Dataset) -> set[tuple[str, ...]]:
    return {tuple(p) for p in ds.info["truth"]["pairs"]}


def test_newton_weights_solve_the_offset_lr() -> None:
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, 5, (2000,), generator=g)
    offset = torch.randn(2000, generator=g, dtype=torch.float64)
    y = (torch.rand(2000, generator=g) < torch.sigmoid(offset + ids - 2)).float()
    w = newton_weights(ids, offset, y, 5, l2=1.0)
    p = torch.sigmoid(offset + w[ids])
    grad = torch.bincount(ids, weights=y.double() - p, minlength=5) - w
    assert grad.abs().max() < 1e-8
    # larger ids carry larger planted effects
    assert (w.diff() > 0).all()


def test_unseen_ids_get_no_weight() -> None:
    train_c, valid_c, size = compact(torch.tensor([7, 3, 7]), torch.tensor([3, 9, 7]))
    assert size == 3 and train_c.tolist() == [1, 0, 1] and valid_c.tolist() == [0, 2, 1]
    w = newton_weights(train_c, torch.zeros(3, dtype=torch.float64), torch.ones(3), size, 1.0)
    assert w[2] == 0 and w[0] > 0


def test_autocross_finds_planted_pairs(synthetic_20k: Dataset,
                                       fast_config: TrainConfig) -> None:
    ctx = SearchContext(synthetic_20k, backbone_spec("lr", 8), fast_config, seed=0)
    result = get_method("autocross").search(ctx)
    first = [tuple(c) for c in result.ranking[:10]]
    assert len(set(first) & planted_pairs(synthetic_20k)) >= 4, first
    accepted = result.extra["accepted"]
    assert result.spec.crosses == accepted and accepted == result.ranking[:len(accepted)]
    assert all("r0_copy" not in c for c in result.ranking)
    assert result.scores["*".join(accepted[0])] > 0
    end, start = result.extra["valid_logloss"]["end"], result.extra["valid_logloss"]["start"]
    assert end < start
    # the model hashes the accepted crosses into their own embedding rows
    model = build_model(synthetic_20k.schema, ArchSpec.from_json(result.spec.to_json()))
    assert len(model.embedding.crosses) == len(accepted)
    assert all(isinstance(m, CrossIds) for m in model.embedding.crosses)


def test_glider_proposes_checked_crosses(synthetic_20k: Dataset,
                                         fast_config: TrainConfig) -> None:
    ctx = SearchContext(synthetic_20k, backbone_spec("dnn", 8), fast_config, seed=0)
    result = get_method("glider").search(ctx)
    accepted = {tuple(c) for c in result.extra["accepted"]}
    # at 20,000 rows and 2 epochs most accepted crosses are planted (all of them on three
    # of four splits; 3 of 5 on this fixture's split)
    planted = accepted & planted_pairs(synthetic_20k)
    assert len(planted) >= 2 and len(planted) > len(accepted - planted)
    assert max(result.scores.values()) == 1.0
    assert all(len(pair) == 2 for pair in result.ranking)
    assert {tuple(c) for c in result.spec.crosses} == accepted


def test_autocross_crosses_lift_an_lr_on_movielens(movielens: Dataset) -> None:
    config = TrainConfig(epochs=3, batch_size=1024, lr=1e-2, patience=1, progress=False,
                         threads=1, seed=0)
    lr = backbone_spec("lr", 8)
    result = get_method("autocross").search(SearchContext(movielens, lr, config, seed=0,
                                                          options={"max_crosses": 3}))
    assert result.spec.crosses, result.extra["rounds"]
    plain = fit_spec(movielens, lr, config).metrics["test"]["auc"]
    crossed = fit_spec(movielens, result.spec, config).metrics["test"]["auc"]
    assert crossed > plain + 0.002, (plain, crossed)


def test_crossing_errors_name_the_problem(tiny_synthetic: Dataset,
                                          fast_config: TrainConfig) -> None:
    one_field = backbone_spec("lr", 8).copy(fields=["r0", "num0"])
    with pytest.raises(SearchError, match="two or more categorical"):
        get_method("autocross").search(SearchContext(tiny_synthetic, one_field, fast_config))
    with pytest.raises(SearchError, match="max_order"):
        get_method("autocross").search(SearchContext(
            tiny_synthetic, backbone_spec("lr", 8), fast_config, options={"max_order": 1}))
    with pytest.raises(SearchError, match="hidden"):
        get_method("glider").search(SearchContext(
            tiny_synthetic, backbone_spec("dnn", 8), fast_config, options={"hidden": "a,b"}))


def test_search_command_chains_selection_and_crossing(tmp_path: Path,
                                                      tiny_synthetic: Dataset) -> None:
    out = tmp_path / "run"
    result = CliRunner().invoke(app, [
        "search", "--data", "synthetic?rows=4000&seed=1", "--seed", "0", "--epochs", "1",
        "--threads", "1", "--no-progress", "--baselines", "none", "--fast",
        "--methods", "lasso,autocross", "--out", str(out)])
    assert result.exit_code == 0, result.output
    r = json.loads((out / "result.json").read_text())
    select, cross = r["stages"]
    assert (select["method"], select["strategy"]) == ("lasso", "importance")
    assert set(select["ranking"]) == set(tiny_synthetic.schema.field_names)
    assert set(select["scores"]) == set(select["ranking"])
    assert (cross["method"], cross["strategy"]) == ("autocross", "beam")
    assert all(isinstance(c, list) and len(c) >= 2 for c in cross["ranking"])
    assert set(cross["scores"]) == {"*".join(c) for c in cross["ranking"]}
    spec = ArchSpec.from_dict(r["spec"]).validate(tiny_synthetic.schema)
    assert spec.fields == select["selected"] and "r0_copy" not in spec.fields
    assert spec.crosses == cross["accepted"]
