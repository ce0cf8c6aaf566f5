"""Interaction search: GRDA, AutoFIS recovering planted pairs, every interaction method's
stage result and spec, OptInter's memorised crosses, and the black-box pair space."""

from __future__ import annotations

import json
from dataclasses import replace
from itertools import combinations

import optuna
import pytest
import torch

from autodrs.data.dataset import Dataset, load_dataset
from autodrs.methods.interaction.autofis import (
    GATE_INIT,
    SEARCH_EPOCHS,
    SEARCH_STEPS,
    above_largest_drop,
    default_search_epochs,
    head_candidates,
)
from autodrs.methods.interaction.space import PairSelectionSpace
from autodrs.models.backbones import backbone_spec
from autodrs.models.builder import build_model
from autodrs.search.base import SearchContext, SearchError, StageResult, get_method
from autodrs.spec import ArchSpec, Interaction, SpecError, cross_name
from autodrs.train.grda import GRDA
from autodrs.train.trainer import TrainConfig

RELEVANT = ["r0", "r1", "r2", "r3", "r4", "r5"]
GRADIENT_METHODS = ["autofis", "autogroup", "profit", "fives", "optinter"]


def context(ds: Dataset, config: TrainConfig, **options: object) -> SearchContext:
    spec_fields = options.pop("fields", None)
    strategy = options.pop("strategy", None)
    trials = options.pop("trials", None)
    return SearchContext(dataset=ds, spec=ArchSpec(fields=spec_fields), train=config, seed=0,
                         strategy=strategy, trials=trials, options=dict(options))


# ---------------------------------------------------------------------------- GRDA
def test_grda_follows_the_dual_averaging_update() -> None:
    w = torch.nn.Parameter(torch.tensor([0.6, -0.6]))
    opt = GRDA([w], lr=0.5, c=0.1, mu=0.6)
    v = torch.tensor([0.6, -0.6])
    for t, grad in enumerate(([-0.2, 0.1], [0.3, -0.4])):
        w.grad = torch.tensor(grad)
        opt.step()
        v = v - 0.5 * torch.tensor(grad)
        l1 = 0.1 * 0.5 ** (0.5 + 0.6) * (t + 1) ** 0.6
        expected = torch.sign(v) * torch.clamp(v.abs() - l1, min=0.0)
        assert torch.allclose(w.detach(), expected)


def test_grda_zeroes_weights_without_gradient_and_keeps_pushed_ones() -> None:
    w = torch.nn.Parameter(torch.tensor([0.6, 0.6]))
    opt = GRDA([w], lr=1.0, c=0.05, mu=0.8)
    for _ in range(60):
        w.grad = torch.tensor([0.0, -0.05])  # the second weight is consistently wanted
        opt.step()
    assert w[0].item() == 0.0  # exactly zero, not merely small
    assert w[1].item() > 0.5


