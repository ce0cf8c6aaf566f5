"""Frequency pruning: vocabulary limits in the spec (rare values share the OOV row, tables
hold the kept rows only) and the ``frequency`` method that picks the threshold."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from autodrs.data.dataset import Dataset
from autodrs.data.schema import FIRST_ID, OOV
from autodrs.experiment import fit_spec
from autodrs.methods.embedding.frequency import limits_at, parse_thresholds, value_counts
from autodrs.models.backbones import backbone_spec
from autodrs.models.builder import build_model, count_parameters
from autodrs.runfolder import load_model, save_model
from autodrs.search.base import SearchContext, SearchError, get_method
from autodrs.spec import ArchSpec, SpecError
from autodrs.train.trainer import TrainConfig, Trainer


def _big_field(ds: Dataset) -> str:
    """The categorical field with the longest vocabulary."""
    return max((f for f in ds.schema.fields if f.kind == "categorical" and f.vocab),
               key=lambda f: len(f.vocab)).name


def test_a_vocab_limit_stores_only_the_kept_rows_and_reads_rare_ids_as_oov(
        tiny_synthetic: Dataset) -> None:
    name = _big_field(tiny_synthetic)
    f = tiny_synthetic.schema.field(name)
    keep = len(f.vocab) // 3
    base = backbone_spec("deepfm", 8)
    limited = base.copy(vocab_limits={name: keep})
    full = count_parameters(build_model(tiny_synthetic.schema, base))["embedding"]
    small = count_parameters(build_model(tiny_synthetic.schema, limited))["embedding"]
    # 8-dim table plus the first-order weight: 9 parameters per dropped row
    assert full - small == (len(f.vocab) - keep) * 9
    torch.manual_seed(0)
    model = build_model(tiny_synthetic.schema, limited).eval()
    col = tiny_synthetic.schema.categorical.index(name)
    batch = tiny_synthetic.test.batch(torch.arange(64))
    rare, oov, kept = batch.cat.clone(), batch.cat.clone(), batch.cat.clone()
    rare[:, col] = FIRST_ID + keep + 1  # a value past the limit
    oov[:, col] = OOV
    kept[:, col] = FIRST_ID  # the most frequent value keeps its row
    with torch.no_grad():
        p_rare = model(type(batch)(rare, batch.num, batch.seq))
        p_oov = model(type(batch)(oov, batch.num, batch.seq))
        p_kept = model(type(batch)(kept, batch.num, batch.seq))
    assert torch.equal(p_rare, p_oov)
    assert not torch.equal(p_kept, p_oov)


def test_bad_vocab_limits_are_clear_spec_errors(tiny_synthetic: Dataset) -> None:
    schema = tiny_synthetic.schema
    name = _big_field(tiny_synthetic)
    spec = backbone_spec("fm", 4)
    with pytest.raises(SpecError, match="not a categorical field"):
        spec.copy(vocab_limits={"no_such_field": 3}).validate(schema)
    with pytest.raises(SpecError, match="not a categorical field"):
        spec.copy(vocab_limits={"num0": 3}).validate(schema)
    with pytest.raises(SpecError, match="must be in 0.."):
        spec.copy(vocab_limits={name: 10**6}).validate(schema)
    # the limit survives the JSON round trip
    again = ArchSpec.from_json(spec.copy(vocab_limits={name: 2}).to_json())
    assert again.vocab_limits == {name: 2}


def test_limits_follow_the_train_counts(tiny_synthetic: Dataset,
                                        fast_config: TrainConfig) -> None:
    ctx = SearchContext(tiny_synthetic, backbone_spec("deepfm", 4), fast_config)
    counts = value_counts(ctx)
    name = _big_field(tiny_synthetic)
    col = tiny_synthetic.schema.categorical.index(name)
    ids = tiny_synthetic.train.cat[:, col].numpy()
    c = counts[name]
    assert c.sum() == (ids >= FIRST_ID).sum()
    # the vocabulary is ordered by train count: values seen >= t times are a prefix of it
    assert np.all(np.diff(c) <= 0)
    for t in (2, 5):
        limits = limits_at(counts, t)
        assert limits[name] == int((c >= t).sum())
        assert all(counts[n][k:].max(initial=0) < t for n, k in limits.items())
    assert limits_at(counts, 1) == {}
    assert parse_thresholds("5,1,5") == [1, 5]
    with pytest.raises(SearchError, match="thresholds"):
        parse_thresholds([0, 2])


def test_frequency_search_keeps_the_best_validated_threshold_and_exports(
        tiny_synthetic: Dataset, fast_config: TrainConfig, tmp_path) -> None:
    ctx = SearchContext(tiny_synthetic, backbone_spec("deepfm", 4), fast_config, seed=0,
                        options={"thresholds": [1, 3, 8]})
    result = get_method("frequency").search(ctx)
    curve = result.extra["threshold_curve"]
    assert [p["threshold"] for p in curve] == [1, 3, 8]
    params = [p["embedding_params"] for p in curve]
    assert params[0] > params[1] > params[2]  # a higher threshold keeps fewer rows
    best = max(p["valid_auc"] for p in curve)
    chosen = next(p for p in curve if p["threshold"] == result.extra["threshold"])
    assert chosen["valid_auc"] == best
    assert result.spec.vocab_limits == result.extra["vocab_limits"]
    # the point is a plain retrain of the refined spec: the same fit again
    again = fit_spec(tiny_synthetic, result.spec, fast_config)
    assert again.metrics["valid"]["auc"] == pytest.approx(chosen["valid_auc"], abs=1e-6)
    assert again.params["embedding"] == chosen["embedding_params"]
    # a tolerance prefers the most compact threshold within it
    loose = get_method("frequency").search(
        SearchContext(tiny_synthetic, backbone_spec("deepfm", 4), fast_config, seed=0,
                      options={"thresholds": [1, 3, 8], "tolerance": 1.0}))
    assert loose.extra["threshold"] == 8
    # ... and a logloss tolerance also needs the logloss alike: with none allowed, only a
    # threshold whose validation logloss is at most the best-AUC point's can be kept
    strict = get_method("frequency").search(
        SearchContext(tiny_synthetic, backbone_spec("deepfm", 4), fast_config, seed=0,
                      options={"thresholds": [1, 3, 8], "tolerance": 1.0,
                               "logloss_tolerance": 0.0}))
    points = strict.extra["threshold_curve"]
    top = max(points, key=lambda p: p["valid_auc"])
    kept = next(p for p in points if p["threshold"] == strict.extra["threshold"])
    assert kept["valid_logloss"] <= top["valid_logloss"]
    assert kept["threshold"] == max(p["threshold"] for p in points
                                    if p["valid_logloss"] <= top["valid_logloss"])
    # exported and reloaded, the limited model predicts the same
    save_model(tmp_path, loose_model := fit_spec(tiny_synthetic, loose.spec,
                                                 fast_config).model, tiny_synthetic.schema)
    loaded, _ = load_model(tmp_path)
    trainer = Trainer(fast_config)
    assert np.allclose(trainer.predict(loose_model, tiny_synthetic.test),
                       trainer.predict(loaded, tiny_synthetic.test))


def test_frequency_search_under_a_spent_budget_keeps_the_spec(
        tiny_synthetic: Dataset, fast_config: TrainConfig) -> None:
    ctx = SearchContext(tiny_synthetic, backbone_spec("deepfm", 4), fast_config,
                        budget_seconds=0.0)
    result = get_method("frequency").search(ctx)
    assert result.spec.vocab_limits == {} and "stopped" in result.extra
