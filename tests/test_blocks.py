"""Block DAGs and per-pair interaction functions in the spec: validation with clear errors,
rebuilt by ``build_model``, and every architecture (hand-written or found by a block or
function method) round-trips through the spec JSON to the same predictions."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from autodrs.data.dataset import Dataset
from autodrs.experiment import fit_spec
from autodrs.models.backbones import backbone_spec
from autodrs.models.builder import build_model
from autodrs.nn.functions import PairFunctions, PairFunctionTower
from autodrs.runfolder import load_model, save_model
from autodrs.search.base import SearchContext, get_method
from autodrs.spec import ArchSpec, Interaction, SpecError
from autodrs.train.trainer import TrainConfig

ALL_BLOCKS = {
    "nodes": [
        {"id": "fm", "type": "fm", "inputs": ["embeddings"]},
        {"id": "deep", "type": "mlp", "inputs": ["embeddings", "fm"], "width": 16},
        {"id": "dot", "type": "dot", "inputs": ["embeddings", "deep"],
         "fields": ["r0", "r1", "r2"]},
        {"id": "cross", "type": "crossnet", "inputs": ["deep", "dot"], "layers": 2},
        {"id": "att", "type": "attention", "inputs": ["embeddings", "cross"], "heads": 2},
    ],
    "output": ["cross", "att"],
}


def same_predictions(ds: Dataset, spec: ArchSpec, folder: Path, train: bool = False) -> None:
    """Save a model built from ``spec`` (trained for an epoch when ``train``), load it from
    the folder (spec rebuilt from its JSON) and compare the outputs."""
    if train:
        config = TrainConfig(epochs=1, batch_size=512, progress=False, threads=1, seed=0)
        model = fit_spec(ds, spec, config).model
    else:
        torch.manual_seed(0)
        model = build_model(ds.schema, spec)
    save_model(folder, model, ds.schema)
    loaded, _ = load_model(folder)
    assert loaded.spec.to_dict() == model.spec.to_dict()
    batch = ds.test.batch(slice(0, 256))
    model.eval()
    loaded.eval()
    with torch.no_grad():
        assert torch.allclose(model(batch), loaded(batch), atol=1e-6)


def test_every_block_type_builds_and_round_trips(tiny_synthetic: Dataset,
                                                 tmp_path: Path) -> None:
    spec = ArchSpec(embed_dim=8, linear=True, dag=ALL_BLOCKS, field_dims={"r0": 4})
    model = build_model(tiny_synthetic.schema, spec)
    # towers other than the DAG are off; the DAG's blocks are the model
    assert model.fm is None and model.mlp is None and model.dag is not None
    assert set(model.dag.blocks) == {"fm", "deep", "dot", "cross", "att"}
    # the dot block sees three fields plus one token for the MLP's output: 6 products
    assert model.dag.blocks["dot"].out_dim == 6
    same_predictions(tiny_synthetic, spec, tmp_path / "dag", train=True)


def test_pair_functions_round_trip(tiny_synthetic: Dataset, tmp_path: Path) -> None:
    spec = ArchSpec(embed_dim=8, linear=True, fm=True, mlp=[16], interactions=[
        Interaction(["r0", "r1"], "multiply", weight=0.5),
        Interaction(["r0", "r2"], "plus"), Interaction(["r1", "r3"], "max"),
        Interaction(["r2", "r4"], "min"), Interaction(["r3", "r5"], "concat"),
        Interaction(["r1", "r2"], "generalised"), Interaction(["r4", "r5"], "product")])
    model = build_model(tiny_synthetic.schema, spec)
    assert model.functions is not None
    assert set(model.functions.groups) == {"multiply", "plus", "max", "min", "concat",
                                           "generalised"}
    # only the product pair goes to the FM term
    assert model.fm.products.left.numel() == 1
    same_predictions(tiny_synthetic, spec, tmp_path / "functions", train=True)


def test_pair_functions_compute_what_they_say() -> None:
    torch.manual_seed(0)
    stacked = torch.randn(5, 3, 4)
    a, b = stacked[:, 0], stacked[:, 2]
    funcs = PairFunctions([(0, 2)], ["product", "multiply", "plus", "max", "min", "concat",
                                     "generalised"], 4)
    with torch.no_grad():
        for head in funcs.heads.values():
            head.fill_(1.0)
        funcs.kernel.copy_(torch.eye(4).unsqueeze(0))
    out = funcs(stacked)[:, 0]
    inner = (a * b).sum(1)
    assert torch.allclose(out[:, 0], inner, atol=1e-6)
    assert torch.allclose(out[:, 1], inner, atol=1e-6)  # Hadamard, read out by ones
    assert torch.allclose(out[:, 2], (a + b).sum(1), atol=1e-6)
    assert torch.allclose(out[:, 3], torch.maximum(a, b).sum(1), atol=1e-6)
    assert torch.allclose(out[:, 4], torch.minimum(a, b).sum(1), atol=1e-6)
    assert torch.allclose(out[:, 5], a.sum(1) + b.sum(1), atol=1e-6)
    assert torch.allclose(out[:, 6], inner, atol=1e-5)  # identity kernel
    tower = PairFunctionTower([(0, 1), (0, 2), (1, 2)], ["plus", "multiply", "plus"], 4)
    terms = tower.pair_logits(stacked)
    assert terms.shape == (5, 3)
    assert torch.allclose(tower(stacked), terms.sum(1))


@pytest.mark.parametrize(("dag", "message"), [
    ({"nodes": []}, "non-empty list of nodes"),
    ({"nodes": [{"id": "a", "type": "mlp"}]}, "needs inputs"),
    ({"nodes": [{"id": "a", "type": "conv", "inputs": ["embeddings"]}]}, "unknown type"),
    ({"nodes": [{"id": "a", "type": "mlp", "inputs": ["b"]},
                {"id": "b", "type": "mlp", "inputs": ["embeddings"]}]},
     "neither 'embeddings' nor an earlier block"),
    ({"nodes": [{"id": "a", "type": "mlp", "inputs": ["embeddings"], "heads": 2}]},
     "heads does not apply to mlp"),
    ({"nodes": [{"id": "a", "type": "mlp", "inputs": ["embeddings"], "width": 0}]},
     "width must be an integer >= 1"),
    ({"nodes": [{"id": "a", "type": "fm", "inputs": ["embeddings"], "fields": ["r0"]}]},
     "at least two tokens"),
    ({"nodes": [{"id": "a", "type": "mlp", "inputs": ["embeddings"], "fields": ["zz"]}]},
     "names field 'zz'"),
    ({"nodes": [{"id": "a", "type": "mlp", "inputs": ["embeddings"]},
                {"id": "b", "type": "mlp", "inputs": ["embeddings"]}], "output": ["b"]},
     "'a' feeds no other block"),
    ({"nodes": [{"id": "a", "type": "mlp", "inputs": ["embeddings"]}], "output": ["x"]},
     "output names 'x'"),
    ({"nodes": [{"id": "a", "type": "mlp", "inputs": ["embeddings"], "size": 3}]},
     "unknown keys: size"),
])
def test_bad_dags_are_rejected_clearly(tiny_synthetic: Dataset, dag: dict,
                                       message: str) -> None:
    with pytest.raises(SpecError, match=message):
        ArchSpec(embed_dim=8, dag=dag).validate(tiny_synthetic.schema)


def test_dag_replaces_the_towers(tiny_synthetic: Dataset) -> None:
    dag = {"nodes": [{"id": "a", "type": "mlp", "inputs": ["embeddings"]}]}
    with pytest.raises(SpecError, match="turn off fm, mlp"):
        ArchSpec(embed_dim=8, fm=True, mlp=[8], dag=dag).validate(tiny_synthetic.schema)
    with pytest.raises(SpecError, match="unknown interaction function 'cosine'"):
        ArchSpec(embed_dim=8, linear=True, interactions=[Interaction(["r0", "r1"], "cosine")]
                 ).validate(tiny_synthetic.schema)
    with pytest.raises(SpecError, match="joins exactly two fields"):
        ArchSpec(embed_dim=8, linear=True, interactions=[
            Interaction(["r0", "r1", "r2"], "plus")]).validate(tiny_synthetic.schema)


@pytest.mark.parametrize("method", ["autoctr", "autopi", "sif", "autofeature", "aim"])
def test_found_architectures_round_trip(method: str, tiny_synthetic: Dataset,
                                        fast_config: TrainConfig, tmp_path: Path) -> None:
    ctx = SearchContext(tiny_synthetic, backbone_spec("deepfm", 8), fast_config, seed=1,
                        trials=2, options={"fast": True})
    found = get_method(method).search(ctx)
    text = found.spec.to_json()
    again = ArchSpec.from_json(text)
    assert again.to_dict() == found.spec.to_dict()
    if found.dag is not None:
        assert found.spec.dag == found.dag
        assert all(node["label"] for node in found.dag["nodes"])
    else:
        assert found.extra["functions"]
    same_predictions(tiny_synthetic, again, tmp_path / method)


def test_output_fm_block_starts_as_the_fm_sum(tiny_synthetic: Dataset) -> None:
    """A DeepFM-shaped DAG starts with its FM block read out as the plain FM sum."""
    dag = {"nodes": [{"id": "fm", "type": "fm", "inputs": ["embeddings"]},
                     {"id": "deep", "type": "mlp", "inputs": ["embeddings"], "width": 8}]}
    model = build_model(tiny_synthetic.schema, ArchSpec(embed_dim=8, dag=dag))
    weight = model.dag.head.weight[0]
    assert torch.equal(weight[:8], torch.ones(8))  # the FM vector comes first
    assert not torch.equal(weight[8:], torch.ones(8))
    stacked = torch.stack(model.embedding(tiny_synthetic.test.batch(slice(0, 4))), 1)
    fm_vector = model.dag.blocks["fm"](stacked)
    pairs = sum((stacked[:, i] * stacked[:, j]).sum(1) for i in range(stacked.shape[1])
                for j in range(i + 1, stacked.shape[1]))
    assert torch.allclose(fm_vector.sum(1), pairs, atol=1e-6)


def test_dag_layers_start_as_the_backbones_do(tiny_synthetic: Dataset) -> None:
    """Every linear layer of a block DAG (MLP blocks, token projections, per-field
    projections, the read-out) starts xavier-normal with zero biases, as the backbones'
    towers do; an output FM block is still read out as the plain FM sum."""
    dag = {"nodes": [{"id": "fm", "type": "fm", "inputs": ["embeddings"]},
                     {"id": "deep", "type": "mlp", "inputs": ["embeddings", "fm"],
                      "width": 64, "layers": 2},
                     {"id": "dot", "type": "dot", "inputs": ["embeddings", "deep"]}],
            "output": ["fm", "dot"]}
    torch.manual_seed(0)
    model = build_model(tiny_synthetic.schema,
                        ArchSpec(embed_dim=8, dag=dag, field_dims={"r0": 4}))
    layers = [m for m in model.dag.modules() if isinstance(m, torch.nn.Linear)]
    assert len(layers) >= 5  # two MLP layers, the dot block's token, r0's projection, head
    for layer in layers:
        if layer.bias is not None:
            assert torch.equal(layer.bias, torch.zeros_like(layer.bias))
        fan_out, fan_in = layer.weight.shape
        if layer is model.dag.head:
            continue
        std = math.sqrt(2.0 / (fan_in + fan_out))  # xavier-normal
        assert layer.weight.std().item() == pytest.approx(std, rel=0.35), layer
    head = model.dag.head.weight[0]
    assert torch.equal(head, torch.ones_like(head))  # both outputs are FM / dot terms