@pytest.mark.parametrize("kwargs", [{"lr": 0.0}, {"c": -1.0}, {"mu": 1.5}])
def test_grda_rejects_bad_settings(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        GRDA([torch.nn.Parameter(torch.zeros(2))], **kwargs)


# ---------------------------------------------------------------------------- AutoFIS
@pytest.fixture(scope="module")
def synthetic_100k() -> Dataset:
    return load_dataset("synthetic?rows=100000&seed=1", seed=0)


def test_autofis_recovers_the_planted_pairs_and_prunes_the_rest(synthetic_100k: Dataset) -> None:
    """On the six relevant fields (15 pairs, 5 planted), AutoFIS-DeepFM ranks at least 4
    planted pairs in its top 5 and removes at least 70% of the 10 others."""
    ds = synthetic_100k
    config = TrainConfig(epochs=2, batch_size=512, patience=1, progress=False, threads=1)
    result = get_method("autofis").search(context(ds, config, fields=list(RELEVANT)))
    planted = {tuple(p) for p in ds.info["truth"]["pairs"]}
    top5 = [tuple(p) for p in result.ranking[:5]]
    assert sum(p in planted for p in top5) >= 4
    kept = {tuple(i.fields) for i in result.spec.interactions}
    others = [p for p in combinations(RELEVANT, 2) if p not in planted]
    assert sum(p not in kept for p in others) >= 0.7 * len(others)
    # every survivor carries its gate, and zero-gate pairs are gone
    assert all(i.weight not in (None, 0.0) for i in result.spec.interactions)
    assert all(result.scores["*".join(p)] == 0.0 for p in combinations(RELEVANT, 2)
               if p not in kept)


def test_autofis_retrain_keeps_gates_as_attention(tiny_synthetic: Dataset,
                                                  fast_config: TrainConfig) -> None:
    result = get_method("autofis").search(
        context(tiny_synthetic, fast_config, threshold=0.65))
    spec = ArchSpec.from_json(result.spec.to_json())
    kept = spec.interactions
    assert kept and len(kept) < len(result.scores)
    model = build_model(tiny_synthetic.schema, spec)
    assert model.fm.weight is not None and model.fm.weight.requires_grad
    assert model.fm.weight.detach().tolist() == pytest.approx([i.weight for i in kept])
    assert model.fm.products.left.numel() == len(kept)
    # as in the official retrain, every kept gate starts again at 0.6; the searched gates
    # chose the pairs and rank them (best first)
    assert [i.weight for i in kept] == [GATE_INIT] * len(kept)
    magnitudes = [result.scores[i.key] for i in kept]
    assert magnitudes == sorted(magnitudes, reverse=True) and min(magnitudes) > 0
    assert result.extra["retrain_gates"] == "init"
    searched = get_method("autofis").search(
        context(tiny_synthetic, fast_config, threshold=0.65, retrain_gates="searched"))
    assert [i.fields for i in searched.spec.interactions] == [i.fields for i in kept]
    assert [abs(i.weight) for i in searched.spec.interactions] == \
        pytest.approx(magnitudes, abs=1e-6)
    with pytest.raises(SearchError, match="retrain_gates must be init or searched"):
        get_method("autofis").search(context(tiny_synthetic, fast_config, retrain_gates="x"))
    assert not spec.pair_norm and model.fm.norm is None
    # the official retrain: the same gates on batch-normalised products (no affine)
    normed = get_method("autofis").search(
        context(tiny_synthetic, fast_config, threshold=0.65, pair_norm=True)).spec
    assert normed.pair_norm and normed.interactions == result.spec.interactions
    model = build_model(tiny_synthetic.schema, normed)
    assert model.fm.norm is not None and not model.fm.norm.affine


def test_autofis_is_deterministic_under_a_seed(tiny_synthetic: Dataset,
                                               fast_config: TrainConfig) -> None:
    a = get_method("autofis").search(context(tiny_synthetic, fast_config))
    b = get_method("autofis").search(context(tiny_synthetic, fast_config))
    assert a.spec.to_dict() == b.spec.to_dict()
    assert a.scores == b.scores


# ---------------------------------------------------------------------------- all methods
@pytest.mark.parametrize("method", GRADIENT_METHODS + ["pairsearch"])
def test_every_interaction_method_writes_a_usable_spec(method: str, tiny_synthetic: Dataset,
                                                       fast_config: TrainConfig) -> None:
    options: dict[str, object] = {}
    if method == "pairsearch":
        options = {"strategy": "random", "trials": 2, "epochs": 1}
    result = get_method(method).search(context(tiny_synthetic, fast_config, **options))
    assert isinstance(result, StageResult)
    entry = json.loads(json.dumps(result.to_dict()))
    assert entry["method"] == method
    names = set(tiny_synthetic.schema.field_names)
    pairs = {"*".join(p) for p in combinations(tiny_synthetic.schema.field_names, 2)}
    # the ranking lists every candidate pair (field-name lists), best first
    assert {"*".join(r) for r in result.ranking if len(r) == 2} == pairs
    assert all(set(r) <= names for r in result.ranking)
    assert set(entry["scores"]) == {"*".join(r) for r in result.ranking}
    ordered = [result.scores["*".join(r)] for r in result.ranking if len(r) == 2]
    if method not in ("profit", "fives"):  # those list each order best first, pairs first
        assert ordered == sorted(ordered, reverse=True)
    spec = result.spec
    assert spec.interactions is not None
    # what each method delivers: FM pairs (and product triples), OptInter memorised and
    # Hadamard pairs, AutoGroup its groups (on the deep head, no FM term as in its supernet)
    assert spec.fm == (method not in ("optinter", "autogroup"))
    if method != "autogroup":
        assert {i.key for i in spec.interactions if len(i.fields) == 2} <= pairs
    spec.validate(tiny_synthetic.schema)
    model = build_model(tiny_synthetic.schema, spec)
    batch = next(tiny_synthetic.valid.batches(64))
    assert model(batch).shape == (64,)


@pytest.mark.parametrize("method", ["profit", "fives", "autogroup"])
def test_higher_order_methods_report_triples_after_the_pairs(
        method: str, tiny_synthetic: Dataset, fast_config: TrainConfig) -> None:
    result = get_method(method).search(context(tiny_synthetic, fast_config))
    orders = [len(r) for r in result.ranking]
    assert orders == sorted(orders)
    triples = result.to_dict()["triples"]
    assert triples and all(len(t) == 3 and len(set(t)) == 3 for t in triples)
    if method == "autogroup":
        return
    # the kept triples reach the model as third-order product terms
    spec = ArchSpec.from_json(result.spec.to_json())
    found = [i.fields for i in spec.interactions if len(i.fields) == 3]
    assert found == triples and all(i.function == "product" for i in spec.interactions)
    model = build_model(tiny_synthetic.schema, spec)
    index = {n: k for k, n in enumerate(model.field_names)}
    assert model.higher.index_3.tolist() == [[index[n] for n in t] for t in triples]


def test_autogroup_delivers_its_groups_of_every_order(tiny_synthetic: Dataset,
                                                    fast_config: TrainConfig) -> None:
    result = get_method("autogroup").search(context(tiny_synthetic, fast_config))
    groups = result.to_dict()["groups"]
    spec = ArchSpec.from_json(result.spec.to_json())
    delivered = {(i.order, tuple(i.fields)) for i in spec.interactions}
    assert all(i.function == "group" for i in spec.interactions)
    assert delivered == {(p, tuple(g)) for p in (1, 2, 3) for g in groups[f"order{p}"] if g}
    assert {i.order for i in spec.interactions} == {1, 2, 3}
    model = build_model(tiny_synthetic.schema, spec)
    dim = spec.embed_dim
    assert model.groups.out_dim == sum(dim if p == 1 else 1 for p, _ in delivered)
    # the pairs its order-2 groups model are the pairs it ranks above zero
    co_members = {frozenset(p) for g in groups["order2"] for p in combinations(g, 2)}
    assert {frozenset(p) for p in result.to_dict()["pairs"]} == co_members


def test_fm_backbone_has_no_deep_tower(tiny_synthetic: Dataset,
                                       fast_config: TrainConfig) -> None:
    result = get_method("autofis").search(context(tiny_synthetic, fast_config, backbone="fm"))
    assert result.spec.mlp == [] and result.spec.fm and result.spec.linear
    assert result.to_dict()["grda"]["mu"] == 0.6


def test_autofis_auto_keeps_the_head_whose_retrain_validates_best(
        tiny_synthetic: Dataset, fast_config: TrainConfig) -> None:
    from autodrs.experiment import cached_fit, shared_fits

    spec = backbone_spec("ipnn", 8).copy(numerical={"num0": "linear", "num_noise": "linear"})
    # a low threshold, so that gates survive one epoch on 4,000 rows
    ctx = SearchContext(tiny_synthetic, spec, fast_config, seed=0,
                        options={"backbone": "auto", "search_epochs": 1, "threshold": 0.3})
    with shared_fits():
        result = get_method("autofis").search(ctx)
        heads = result.extra["heads"]
        tried = heads["retrained"]
        # per head: the strong pairs plain, then every kept pair with its gate; under the FM
        # head with the linear fields bucketised first
        assert [(t["backbone"], t["numerical"]["num0"], t["gates"]) for t in tried] == [
            ("fm", "bucket", False), ("fm", "bucket", True), ("fm", "linear", False),
            ("fm", "linear", True), ("deepfm", "linear", False), ("deepfm", "linear", True)]
        assert all(plain["pairs"] < gated["pairs"]
                   for plain, gated in zip(tried[::2], tried[1::2], strict=True))
        best = max(tried, key=lambda t: t["valid_auc"])
        assert heads["chosen"] == best["backbone"] == result.extra["backbone"]
        assert result.spec.numerical == best["numerical"]
        assert (result.spec.mlp == []) == (best["backbone"] == "fm")
        assert len(result.spec.interactions) == best["pairs"] == len(result.extra["kept"])
        assert result.spec.provenance[-1]["kept"] == [i.fields for i in result.spec.interactions]
        # the guard finds the chosen spec already retrained
        assert cached_fit(tiny_synthetic, result.spec, fast_config) is not None
    # no time for any retrain: the first head's search, unretrained, for the guard to judge
    broke = get_method("autofis").search(replace(ctx, budget_seconds=0.0))
    assert broke.extra["heads"] == {"chosen": "fm", "retrained": []}
    assert broke.spec.mlp == [] and broke.spec.fm


def test_autofis_plain_candidate_keeps_the_pairs_above_the_largest_gate_drop() -> None:
    gates = [0.8, -0.75, 0.7, 0.2, 0.1]
    kept = [Interaction(fields=[f"a{k}", f"b{k}"], weight=g) for k, g in enumerate(gates)]
    top = above_largest_drop(kept)
    assert [i.fields for i in top] == [["a0", "b0"], ["a1", "b1"], ["a2", "b2"]]
    assert all(i.weight is None for i in top)  # a plain FM term: no gates
    # the drop is measured on magnitudes: a sign flip is no drop
    signs = [Interaction(["a", "b"], weight=0.8), Interaction(["c", "d"], weight=-0.79),
             Interaction(["e", "f"], weight=0.1)]
    assert len(above_largest_drop(signs)) == 2
    single = above_largest_drop(kept[:1])
    assert single[0].fields == ["a0", "b0"] and single[0].weight is None
    assert above_largest_drop([]) == []


def test_autofis_head_candidates(tiny_synthetic: Dataset) -> None:
    schema = tiny_synthetic.schema
    kept = [Interaction(["r0", "r1"], weight=0.9), Interaction(["r2", "r3"], weight=0.1)]
    fm = ArchSpec(mlp=[], fm=True, linear=True, numerical={"num0": "linear"}, interactions=kept)
    out = head_candidates(fm, schema)
    assert [(c.numerical["num0"], len(c.interactions)) for c in out] == \
        [("bucket", 1), ("bucket", 2), ("linear", 1), ("linear", 2)]
    assert out[0].numerical["num_noise"] == "bucket"  # every linear field, default included
    deep = fm.copy(mlp=[32])  # an MLP can bend a linear encoding: no bucketised variant
    assert [len(c.interactions) for c in head_candidates(deep, schema)] == [1, 2]
    # no surviving pair: one candidate, not two identical ones
    assert len(head_candidates(deep.copy(interactions=[]), schema)) == 1
    # gates restarted at 0.6 in the spec: the drop is read from the searched gates given
    three = [["r0", "r1"], ["r2", "r3"], ["r4", "r5"]]
    restarted = deep.copy(interactions=[Interaction(f, weight=GATE_INIT) for f in three])
    searched = [0.9, 0.8, 0.1]
    assert [len(c.interactions) for c in head_candidates(restarted, schema, searched)] == \
        [2, 3]
    top = above_largest_drop(restarted.interactions, searched)
    assert [i.fields for i in top] == three[:2] and top[0].weight is None


def test_bad_options_are_named(tiny_synthetic: Dataset, fast_config: TrainConfig) -> None:
    with pytest.raises(SearchError, match="backbone"):
        get_method("autofis").search(context(tiny_synthetic, fast_config, backbone="dcn"))
    with pytest.raises(SearchError, match="threshold"):
        get_method("autofis").search(context(tiny_synthetic, fast_config, threshold="high"))
    with pytest.raises(SearchError, match="max_order"):
        get_method("autogroup").search(context(tiny_synthetic, fast_config, max_order=7))
    with pytest.raises(SearchError, match="strategy"):
        get_method("autofis").search(context(tiny_synthetic, fast_config, strategy="tpe"))


# ---------------------------------------------------------------------------- OptInter
def test_optinter_memorised_pairs_become_cross_features(tiny_synthetic: Dataset,
                                                        fast_config: TrainConfig) -> None:
    result = get_method("optinter").search(context(tiny_synthetic, fast_config))
    functions = result.to_dict()["functions"]
    assert set(functions.values()) <= {"memorise", "factorise", "naive"}
    spec = result.spec
    by_key = {i.key: i for i in spec.interactions}
    for key, how in functions.items():
        if how == "naive":
            assert key not in by_key
        elif how == "memorise":
            assert by_key[key].function == "memorise"
            assert by_key[key].fields in spec.crosses
            # embedded at the pair dim, as the official comb_embedding_dim
            assert spec.dim_of(cross_name(by_key[key].fields)) == spec.pair_dim
        else:
            # retrained as searched: the Hadamard product of the pair's own embeddings
            assert by_key[key].function == "hadamard"
    # numerical fields have no cross feature, so their pairs are never memorised
    assert all(how != "memorise" for key, how in functions.items()
               if "num0" in key.split("*") or "num_noise" in key.split("*"))
    model = build_model(tiny_synthetic.schema, spec)
    factorised = sum(how == "factorise" for how in functions.values())
    assert factorised and spec.pair_dim == spec.embed_dim // 2
    assert model.hadamard.out_dim == factorised * spec.pair_dim
    assert model.fm is None and model.mlp.net[0].in_features == \
        sum(model.embedding.dims) + model.hadamard.out_dim
    assert len(model.embedding.crosses) == len(spec.crosses)


def test_memorised_interaction_needs_its_cross(tiny_synthetic: Dataset) -> None:
    spec = backbone_spec("deepfm")
    spec.interactions = [Interaction(fields=["r0", "r1"], function="memorise")]
    with pytest.raises(SpecError, match="cross"):
        spec.validate(tiny_synthetic.schema)
    spec.crosses = [["r0", "r1"]]
    spec.interactions.append(Interaction(fields=["r2", "r3"]))
    model = build_model(tiny_synthetic.schema, spec)
    # the FM models only the product pair; the memorised pair is the cross embedding
    assert model.fm.products.left.numel() == 1
    assert "r0xr1" in model.embedding.names


# ---------------------------------------------------------------------------- black box
def test_pair_selection_space_writes_the_sampled_pairs(tiny_synthetic: Dataset,
                                                       fast_config: TrainConfig) -> None:
    pairs = [("r0", "r1"), ("r0", "r2"), ("n0", "n1")]
    space = PairSelectionSpace(pairs)
    trial = optuna.trial.FixedTrial({"pair:r0*r1": "keep", "pair:r0*r2": "drop",
                                     "pair:n0*n1": "keep"})
    ctx = context(tiny_synthetic, fast_config)
    decision = space.suggest(trial, ctx)
    assert decision == {"pairs": [["r0", "r1"], ["n0", "n1"]]}
    spec = space.apply(backbone_spec("deepfm"), decision)
    assert [i.fields for i in spec.interactions] == [["r0", "r1"], ["n0", "n1"]]
    assert set(space.grid(ctx)) == {"pair:r0*r1", "pair:r0*r2", "pair:n0*n1"}
    with pytest.raises(SearchError, match="outside"):
        space.apply(backbone_spec("deepfm"), {"pairs": [["r3", "r4"]]})
    with pytest.raises(SearchError, match="fm or inner"):
        space.apply(backbone_spec("dnn"), decision)
    with pytest.raises(SearchError):
        PairSelectionSpace([("r0", "r0")])


def test_pairsearch_keeps_the_best_trials_pairs(tiny_synthetic: Dataset,
                                                fast_config: TrainConfig) -> None:
    ctx = replace(context(tiny_synthetic, fast_config, epochs=1, subsample=0.5),
                  strategy="tpe", trials=3)
    result = get_method("pairsearch").search(ctx)
    complete = [t for t in result.trials if t["state"] == "COMPLETE"]
    best = max(complete, key=lambda t: (t["values"][0], -t["number"]))
    assert sorted(i.key for i in result.spec.interactions) == sorted(
        "*".join(p) for p in best["decision"]["pairs"])


def test_pairsearch_with_no_finished_trial_found_nothing(tiny_synthetic: Dataset,
                                                         fast_config: TrainConfig) -> None:
    # nothing is known for or against any pair: the input goes on unchanged and marked,
    # never every pair presented as kept
    ctx = replace(context(tiny_synthetic, fast_config, epochs=1), strategy="random",
                  trials=4, budget_seconds=0.0)
    result = get_method("pairsearch").search(ctx)
    assert result.no_result is not None
    assert result.no_result.startswith("pairsearch found no interactions: no trial"), (
        result.no_result)
    assert result.spec.to_dict() == ctx.spec.to_dict()
    assert result.spec.interactions is None and result.ranking == []


def test_autofis_searches_longer_on_data_with_short_epochs() -> None:
    assert default_search_epochs(1_000_000, 1024) == SEARCH_EPOCHS  # long epochs: the default
    assert default_search_epochs(80_000, 1024) == 6  # movielens-100k: 79 steps an epoch
    for rows in (1, 5_000, 80_000, 160_000, 400_000):
        epochs = default_search_epochs(rows, 1024)
        steps = epochs * -(-rows // 1024)
        assert steps >= SEARCH_STEPS and epochs >= SEARCH_EPOCHS
        assert epochs == SEARCH_EPOCHS or (epochs - 1) * -(-rows // 1024) < SEARCH_STEPS
