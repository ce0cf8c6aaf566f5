"""AutoCTR's final choice under ``final_rule=paired``: an evolved DAG is returned only when
its validation lead over the best seed shape is beyond noise (issue 22)."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

import autodrs.methods.blocks.autoctr as autoctr
from autodrs.data.dataset import Dataset
from autodrs.methods.blocks.autoctr import Candidate, FullFits, delong_lead
from autodrs.search.base import SearchContext, SearchError
from autodrs.spec import ArchSpec
from autodrs.train.metrics import auc
from autodrs.train.trainer import TrainConfig


def planted(rows: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Labels drawn from a latent score, and that score."""
    rng = np.random.default_rng(seed)
    latent = rng.normal(size=rows)
    labels = rng.random(rows) < 1.0 / (1.0 + np.exp(-2.0 * latent))
    return labels, latent


def test_delong_lead_is_the_auc_difference_with_a_bootstrap_sized_error() -> None:
    labels, latent = planted(3000)
    rng = np.random.default_rng(1)
    a = latent + rng.normal(scale=0.6, size=len(labels))
    b = latent + rng.normal(scale=0.8, size=len(labels))
    lead, se = delong_lead(labels, a, b)
    assert lead == pytest.approx(auc(labels, a) - auc(labels, b), abs=1e-12)
    # the paired bootstrap over rows estimates the same spread
    boot = []
    for _ in range(300):
        rows = rng.integers(0, len(labels), len(labels))
        boot.append(auc(labels[rows], a[rows]) - auc(labels[rows], b[rows]))
    assert se == pytest.approx(float(np.std(boot)), rel=0.25)
    # the same scores: no lead and no error
    assert delong_lead(labels, a, a) == (0.0, 0.0)
    with pytest.raises(SearchError, match="two rows of each class"):
        delong_lead(np.array([True, False, False]), a[:3], b[:3])


def paired_fits(noise: dict[int, list[float]], rows: int = 4000) -> FullFits:
    """Full fits of seed #0 and evolved #1 and #2, two rounds each, with predictions that
    are the planted score plus noise of the given sizes (one per round)."""
    labels, latent = planted(rows)
    fits = FullFits(lambda n: n == 0, "paired", keep_top=3)
    fits.labels = labels
    rng = np.random.default_rng(7)
    for number, scales in noise.items():
        for scale in scales:
            p = (latent + rng.normal(scale=scale, size=rows)).astype(np.float32)
            fits.preds.setdefault(number, []).append(p)
            fits.aucs.setdefault(number, []).append(auc(labels, p))
    return fits


def test_an_evolved_lead_within_noise_returns_the_seed_shape() -> None:
    # #1 is as good as the seed: of two draws of the same noise, the one that validates
    # higher on the mean (by chance) is the evolved DAG's
    fits = paired_fits({0: [0.7, 0.7], 1: [0.7, 0.7]})
    mean = {c: float(np.mean(a)) for c, a in fits.aucs.items()}
    if mean[0] > mean[1]:
        fits.aucs[0], fits.aucs[1] = fits.aucs[1], fits.aucs[0]
        fits.preds[0], fits.preds[1] = fits.preds[1], fits.preds[0]
    assert np.mean(fits.aucs[1]) > np.mean(fits.aucs[0])  # the old rule's pick: #1
    chosen, results = fits.choose_among([0, 1], 2)
    assert chosen == 0
    d = fits.decision
    assert d["rule"] == "paired" and d["leader"] == 1 and d["reference"] == 0
    assert d["returned"] == 0 and d["lower_bound"] <= 0 < d["lead"]
    assert d["comparisons"] == 1 and d["rounds"] == 2 and "within noise" in d["why"]
    assert [r["number"] for r in results] == [0, 1]
    # the old rule returns the leader
    fits.rule = "mean"
    assert fits.choose_among([0, 1], 2)[0] == 1


def test_a_clear_evolved_lead_returns_the_evolved_dag() -> None:
    fits = paired_fits({0: [1.2, 1.2], 1: [0.5, 0.5], 2: [1.0, 1.0]})
    chosen, _ = fits.choose_among([0, 1, 2], 2)
    d = fits.decision
    assert chosen == 1 and d["returned"] == 1 and d["lower_bound"] > 0
    # Bonferroni over the two evolved DAGs fitted in full
    assert d["comparisons"] == 2 and d["z"] == pytest.approx(1.96, abs=0.01)
    # a seed leader needs no test
    fits = paired_fits({0: [0.5, 0.5], 1: [1.0, 1.0]})
    assert fits.choose_among([0, 1], 2)[0] == 0
    assert fits.decision["why"] == "the leader is a seed shape"


def test_the_reference_outside_the_finalists_and_the_rounds_both_have() -> None:
    # seed #0 has one round and is not a finalist; #1 leads clearly, #2 within noise of it
    fits = paired_fits({0: [1.5], 1: [0.4, 0.4], 2: [0.45, 0.45]})
    chosen, _ = fits.choose_among([1, 2], 2)
    d = fits.decision
    assert chosen == 1 and d["reference"] == 0 and d["rounds"] == 1
    # no seed fitted in full: nothing to test against, the leader
    fits = FullFits(lambda n: False, "paired")
    fits.aucs = {3: [0.7], 4: [0.71]}
    assert fits.choose_among([3, 4], 1)[0] == 4
    assert "no seed shape" in fits.decision["why"]
    with pytest.raises(SearchError, match="unknown autoctr final_rule"):
        FullFits(rule="best")


