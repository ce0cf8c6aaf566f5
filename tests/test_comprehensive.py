"""DeepLight and UMEC: each compresses to its target while the planted fields keep more of
their embeddings than the noise fields (which pruning that ignored the data would not do),
the delivered spec is the pruned structure, each runs standalone through ``autodrs search``,
and bad options are named."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from autodrs.cli import app
from autodrs.data.dataset import Dataset
from autodrs.methods.comprehensive.common import choose_level, hidden_layers, prune_neurons
from autodrs.models.backbones import backbone_spec
from autodrs.models.builder import build_model, count_parameters
from autodrs.nn.pruned import decode_mask
from autodrs.search.base import SearchContext, SearchError, get_method
from autodrs.spec import ArchSpec
from autodrs.train.trainer import TrainConfig


def planted_deepfm() -> ArchSpec:
    spec = backbone_spec("deepfm", 8)
    spec.numerical = {"num0": "bucket", "num_noise": "bucket"}
    return spec


@pytest.fixture(scope="module")
def deeplight(synthetic_20k: Dataset):
    config = TrainConfig(epochs=2, batch_size=512, patience=1, progress=False, threads=1,
                         seed=0)
    return get_method("deeplight").search(SearchContext(
        synthetic_20k, planted_deepfm(), config, seed=0, options={"sparsity": 0.8}))


def test_deeplight_prunes_mlp_pairs_and_embeddings_to_the_target(
        deeplight, synthetic_20k: Dataset) -> None:
    dense, point = deeplight.extra["sparsity_curve"]
    assert dense["sparsity"] == 0.0 and point["sparsity"] == 0.8
    assert deeplight.extra["chosen_sparsity"] == 0.8
    # 80% of each hidden layer's neurons and of the 78 pairs, 0.8 * 0.444 of the entries
    assert point["mlp"] == [51, 26] and point["pairs"] == 78 - 62
    assert point["embedding_kept"] == pytest.approx(1 - 0.8 * 0.444, abs=0.005)
    assert point["params"] < 0.4 * dense["params"]
    assert point["valid_auc"] > dense["valid_auc"] - 0.01
    for key in ("latency_ms", "dense_latency_ms", "structured_latency_ms"):
        assert point[key] > 0
    # the delivered spec is that structure: narrower MLP, kept pairs weighted by R,
    # kept entries as sparse per-value masks
    spec = ArchSpec.from_json(deeplight.spec.to_json()).validate(synthetic_20k.schema)
    assert spec.mlp == [51, 26] and spec.fm
    assert ArchSpec.from_dict(point["spec"]).copy(provenance=spec.provenance) == spec
    assert len(spec.interactions) == 16 and all(i.weight for i in spec.interactions)
    assert deeplight.ranking == sorted(deeplight.ranking, key=lambda p: -deeplight.scores[
        "*".join(p)])
    kept = decode_mask(spec.pruning["r1"], synthetic_20k.schema.field("r1").vocab_size, 8)
    assert float(kept.float().mean()) == pytest.approx(point["embedding_kept_by_field"]["r1"],
                                                       abs=1e-4)
    model = build_model(synthetic_20k.schema, spec)
    assert count_parameters(model)["total"] == point["params"]
    assert torch.isfinite(model(synthetic_20k.valid.batch(slice(0, 32)))).all()


def test_deeplight_keeps_more_of_the_planted_fields_embeddings(deeplight,
                                                               synthetic_20k: Dataset) -> None:
    # one global magnitude threshold: the planted fields' entries learned to matter, the
    # noise fields' stayed near their start; pruning at random would keep the same share
    # of every field
    truth = synthetic_20k.info["truth"]
    kept = deeplight.extra["sparsity_curve"][1]["embedding_kept_by_field"]
    relevant = np.mean([kept[f] for f in truth["relevant"] if f in kept])
    noise = np.mean([kept[f] for f in truth["noise"] if f in kept])
    assert relevant > noise + 0.03, kept


def test_umec_meets_its_budget_and_keeps_planted_dims(synthetic_20k: Dataset) -> None:
    config = TrainConfig(epochs=2, batch_size=512, patience=1, progress=False, threads=1,
                         seed=0)
    result = get_method("umec").search(SearchContext(
        synthetic_20k, planted_deepfm(), config, seed=0, options={"budget": 0.5}))
    dense, point = result.extra["budget_curve"]
    assert point["budget"] == 0.5 and result.extra["chosen_budget"] == 0.5
    assert point["resource_derived"] <= 0.5
    assert point["params"] < dense["params"]
    spec = result.spec
    assert spec.mlp == point["mlp"] and spec.field_dims == point["field_dims"]
    assert all(0 < w <= d for w, d in zip(spec.mlp, [256, 128], strict=True))
    # the parameter budget prices a dimension by its table's rows, and the loss defends
    # the dimensions the model uses: the planted fields keep more of theirs
    truth = synthetic_20k.info["truth"]
    relevant = np.mean([spec.dim_of(f) for f in truth["relevant"]])
    noise = np.mean([spec.dim_of(f) for f in truth["noise"]])
    assert relevant > noise + 1, spec.field_dims
    assert result.dims == {f: float(spec.dim_of(f)) for f in spec.used_fields(
        synthetic_20k.schema)}


def test_pruned_neurons_output_nothing(tiny_synthetic: Dataset) -> None:
    spec = planted_deepfm().copy(batch_norm=True)
    torch.manual_seed(0)
    model = build_model(tiny_synthetic.schema, spec).eval()
    kept = prune_neurons(model, 0.75)
    assert kept == [64, 32]
    batch = tiny_synthetic.valid.batch(slice(0, 16))
    out = model.mlp(torch.randn(16, model.mlp.net[0].in_features))
    assert int((out.abs().sum(0) > 0).sum()) <= 32
    first = hidden_layers(model)[0]
    assert int((first.following.weight.abs().sum(0) > 0).sum()) == 64
    assert torch.isfinite(model(batch)).all()


def test_choose_level_takes_the_sparsest_within_tolerance() -> None:
    points = [{"sparsity": 0.0, "valid_auc": 0.75}, {"sparsity": 0.5, "valid_auc": 0.749},
              {"sparsity": 0.8, "valid_auc": 0.7485}, {"sparsity": 0.9, "valid_auc": 0.74}]
    assert choose_level(points, 0.002, fixed=False) == 0.8
    assert choose_level(points[:1] + points[3:], 0.002, fixed=False) == 0.0
    assert choose_level(points[:1] + points[3:], 0.002, fixed=True) == 0.9


def test_bad_options_are_named(tiny_synthetic: Dataset, fast_config: TrainConfig) -> None:
    for method, options, match in [
        ("deeplight", {"sparsities": "0.5,1.5"}, "sparsities"),
        ("deeplight", {"warm": 2, "search_epochs": 2}, "search_epochs > warm"),
        ("umec", {"budget": 0}, "budgets"),
        ("umec", {"dual_lr": 0}, "dual_lr"),
    ]:
        with pytest.raises(SearchError, match=match):
            get_method(method).search(SearchContext(tiny_synthetic, planted_deepfm(),
                                                    fast_config, seed=0, options=options))
    with pytest.raises(SearchError, match="MLP"):
        get_method("umec").search(SearchContext(tiny_synthetic, backbone_spec("fm", 8),
                                                fast_config, seed=0))


@pytest.mark.parametrize("method,curve", [("deeplight", "sparsity_curve"),
                                          ("umec", "budget_curve")])
def test_search_runs_the_method_standalone(method: str, curve: str, tmp_path: Path,
                                           tiny_synthetic: Dataset) -> None:
    out = tmp_path / "run"
    result = CliRunner().invoke(app, [
        "search", "--data", "synthetic?rows=4000&seed=1", "--seed", "0", "--epochs", "2",
        "--threads", "1", "--no-progress", "--fast", "--baselines", "none",
        "--methods", method, "--out", str(out)])
    assert result.exit_code == 0, result.output
    r = json.loads((out / "result.json").read_text())
    stage = r["stages"][0]
    assert stage["method"] == method and len(stage[curve]) == 2
    assert all(p["latency_ms"] > 0 for p in stage[curve][1:])
    spec = ArchSpec.from_dict(r["spec"]).validate(tiny_synthetic.schema)
    assert spec.provenance[-1]["method"] == method
    assert 0.5 < r["metrics"]["test"]["auc"] <= 1.0
    assert method in (out / "report.html").read_text()
