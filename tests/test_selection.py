"""Field selection: planted truth recovered, redundant copies handled, the ERASE protocol,
AdaFS's controller built from the spec, the keep/drop space, and clear errors."""

from __future__ import annotations

import optuna
import pytest
import torch

from autodrs.data.dataset import Dataset, load_dataset
from autodrs.methods.selection.erase import ErasePoint, curve_area, erase_curve, pick_k
from autodrs.methods.selection.redundancy import (
    find_redundant,
    place_copies,
    purity,
    redundant_copies,
)
from autodrs.methods.selection.space import FieldSelectionSpace
from autodrs.methods.selection.truth import planted_recovery
from autodrs.models.backbones import backbone_spec
from autodrs.models.builder import build_model
from autodrs.search.base import SearchContext, SearchError, get_method
from autodrs.spec import ArchSpec, ControllerSpec, SpecError
from autodrs.train.trainer import TrainConfig


def planted_spec() -> ArchSpec:
    """An MLP model whose numerical fields are bucketed, so the non-monotone planted effect
    of ``num0`` is visible to every method that trains a model."""
    spec = backbone_spec("dnn", 8)
    spec.numerical = {"num0": "bucket", "num_noise": "bucket"}
    return spec


def ctx_for(ds: Dataset, config: TrainConfig, spec: ArchSpec | None = None,
            **options: object) -> SearchContext:
    return SearchContext(ds, spec or planted_spec(), config, seed=0, options=dict(options))


def check_planted(result, truth: dict) -> dict:
    rec = planted_recovery(result.ranking, truth, result.extra["selected"])
    assert rec["separated"], result.ranking
    assert rec["top_precision"] >= 0.9 and rec["top_recall"] >= 0.9
    assert rec["copy_adjacent"] == {"r0_copy": True}, result.ranking
    assert rec["both_kept"] == []
    assert result.extra["redundant"] == {"r0_copy": "r0"}
    return rec


# ------------------------------------------------------------------ redundancy
def test_redundant_copy_is_found_and_only_it(synthetic_20k: Dataset) -> None:
    ds = synthetic_20k
    assert find_redundant(ds.schema, ds.train, ds.schema.field_names) == [("r0", "r0_copy")]


def test_purity_ignores_rare_values() -> None:
    # every value of a is seen once: trivially "pure", but no evidence of a function
    a = torch.arange(100).numpy()
    b = (torch.arange(100) % 3).numpy()
    assert purity(a, b) == 0.0
    assert purity(a % 10, a % 5) == 1.0


def test_copies_follow_their_representative() -> None:
    copies = redundant_copies(["a", "b", "c", "d"], [("c", "a"), ("d", "c")])
    assert copies == {"c": "a", "d": "a"}
    assert place_copies(["b", "a"], copies) == ["b", "a", "c", "d"]


# ------------------------------------------------------------------ ERASE
def test_pick_k_takes_the_smallest_k_within_tolerance() -> None:
    points = [ErasePoint(k, [], valid_auc=v, test_auc=v, valid_logloss=0.0,
                         test_logloss=0.0, seconds=0.0)
              for k, v in [(1, 0.70), (2, 0.749), (3, 0.751), (4, 0.7505)]]
    assert pick_k(points, 0.002).k == 2
    assert pick_k(points, 0.0).k == 3
    assert curve_area([1, 3], [0.6, 0.8], 3) == pytest.approx(0.7)


def test_pick_k_with_a_logloss_tolerance_needs_the_logloss_alike_too() -> None:
    # k=2 is within the AUC tolerance of the best (k=3) but its logloss is 0.005 higher
    points = [ErasePoint(k, [], valid_auc=v, test_auc=v, valid_logloss=ll,
                         test_logloss=ll, seconds=0.0)
              for k, v, ll in [(1, 0.70, 0.60), (2, 0.7505, 0.555), (3, 0.751, 0.550),
                               (4, 0.7505, 0.551)]]
    assert pick_k(points, 0.002).k == 2
    assert pick_k(points, 0.002, logloss_tolerance=0.002).k == 3
    assert pick_k(points, 0.002, logloss_tolerance=0.01).k == 2