def test_the_final_fit_keeps_predictions_and_the_stage_records_the_rule(
        tiny_synthetic: Dataset, fast_config: TrainConfig,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Through ``final_fit`` (the search's path): each full fit's validation predictions are
    kept for the seeds and the best ``keep_top`` only; an evolved finalist that validates
    higher than the seed on the mean by a hair is not returned."""
    labels = tiny_synthetic.valid.label.numpy().astype(bool)
    latent = np.where(labels, 1.0, -1.0)
    rng = np.random.default_rng(3)
    base = latent + rng.normal(scale=3.0, size=len(labels))
    auc_of = {0: 0.780, 1: 0.781, 2: 0.700, 3: 0.690}

    def fake_fit(ds, spec, config, hooks=None):
        number = spec.provenance[-1]["number"]
        return SimpleNamespace(metrics={"valid": {"auc": auc_of[number]}}, model=number)

    class FakeTrainer:
        def __init__(self, config: TrainConfig) -> None:
            self.seed = config.seed

        def predict(self, model: int, data: object) -> np.ndarray:
            # the seed #0 and its near-twin #1 (a hair apart), and two clearly worse
            tilt = {0: 0.0, 1: 0.001, 2: -0.5, 3: -0.6}[model]
            return 1.0 / (1.0 + np.exp(-(base + tilt * latent + 0.01 * self.seed)))

    monkeypatch.setattr(autoctr, "fit_spec", fake_fit)
    monkeypatch.setattr(autoctr, "Trainer", FakeTrainer)
    ctx = SearchContext(tiny_synthetic, ArchSpec(), fast_config, seed=0)
    cands = [Candidate(k, [], ArchSpec(provenance=[{"number": k}]), 0.5, 0.6, 1, 1.0)
             for k in range(4)]
    fits = FullFits(lambda n: n == 0, "paired", keep_top=2)
    for c in cands[2:]:
        assert fits.fit(ctx, c, 0, 0.0)
    chosen, results, _ = autoctr.AutoCTR.final_fit(ctx, cands[:2], cands[1], 2, fits)
    assert set(fits.preds) == {0, 1}  # #2 and #3 fell out of the top two
    assert [len(fits.preds[c]) for c in (0, 1)] == [2, 2]
    assert fits.preds[0][0].dtype == np.float32
    assert chosen.number == 0 and fits.decision["leader"] == 1
    assert fits.decision["comparisons"] == 3  # #1, #2 and #3 were fitted in full


def test_the_search_records_the_rule_in_its_stage_info(
        tiny_synthetic: Dataset, fast_config: TrainConfig) -> None:
    from autodrs.models.backbones import backbone_spec
    from autodrs.search.base import get_method

    ctx = SearchContext(tiny_synthetic, backbone_spec("deepfm", 8), fast_config, seed=2,
                        trials=3, options={"fast": True, "population": 2, "blocks": 2,
                                           "seed_backbones": "fm", "final_candidates": 2,
                                           "final_seeds": 2})
    found = get_method("autoctr").search(ctx)
    rule = found.extra["final_rule"]
    assert rule["rule"] == "paired" and found.extra["best_number"] == rule["returned"]
    assert rule["leader"] == max(found.extra["final_fit"], key=lambda f: f["valid_auc"])[
        "number"]
    if rule["leader"] != rule["returned"]:
        assert rule["returned"] in found.extra["seed_numbers"] and rule["lower_bound"] <= 0


def test_an_autoctr_search_keeps_no_time_for_a_retrain_it_reuses(
        tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    """AutoCTR alone on every row: its choice is one of its own full fits at ``--seed``,
    so the command keeps no retrain reserve from its budget and the retrain is that fit."""
    import autodrs.experiment as experiment
    import autodrs.search.stages as stages
    from autodrs.api import reuses_stage_fit, run_search
    from autodrs.config import SearchSettings

    reserves: list[float] = []
    real_stages = stages.run_stages

    def spy_stages(ctx, names, **kw):
        reserves.append(kw["reserve"])
        return real_stages(ctx, names, **kw)

    reused: list[bool] = []
    real_fit = experiment.fit_spec

    def spy_fit(ds, spec, config, hooks=None):
        reused.append(experiment.cached_fit(ds, spec, config) is not None)
        return real_fit(ds, spec, config, hooks)

    monkeypatch.setattr(stages, "run_stages", spy_stages)
    monkeypatch.setattr(experiment, "fit_spec", spy_fit)
    settings = SearchSettings(data="synthetic?rows=4000&seed=1", methods=["autoctr"],
                              budget="10m", trials=2, fast=True, epochs=2, seed=0,
                              baselines=["deepfm"], out=str(tmp_path / "run"), threads=1,
                              progress=False)
    run_search(settings, report=False)
    assert reserves == [0.0] and reused[-1]  # the last fit_spec call is the retrain
    done = SimpleNamespace(fit=SimpleNamespace(stopped_by_hook=False))
    assert reuses_stage_fit(["autoctr"], True, False, False, done)
    # a sample, a second stage, a guard, a resumed stage, no start fit: time is kept
    assert not reuses_stage_fit(["autoctr"], False, False, False, done)
    assert not reuses_stage_fit(["autoctr", "autoctr"], True, False, False, done)
    assert not reuses_stage_fit(["autoctr"], True, True, False, done)
    assert not reuses_stage_fit(["autoctr"], True, False, True, done)
    assert not reuses_stage_fit(["autoctr"], True, False, False, None)
    assert not reuses_stage_fit(["sif"], True, False, False, done)
