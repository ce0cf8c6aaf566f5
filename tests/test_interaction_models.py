"""The delivered model is the searched one: higher-order product terms, AutoGroup groups and
OptInter's Hadamard pairs in the spec and the model builder, and old specs still load."""

from __future__ import annotations

import pytest
import torch

from autodrs.data.dataset import Dataset
from autodrs.methods.interaction.autogroup import FeatureGroups
from autodrs.methods.interaction.common import modelled_pairs
from autodrs.models.backbones import backbone_spec
from autodrs.models.builder import build_model
from autodrs.spec import ArchSpec, Interaction, SpecError


def stacked(model: torch.nn.Module, batch: object) -> torch.Tensor:
    return model.stacked(model.embedding(batch))


def test_higher_order_products_are_the_sum_of_elementwise_products(
        tiny_synthetic: Dataset) -> None:
    spec = backbone_spec("fm", 4).copy(interactions=[
        Interaction(["r0", "r1"]), Interaction(["r0", "r1", "r2"]),
        Interaction(["r1", "r2", "r3", "r4"], weight=0.5)])
    model = build_model(tiny_synthetic.schema, spec)
    torch.manual_seed(0)
    with torch.no_grad():  # embeddings of a trained scale, so the products are not ~0
        for table in model.embedding.tables:
            table.weight.normal_(0.0, 0.5)
    batch = next(tiny_synthetic.valid.batches(32))
    e = stacked(model, batch)
    idx = {n: i for i, n in enumerate(model.field_names)}
    third = (e[:, idx["r0"]] * e[:, idx["r1"]] * e[:, idx["r2"]]).sum(-1)
    fourth = (e[:, idx["r1"]] * e[:, idx["r2"]] * e[:, idx["r3"]] * e[:, idx["r4"]]).sum(-1)
    assert third.abs().mean() > 1e-3
    assert torch.allclose(model.higher(e), third + 0.5 * fourth, rtol=1e-4, atol=1e-6)
    # the pair stays in the FM term, the tuples are a term of their own in the logit
    assert model.fm.products.left.numel() == 1
    with torch.no_grad():
        full = model(batch)
        model.higher.weight.zero_()
        assert torch.allclose(full - model(batch), third + 0.5 * fourth, rtol=1e-4, atol=1e-5)


def test_group_interactions_compute_what_autogroup_searched(tiny_synthetic: Dataset) -> None:
    """The builder's groups give the supernet's group features for the same members and
    member weights (the structure fixed), every order included."""
    spec = backbone_spec("deepfm", 4)
    names = spec.used_fields(tiny_synthetic.schema)
    torch.manual_seed(0)
    searched = FeatureGroups(len(names), 4, [2, 2, 1], tau=0.01, compensation=0.05)
    members = {1: [[0, 3], [5]], 2: [[0, 1, 2], [4, 7]], 3: [[1, 2, 3]]}
    with torch.no_grad():
        for p, groups in members.items():
            logits = torch.zeros_like(searched.structure[p - 1])
            logits[..., 1] = 5.0  # out of the group
            for g, fields in enumerate(groups):
                logits[fields, g, 0] = 10.0
            searched.structure[p - 1].copy_(logits)
    searched.eval()
    inters = [Interaction([names[i] for i in fields], function="group", order=p)
              for p, groups in members.items() for fields in groups]
    out = spec.copy(fm=False, group_compensation=0.05, interactions=inters)
    model = build_model(tiny_synthetic.schema, ArchSpec.from_json(out.to_json()))
    with torch.no_grad():
        for p in members:
            model.groups.weights[str(p)].copy_(searched.field_weight[p - 1])
    model.eval()
    e = stacked(model, next(tiny_synthetic.valid.batches(64)))
    searched.norm.load_state_dict(model.groups.norm.state_dict())
    assert torch.allclose(model.groups(e), searched(e, None).features, atol=1e-5)
    assert model.groups.out_dim == 2 * 4 + 2 + 1 == searched.feature_dim
    assert model.fm is None and model.mlp is not None
    assert modelled_pairs(out, names) == {frozenset((names[0], names[1])), frozenset((names[0], names[2])),
                                   frozenset((names[1], names[2])), frozenset((names[4], names[7]))}


def test_hadamard_pairs_feed_the_deep_head_from_their_own_tables(
        tiny_synthetic: Dataset) -> None:
    spec = backbone_spec("deepfm", 8).copy(fm=False, pair_dim=3, interactions=[
        Interaction(["r0", "r1"], function="hadamard"),
        Interaction(["r2", "num0"], function="hadamard")])
    model = build_model(tiny_synthetic.schema, spec)
    batch = next(tiny_synthetic.valid.batches(16))
    table = model.hadamard.embedding
    assert table.names == ["r0", "r1", "r2", "num0"] and set(table.dims) == {3}
    e = dict(zip(table.names, table(batch), strict=True))
    expected = torch.cat([e["r0"] * e["r1"], e["r2"] * e["num0"]], dim=1)
    assert torch.allclose(model.hadamard(batch), expected)
    flat = sum(model.embedding.dims)
    assert model.mlp.net[0].in_features == flat + 2 * 3
    # without an MLP the pairs are read out by the linear head
    shallow = build_model(tiny_synthetic.schema, spec.copy(mlp=[]))
    assert shallow.head.in_features == 6 and shallow(batch).shape == (16,)


def test_old_specs_load_and_new_interactions_are_checked(tiny_synthetic: Dataset) -> None:
    schema = tiny_synthetic.schema
    old = backbone_spec("deepfm").to_dict()
    for key in ("pair_dim", "group_compensation"):
        old.pop(key)
    old["interactions"] = [{"fields": ["r0", "r1"], "function": "product", "weight": 0.6}]
    spec = ArchSpec.from_dict(old).validate(schema)
    assert spec.interactions == [Interaction(["r0", "r1"], weight=0.6)]
    assert spec.pair_dim is None and spec.group_compensation == 0.01
    assert modelled_pairs(spec, ["r0", "r1", "r2"]) == {frozenset(("r0", "r1"))}
    assert len(modelled_pairs(spec.copy(interactions=None), ["r0", "r1", "r2"])) == 3
    base = backbone_spec("deepfm")
    bad = [
        ([Interaction(["r0", "r1"], function="group")], "needs an order"),
        ([Interaction(["r0"], function="group", order=9)], "needs an order"),
        ([Interaction(["r0", "r1"], order=2)], "order applies to group"),
        ([Interaction(["r0", "r1", "r2"], function="hadamard")], "exactly two fields"),
        ([Interaction(["r0", "r0", "r1"])], "names a field twice"),
        ([Interaction(["r0"])], "two or more fields"),
    ]
    for inters, message in bad:
        with pytest.raises(SpecError, match=message):
            base.copy(interactions=inters).validate(schema)
    with pytest.raises(SpecError, match="pair_dim"):
        base.copy(pair_dim=0).validate(schema)
    # a tuple of three, a group or a Hadamard pair alone is a tower
    for inter in (Interaction(["r0", "r1", "r2"]), Interaction(["r0"], function="group", order=1),
                  Interaction(["r0", "r1"], function="hadamard")):
        only = ArchSpec(interactions=[inter]).validate(schema)
        assert build_model(schema, only)(next(tiny_synthetic.valid.batches(8))).shape == (8,)