def test_erase_curve_retrains_on_top_k(tiny_synthetic: Dataset,
                                       fast_config: TrainConfig) -> None:
    ranking = ["num0", "r3", "r1", "n0"]
    curve = erase_curve(tiny_synthetic, ranking, planted_spec(), fast_config, ks=[1, 4])
    assert [p.k for p in curve.points] == [1, 4]
    assert curve.points[0].fields == ["num0"]
    # the subset is retrained in schema order, whatever order the ranking gave
    assert curve.points[1].fields == ["r1", "r3", "n0", "num0"]
    cache = {frozenset(p.fields): p for p in curve.points}
    again = erase_curve(tiny_synthetic, ranking[::-1], planted_spec(), fast_config, ks=[4],
                        cache=cache)
    assert again.points == curve.points[1:]
    assert all(0.5 < p.test_auc < 1 for p in curve.points)
    out = curve.to_dict()
    assert out["chosen_k"] in (1, 4) and min(out["test_auc"]) <= out["area"] <= max(
        out["test_auc"])
    with pytest.raises(ValueError, match="outside"):
        erase_curve(tiny_synthetic, ranking, planted_spec(), fast_config, ks=[5])


# ------------------------------------------------------------------ planted truth
def test_permutation_recovers_planted_fields_and_picks_k(synthetic_20k: Dataset,
                                                        fast_config: TrainConfig) -> None:
    result = get_method("permutation").search(
        ctx_for(synthetic_20k, fast_config, k_grid=[4, 7, 12]))
    check_planted(result, synthetic_20k.info["truth"])
    erase = result.extra["erase"]
    assert erase["k"] == [4, 7, 12]
    assert result.extra["selected"] == result.spec.fields
    assert len(result.spec.fields) == erase["chosen_k"]
    assert "r0_copy" not in result.spec.fields
    # the ranking's scores are validation AUC drops: planted fields cost AUC, noise none
    assert result.scores["num0"] > 0.01 > abs(result.scores["n1"])


@pytest.mark.parametrize("method", ["lasso", "gbdt"])
def test_classic_baselines_recover_planted_fields(method: str, synthetic_20k: Dataset,
                                                  fast_config: TrainConfig) -> None:
    result = get_method(method).search(ctx_for(synthetic_20k, fast_config, k=7,
                                               gbdt_rows=8_000))
    rec = check_planted(result, synthetic_20k.info["truth"])
    assert rec["selected_precision"] == 1.0 and rec["selected_recall"] == 1.0
    assert result.strategy == "importance"


@pytest.fixture(scope="module")
def synthetic_50k() -> Dataset:
    return load_dataset("synthetic?rows=50000&seed=1", seed=0)


def test_autofield_ranks_relevant_fields_above_noise(synthetic_50k: Dataset) -> None:
    # one search epoch of 79 weight steps (too few for a gate step every 10): a gate step
    # follows every weight step
    config = TrainConfig(epochs=2, batch_size=512, patience=1, progress=False, threads=1,
                         seed=0)
    result = get_method("autofield").search(ctx_for(synthetic_50k, config, k=7))
    check_planted(result, synthetic_50k.info["truth"])
    assert result.extra["arch_steps"] == 79
    probs = result.scores
    assert all(0 < p < 1 for p in probs.values())
    assert min(probs[f] for f in synthetic_50k.info["truth"]["relevant"]) > 0.5


# ------------------------------------------------------------------ AdaFS
def test_adafs_hard_controller_is_part_of_the_served_model(tiny_synthetic: Dataset,
                                                           fast_config: TrainConfig) -> None:
    result = get_method("adafs").search(
        ctx_for(tiny_synthetic, fast_config, variant="hard", controller_k=3, fast=True))
    spec = ArchSpec.from_json(result.spec.to_json())
    assert spec.controller is not None and spec.controller.k == 3
    assert set(result.ranking) == set(tiny_synthetic.schema.field_names)
    # mean soft weights over the scored fields (the copy shares r0's) sum to one
    assert sum(v for f, v in result.scores.items() if f != "r0_copy") == pytest.approx(1.0)
    assert result.extra["metrics"]["test"]["auc"] > 0.5
    model = build_model(tiny_synthetic.schema, spec).eval()
    batch = tiny_synthetic.valid.batch(slice(0, 64))
    weights = model.controller._hard(model.controller.soft_weights(model.embedding(batch)))
    assert ((weights > 0).sum(1) == 3).all()
    assert torch.isfinite(model(batch)).all()


def test_adafs_rejects_a_bad_variant(tiny_synthetic: Dataset, fast_config: TrainConfig) -> None:
    with pytest.raises(SearchError, match="variant"):
        get_method("adafs").search(ctx_for(tiny_synthetic, fast_config, variant="medium"))
    with pytest.raises(SpecError, match="controller.k"):
        planted_spec().copy(controller=ControllerSpec(k=99)).validate(tiny_synthetic.schema)


