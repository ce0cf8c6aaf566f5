"""Embedding search methods: what each finds is stored at its size, a memory budget is never
exceeded, and a searched, pruned model is exported and reloaded unchanged."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import torch

from autodrs.data.dataset import Dataset
from autodrs.experiment import fit_spec
from autodrs.methods.embedding.autoemb import frequency_features
from autodrs.methods.embedding.common import file_bytes, measure, parse_bytes
from autodrs.methods.embedding.dnis import RowNormalisedSGD, frequency_groups, prune
from autodrs.models.backbones import backbone_spec
from autodrs.models.builder import LINEAR_TAG, build_model
from autodrs.nn.mixed import SharedCandidateTables
from autodrs.nn.pruned import PrunedColumn, decode_mask, initial_values
from autodrs.runfolder import load_model, save_model
from autodrs.search.base import SearchContext, SearchError, StageResult, get_method
from autodrs.spec import ArchSpec
from autodrs.train.trainer import TrainConfig, Trainer


def run(name: str, ds: Dataset, config: TrainConfig, spec: ArchSpec | None = None,
        **kw: Any) -> StageResult:
    options = kw.pop("options", {})
    ctx = SearchContext(ds, spec or backbone_spec("deepfm", 8), config, seed=3,
                        options=options, **kw)
    result = get_method(name).search(ctx)
    result.spec.validate(ds.schema)
    return result


def masks_of(ds: Dataset, spec: ArchSpec) -> dict[str, torch.Tensor]:
    return {f: decode_mask(t, ds.schema.field(f).vocab_size, spec.dim_of(f), f)
            for f, t in spec.pruning.items()}


def test_parse_bytes_reads_sizes_and_rejects_nonsense() -> None:
    assert parse_bytes("2MB") == 2_000_000
    assert parse_bytes("1 MiB") == 2**20
    assert parse_bytes("500kb") == 500_000
    assert parse_bytes(1234) == 1234
    for bad in ("two MB", "5 parsecs", "0", -3, True):
        with pytest.raises(SearchError, match="budget"):
            parse_bytes(bad)


def test_frequency_groups_put_frequent_values_first() -> None:
    counts = torch.tensor([0.0, 0.0, 0.0, 50.0, 30.0, 10.0, 5.0, 3.0, 2.0, 0.0])
    groups = frequency_groups(counts, 4)
    assert groups[3] == 0 and groups[4] == 2  # 50 of 100 occurrences come before it
    assert groups[9] == 3 and groups[0] == 3  # unseen and reserved ids: the rarest group
    assert (torch.diff(groups[3:9]) >= 0).all()


def test_pep_prunes_to_its_target_and_retrains_from_the_step_zero_weights(
        tiny_synthetic: Dataset, fast_config: TrainConfig, tmp_path: Path) -> None:
    options = {"sparsity": 0.8, "levels": "0.5,0.8", "threshold_init": -6,
               "threshold_scale": 30, "search_epochs": 40}
    fm = backbone_spec("fm", 16)  # PEP's backbone: the tables are most of the model
    found = run("pep", tiny_synthetic, fast_config, spec=fm, options=options)
    assert found.extra["reached_target"] and found.extra["sparsity"] >= 0.8
    assert found.extra["first_order"]  # FM has a first-order term: its weights are pruned too
    masks = masks_of(tiny_synthetic, found.spec)
    first = {f: decode_mask(t, tiny_synthetic.schema.field(f).vocab_size, 1, f)
             for f, t in found.spec.linear_pruning.items()}
    assert set(masks) == set(first) == set(tiny_synthetic.schema.categorical)
    both = [*masks.values(), *first.values()]
    kept = sum(int(m.sum()) for m in both)
    assert kept <= 0.2 * sum(m.numel() for m in both)  # the level counts every pruned table
    assert 0 < sum(int(m.sum()) for m in first.values()) < 0.5 * sum(m.numel()
                                                                      for m in first.values())
    assert all(0.0 <= found.dims[f] <= 1.0 for f in masks)
    base = measure(tiny_synthetic.schema, fm)
    assert base["params"] - found.extra["embedding_params"] == \
        sum(m.numel() for m in both) - kept
    assert found.bytes < 0.5 * base["bytes"]

    # built under the search's training seed, the pruned tables start from the step-0
    # weights of the search times the mask (lottery ticket), first-order ones included
    torch.manual_seed(fast_config.seed)
    model = build_model(tiny_synthetic.schema, found.spec)
    for f, m in masks.items():
        assert torch.equal(model.embedding.pruned[f].values.detach(),
                           initial_values(fast_config.seed, f, m))
    for f, m in first.items():
        column = model.linear.weights.pruned[f]
        assert isinstance(column, PrunedColumn) and column.nnz == int(m.sum())
        assert torch.equal(column.values.detach(),
                           initial_values(fast_config.seed, f + LINEAR_TAG, m))

    # exported and reloaded: identical predictions, a file smaller by the reported factor
    retrained = fit_spec(tiny_synthetic, found.spec, fast_config)
    baseline = fit_spec(tiny_synthetic, fm, fast_config)
    save_model(tmp_path / "pep", retrained.model, tiny_synthetic.schema)
    save_model(tmp_path / "base", baseline.model, tiny_synthetic.schema)
    loaded, _ = load_model(tmp_path / "pep")
    trainer = Trainer(fast_config)
    assert (trainer.predict(loaded, tiny_synthetic.test)
            == trainer.predict(retrained.model, tiny_synthetic.test)).all()
    on_disk = (tmp_path / "base" / "model.pt").stat().st_size / \
        (tmp_path / "pep" / "model.pt").stat().st_size
    assert found.extra["file_compression"] > 2
    assert on_disk == pytest.approx(found.extra["file_compression"], rel=0.01)
    assert file_bytes(loaded) == pytest.approx(found.extra["file_bytes"], rel=0.01)


def test_pep_threshold_granularities_and_bad_options(tiny_synthetic: Dataset,
                                                     fast_config: TrainConfig) -> None:
    for granularity in ("feature", "field_dim", "global"):
        found = run("pep", tiny_synthetic, fast_config,
                    options={"threshold": granularity, "threshold_init": -4, "search_epochs": 2})
        assert found.extra["threshold"] == granularity
        assert set(found.spec.pruning) == set(tiny_synthetic.schema.categorical)
    # without a first-order term (or asked not to) only the latent tables are pruned
    found = run("pep", tiny_synthetic, fast_config, spec=backbone_spec("dnn", 8),
                options={"threshold_init": -4, "search_epochs": 1})
    assert not found.extra["first_order"] and not found.spec.linear_pruning
    found = run("pep", tiny_synthetic, fast_config,
                options={"threshold_init": -4, "search_epochs": 1, "first_order": "false"})
    assert not found.extra["first_order"] and not found.spec.linear_pruning
    with pytest.raises(SearchError, match="first-order term"):
        run("pep", tiny_synthetic, fast_config, spec=backbone_spec("dnn", 8),
            options={"first_order": True})
    with pytest.raises(SearchError, match="true or false"):
        run("pep", tiny_synthetic, fast_config, options={"first_order": "maybe"})
    with pytest.raises(SearchError, match="granularity"):
        run("pep", tiny_synthetic, fast_config, options={"threshold": "per_planet"})
    with pytest.raises(SearchError, match="sparsity"):
        run("pep", tiny_synthetic, fast_config, options={"sparsity": 1.5})


@pytest.mark.parametrize(("share", "estimation"), [(0.35, "train"), (0.6, "weight_sharing")])
def test_rule_never_returns_a_spec_over_the_memory_budget(
        share: float, estimation: str, tiny_synthetic: Dataset,
        fast_config: TrainConfig) -> None:
    base = measure(tiny_synthetic.schema, backbone_spec("deepfm", 16))["bytes"]
    budget = int(share * base)
    found = run("rule", tiny_synthetic, fast_config, spec=backbone_spec("deepfm", 16),
                trials=5, options={"memory_budget": budget, "fast": True,
                                   "estimation": estimation})
    assert found.bytes <= budget
    assert measure(tiny_synthetic.schema, found.spec)["bytes"] <= budget
    assert found.pareto and all(p["bytes"] <= budget for p in found.pareto)
    points = sorted(found.pareto, key=lambda p: p["bytes"])
    assert all(a["auc"] < b["auc"] for a, b in zip(points, points[1:], strict=False))
    assert found.spec.field_dims  # the dims it chose are written into the spec


def test_rule_rejects_a_budget_no_spec_can_meet(tiny_synthetic: Dataset,
                                                fast_config: TrainConfig) -> None:
    with pytest.raises(SearchError, match="below the smallest spec"):
        run("rule", tiny_synthetic, fast_config, trials=2, options={"memory_budget": "1KB"})
    with pytest.raises(SearchError, match="not a size"):
        run("rule", tiny_synthetic, fast_config, trials=2, options={"memory_budget": "lots"})


@pytest.mark.parametrize(("name", "options", "over"), [
    ("nis", {}, False), ("rule", {}, False), ("rule", {"memory_budget": 0.5}, True)])
def test_nis_and_rule_with_no_finished_trial_found_nothing(
        name: str, options: dict[str, Any], over: bool, tiny_synthetic: Dataset,
        fast_config: TrainConfig) -> None:
    # no trial measured any dims: the input goes on unchanged, marked, never a spec of dims
    # (or a repair of the input into the budget) presented as found
    spec = backbone_spec("deepfm", 16)
    if "memory_budget" in options:
        options = {"memory_budget": int(options["memory_budget"]
                                        * measure(tiny_synthetic.schema, spec)["bytes"])}
    result = run(name, tiny_synthetic, fast_config, spec=spec, budget_seconds=0.0, trials=4,
                 options={"fast": True, **options})
    assert result.no_result is not None
    assert result.no_result.startswith(f"{name} found no embedding dims: no trial"), (
        result.no_result)
    assert ("over the memory budget" in result.no_result) == over, result.no_result
    assert result.spec.to_dict() == spec.to_dict()
    assert result.ranking == [] and result.dims is None


def test_nis_reward_trades_auc_for_memory(tiny_synthetic: Dataset,
                                          fast_config: TrainConfig) -> None:
    # with a memory penalty far above any AUC difference the reward is ordered by bytes
    found = run("nis", tiny_synthetic, fast_config, strategy="random", trials=4,
                options={"memory_penalty": 100.0, "fast": True})
    sizes = [p["bytes"] for p in found.pareto]
    assert found.bytes == min(sizes)
    assert all(d in found.extra["candidates"] for d in found.dims.values())


def test_dnis_writes_field_dims_or_group_masks(tiny_synthetic: Dataset,
                                               fast_config: TrainConfig) -> None:
    fields = tiny_synthetic.schema.categorical
    by_field = run("dnis", tiny_synthetic, fast_config, options={"search_epochs": 1, "keep": 0.4})
    assert set(by_field.dims) == set(fields)
    assert all(d % 2 == 0 and 2 <= d <= 8 for d in by_field.dims.values())
    assert all(by_field.spec.dim_of(f) == by_field.dims[f] for f in fields)

    by_group = run("dnis", tiny_synthetic, fast_config,
                   options={"search_epochs": 1, "keep": 0.4, "granularity": "group"})
    masks = masks_of(tiny_synthetic, by_group.spec)
    assert set(masks) == set(fields)
    kept = sum(int(m.sum()) for m in masks.values())
    total = sum(m.numel() for m in masks.values())
    assert kept <= 0.45 * total
    # one structure per frequency group: values of a group keep the same columns
    r0 = masks["r0"]
    assert len({tuple(row.tolist()) for row in r0}) <= 4


def test_dnis_l1_term_zeroes_rows_the_validation_loss_does_not_need() -> None:
    alpha = torch.nn.Parameter(torch.ones(3, 4))
    sgd = RowNormalisedSGD([alpha], lr=0.1, l1=0.1)
    for _ in range(20):
        # row 0 wants to grow (clamped at 1), row 1 to shrink, row 2 hardly matters
        alpha.grad = torch.tensor([[-1.0] * 4, [1.0] * 4, [1e-4, -1e-4, 1e-4, -1e-4]])
        sgd.step()
    assert torch.all(alpha[0] == 1.0) and torch.all(alpha[1] == 0.0)
    assert torch.all(alpha[2] == 0.0)  # the L1 term drove the idle row to the clamp
    plain = torch.nn.Parameter(torch.ones(1, 4))
    sgd = RowNormalisedSGD([plain], lr=0.1)
    for k in range(20):
        plain.grad = torch.tensor([[1e-4, -1e-4, 1e-4, -1e-4]]) * (-1) ** k
        sgd.step()
    assert plain.min() > 0.8  # without it the idle row random-walks near 1


def test_dnis_prune_never_keeps_a_block_the_search_zeroed() -> None:
    alpha = torch.tensor([[[0.9, 0.0], [0.5, 0.0]], [[0.0, 0.0], [0.0, 0.0]]])
    rows = torch.tensor([[1.0, 10.0], [1.0, 10.0]])
    kept = prune(alpha, rows, keep=1.0)  # a budget for everything
    assert kept[0].tolist() == [[True, False], [True, False]]
    # a field the search zeroed keeps one block of its most frequent group
    assert kept[1].tolist() == [[True, False], [False, False]]


def test_autoemb_controller_sees_each_values_popularity() -> None:
    features = frequency_features(torch.tensor([0.0, 0.0, 0.0, 90.0, 9.0, 1.0, 0.0]))
    log, rank = features[:, 0], features[:, 1]
    assert log[3] == 1.0 and log[0] == 0.0 and log[3] > log[4] > log[5]
    assert rank[3] == 0.0 and rank[3] < rank[4] < rank[5] < rank[6]


def test_autoemb_gives_each_value_a_candidate_dim(tiny_synthetic: Dataset,
                                                  fast_config: TrainConfig) -> None:
    found = run("autoemb", tiny_synthetic, fast_config, options={"search_epochs": 1})
    for mask in masks_of(tiny_synthetic, found.spec).values():
        dims = mask.sum(1)
        assert set(dims.tolist()) <= {2, 8, 16}
        # kept entries are each value's leading coordinates of the largest candidate
        assert torch.equal(mask, torch.arange(16).unsqueeze(0) < dims.unsqueeze(1))
    per_field = run("autoemb", tiny_synthetic, fast_config,
                    options={"search_epochs": 1, "granularity": "field", "candidates": "2,4,8"})
    assert set(per_field.dims.values()) <= {2, 4, 8} and not per_field.spec.pruning


def test_autodim_picks_a_candidate_per_field(tiny_synthetic: Dataset,
                                             fast_config: TrainConfig) -> None:
    found = run("autodim", tiny_synthetic, fast_config,
                options={"search_epochs": 1, "candidates": "2,4,8"})
    assert set(found.dims) == set(tiny_synthetic.schema.categorical)
    for f, p in found.extra["probabilities"].items():
        assert sum(p) == pytest.approx(1.0, abs=1e-3)
        assert found.dims[f] == [2, 4, 8][max(range(3), key=lambda k: p[k])]
    with pytest.raises(SearchError, match="candidate"):
        run("autodim", tiny_synthetic, fast_config, options={"candidates": "0,4"})
    assert found.extra["storage"] == "shared"
    tables = run("autodim", tiny_synthetic, fast_config,
                 options={"search_epochs": 1, "candidates": "2,4,8", "storage": "tables"})
    assert tables.extra["storage"] == "tables" and set(tables.dims.values()) <= {2, 4, 8}
    with pytest.raises(SearchError, match="storage"):
        run("autodim", tiny_synthetic, fast_config, options={"storage": "separate"})


def test_autodim_shared_candidates_read_only_their_leading_coordinates() -> None:
    torch.manual_seed(0)
    tables = SharedCandidateTables(vocab=10, candidates=[2, 4, 8])
    ids = torch.arange(10)
    out = tables(ids)
    assert out.shape == (10, 3, 8)
    # one table and one projection of the largest dim, whatever the number of candidates
    assert tables.table.weight.shape == (10, 8) and tables.projection.weight.shape == (8, 8)
    for k, d in enumerate([2, 4, 8]):
        tables.zero_grad()
        out = tables(ids)
        out[:, k].pow(2).sum().backward()
        grad = tables.table.weight.grad
        assert grad is not None
        assert grad[:, :d].abs().sum() > 0
        assert torch.all(grad[:, d:] == 0)  # candidate d never reads coordinates past d


def test_autodis_keeps_the_encoder_with_the_best_validation_auc(
        tiny_synthetic: Dataset, fast_config: TrainConfig) -> None:
    found = run("autodis", tiny_synthetic, replace(fast_config, epochs=1))
    scores = found.extra["encoders"]
    assert set(scores) == {"autodis", "linear", "bucket"}
    best = max(scores, key=lambda e: scores[e]["valid_auc"])
    assert scores[found.extra["encoder"]]["valid_auc"] == scores[best]["valid_auc"]
    assert found.spec.numerical == dict.fromkeys(tiny_synthetic.schema.numerical,
                                                 found.extra["encoder"])
    with pytest.raises(SearchError, match="encoder"):
        run("autodis", tiny_synthetic, fast_config, options={"encoders": "spline"})