# ------------------------------------------------------------------ black-box space
def test_field_space_suggests_and_applies(tiny_synthetic: Dataset,
                                          fast_config: TrainConfig) -> None:
    space = FieldSelectionSpace(["r0", "r1", "n0"])
    ctx = ctx_for(tiny_synthetic, fast_config)
    trial = optuna.trial.FixedTrial({"keep:r0": "keep", "keep:r1": "drop", "keep:n0": "keep"})
    decision = space.suggest(trial, ctx)
    assert decision == {"keep": ["r0", "n0"]}
    assert space.apply(ctx.spec, decision).fields == ["r0", "n0"]
    assert space.grid(ctx) == {f"keep:{f}": ["keep", "drop"] for f in ["r0", "r1", "n0"]}
    with pytest.raises(SearchError, match="drops every field"):
        space.suggest(optuna.trial.FixedTrial(
            {"keep:r0": "drop", "keep:r1": "drop", "keep:n0": "drop"}), ctx)
    with pytest.raises(SearchError, match="outside"):
        space.apply(ctx.spec, {"keep": ["zzz"]})


def test_marlfs_keeps_the_best_trials_subset(tiny_synthetic: Dataset,
                                             fast_config: TrainConfig) -> None:
    ctx = ctx_for(tiny_synthetic, fast_config, fast=True)
    ctx.trials = 6
    result = get_method("marlfs").search(ctx)
    assert result.strategy == "rl" and len(result.trials) == 6
    best = max((t for t in result.trials if t["state"] == "COMPLETE"),
               key=lambda t: (t["values"][0], -t["number"]))
    kept = [f for f in best["decision"]["keep"] if f != "r0_copy"]
    assert set(result.spec.fields) == set(kept)
    assert set(result.ranking) == set(tiny_synthetic.schema.field_names)
    assert set(result.extra["policy"]) <= set(tiny_synthetic.schema.field_names)


# ------------------------------------------------------------------ errors
def test_bad_selection_options_are_named(tiny_synthetic: Dataset,
                                         fast_config: TrainConfig) -> None:
    with pytest.raises(SearchError, match="k=99"):
        get_method("lasso").search(ctx_for(tiny_synthetic, fast_config, k=99))
    with pytest.raises(SearchError, match="tolerance"):
        get_method("lasso").search(ctx_for(tiny_synthetic, fast_config, tolerance=-1))
    with pytest.raises(SearchError, match="two or more"):
        get_method("gbdt").search(ctx_for(tiny_synthetic, fast_config,
                                          spec=planted_spec().copy(fields=["r0"])))


# ------------------------------------------------------------------ movielens
def test_movielens_subset_keeps_auc_with_fewer_fields(movielens: Dataset) -> None:
    config = TrainConfig(epochs=2, batch_size=1024, patience=1, progress=False, threads=1,
                         seed=0)
    spec = backbone_spec("deepfm", 8)
    result = get_method("gbdt").search(SearchContext(
        movielens, spec, config, seed=0, options={"k_grid": [2, 4, 10],
                                                  "gbdt_rows": 20_000}))
    erase = result.extra["erase"]
    chosen = erase["chosen_k"]
    all_fields = erase["test_auc"][erase["k"].index(10)]
    assert chosen < 10 and len(result.spec.fields) == chosen
    # the chosen subset's point of the curve is its retrained model's test AUC
    assert erase["test_auc"][erase["k"].index(chosen)] >= all_fields - 0.002


def test_dropping_a_field_drops_its_pruning_masks(tiny_synthetic: Dataset) -> None:
    from autodrs.methods.selection.subset import with_fields
    from autodrs.nn.pruned import encode_mask

    schema = tiny_synthetic.schema
    spec = backbone_spec("deepfm", 4)
    masks = {f: encode_mask(torch.ones(schema.field(f).vocab_size, 4, dtype=torch.bool))
             for f in ("r0", "n0")}
    columns = {f: encode_mask(torch.ones(schema.field(f).vocab_size, 1, dtype=torch.bool))
               for f in ("r0", "n0")}
    spec = spec.copy(pruning=masks, linear_pruning=columns).validate(schema)
    kept = [f for f in schema.field_names if f != "n0"]
    out = with_fields(spec, kept).validate(schema)  # a kept mask of n0 would not validate
    assert set(out.pruning) == set(out.linear_pruning) == {"r0"}
    with pytest.raises(SpecError, match="linear_pruning names 'n0'"):
        spec.copy(fields=kept, pruning={"r0": masks["r0"]}).validate(schema)
