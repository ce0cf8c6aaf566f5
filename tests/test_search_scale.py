"""A search at scale keeps its budget and its memory bounded: time limits pay for the
evaluation after the stop, every stage's fits end with its share, the retrain ends with the
budget, large tables are scored on a bounded sample, and finished fits free what they held.
No test reads the wall clock: limits are driven by fake clocks and past deadlines."""

from __future__ import annotations

import gc
import time
import weakref
from dataclasses import replace
from types import SimpleNamespace
from typing import Any, ClassVar

import pytest
import torch

from autodrs.data.dataset import Dataset, scored_on_sample
from autodrs.experiment import fit_spec
from autodrs.models.backbones import backbone_spec
from autodrs.models.builder import build_model, count_bytes, count_parameters
from autodrs.pipeline import fit_baselines, search_sample
from autodrs.search import stages as stages_module
from autodrs.search.base import Method, SearchContext, StageResult
from autodrs.search.stages import run_stages
from autodrs.train import trainer as trainer_module
from autodrs.train.trainer import (
    EVAL_PASSES,
    EVAL_SAFETY,
    TimeLimit,
    TrainConfig,
    Trainer,
    current_deadline,
    deadline,
    release_weights,
)

CONFIG = TrainConfig(epochs=3, batch_size=256, lr=1e-2, progress=False, threads=1, seed=0)


def steps_per_epoch(ds: Dataset) -> int:
    return -(-len(ds.train) // CONFIG.batch_size)


def test_time_limit_keeps_back_the_evaluation_it_times(tiny_synthetic, monkeypatch):
    # 10 ms a row over 2 passes of the ~400 validation rows, padded: more than the 5 s left,
    # so the fit stops after its first step; with nothing kept back it would run every epoch
    monkeypatch.setattr(trainer_module, "forward_seconds_per_row", lambda model, batch: 1e-2)
    model = build_model(tiny_synthetic.schema, backbone_spec("fm", 4))
    limit = TimeLimit(lambda: 5.0)
    trainer = Trainer(CONFIG, [limit])
    fit = trainer.fit(model, tiny_synthetic.train, tiny_synthetic.valid)
    assert fit.stopped_by_hook and trainer.step == 1
    assert limit.reserve(trainer) == pytest.approx(
        EVAL_SAFETY * 1e-2 * EVAL_PASSES * len(tiny_synthetic.valid))

    free = TimeLimit(lambda: 5.0, eval_passes=0)
    trainer = Trainer(CONFIG, [free])
    fit = trainer.fit(build_model(tiny_synthetic.schema, backbone_spec("fm", 4)),
                      tiny_synthetic.train, tiny_synthetic.valid)
    assert not fit.stopped_by_hook and free.row_seconds is None
    assert trainer.step == CONFIG.epochs * steps_per_epoch(tiny_synthetic)


def test_time_limit_starts_no_epoch_past_the_evaluation_point(tiny_synthetic, monkeypatch):
    # the clock: plenty left during the first epoch's steps, only the evaluation's reserve
    # left when it ends; the fit must end there, not start a second epoch
    monkeypatch.setattr(trainer_module, "forward_seconds_per_row", lambda model, batch: 1e-4)
    reserve = EVAL_SAFETY * 1e-4 * EVAL_PASSES * len(tiny_synthetic.valid)
    state = {"left": 1e6}

    class EndOfEpoch(TimeLimit):
        def on_epoch_end(self, trainer, model, epoch, metrics):
            state["left"] = reserve / 2
            super().on_epoch_end(trainer, model, epoch, metrics)

    trainer = Trainer(CONFIG, [EndOfEpoch(lambda: state["left"])])
    fit = trainer.fit(build_model(tiny_synthetic.schema, backbone_spec("fm", 4)),
                      tiny_synthetic.train, tiny_synthetic.valid)
    assert fit.stopped_by_hook and len(fit.history) == 1
    assert trainer.step == steps_per_epoch(tiny_synthetic)


def test_deadline_ends_every_fit_inside_it_and_nests_to_the_earliest(tiny_synthetic):
    assert current_deadline() is None
    with deadline(time.monotonic() - 1.0):  # already past
        past = current_deadline()
        with deadline(past + 1e6):  # a later one inside does not extend it
            assert current_deadline() == past
        with deadline(None):
            assert current_deadline() == past
        trainer = Trainer(CONFIG)  # no hook of its own
        fit = trainer.fit(build_model(tiny_synthetic.schema, backbone_spec("fm", 4)),
                          tiny_synthetic.train, tiny_synthetic.valid)
    assert current_deadline() is None
    assert fit.stopped_by_hook and trainer.step == 1 and len(fit.history) == 1


class _UnlimitedFit(Method):
    """A stage whose method trains without any time limit of its own."""

    name = "unlimited-fit"
    strategies: ClassVar[tuple[str, ...]] = ("grid",)
    steps: ClassVar[list[int]] = []

    def search(self, ctx: SearchContext) -> StageResult:
        trainer = Trainer(replace(ctx.train, epochs=3))
        trainer.fit(build_model(ctx.dataset.schema, ctx.spec), ctx.dataset.train,
                    ctx.dataset.valid)
        self.steps.append(trainer.step)
        return StageResult(self.name, "grid", ctx.spec.copy(), seconds=0.0)


def test_a_stage_s_fits_end_with_its_share(tiny_synthetic, monkeypatch):
    monkeypatch.setattr(stages_module, "get_method", lambda name: _UnlimitedFit())
    _UnlimitedFit.steps.clear()
    spec = backbone_spec("fm", 4)
    # the stage starts, by the stages' clock, long enough ago that its share has ended, so
    # its method's fit stops at its first step
    clock = SimpleNamespace(monotonic=lambda: time.monotonic() - 2e6,
                            perf_counter=time.perf_counter)
    monkeypatch.setattr(stages_module, "time", clock)
    ctx = SearchContext(dataset=tiny_synthetic, spec=spec, train=CONFIG, seed=0,
                        budget_seconds=1e6)
    run_stages(ctx, ["unlimited-fit"])
    # no budget: the stage's fit runs every epoch
    run_stages(replace(ctx, budget_seconds=None), ["unlimited-fit"])
    assert _UnlimitedFit.steps == [1, 3 * steps_per_epoch(tiny_synthetic)]


def test_a_finished_fit_keeps_no_optimizer_state_or_gradients(tiny_synthetic):
    model = build_model(tiny_synthetic.schema, backbone_spec("deepfm", 4))
    trainer = Trainer(replace(CONFIG, epochs=1))
    seen: list[Any] = []

    class Grab(TimeLimit):
        def on_step(self, trainer, model, step, batch, loss):
            if not seen:
                seen.append(weakref.ref(trainer.optimizer))

    trainer.hooks = [Grab(lambda: None)]
    trainer.fit(model, tiny_synthetic.train, tiny_synthetic.valid)
    gc.collect()
    assert trainer.optimizer is None and seen[0]() is None  # the Adam state is gone
    assert all(p.grad is None for p in model.parameters())


def test_cut_short_baselines_free_their_weights_and_keep_their_figures(tiny_synthetic):
    specs = {"fm": backbone_spec("fm", 4), "deepfm": backbone_spec("deepfm", 4)}
    fits = fit_baselines(tiny_synthetic, specs, CONFIG, seconds=0.0)
    for name, outcome in fits.items():
        assert outcome.fit.stopped_by_hook
        assert all(t.device.type == "meta" for t in outcome.model.state_dict().values())
        # the figures the leaderboard reads still come out, equal to a live model's
        live = build_model(tiny_synthetic.schema, specs[name])
        assert count_bytes(outcome.model) == count_bytes(live)
        assert count_parameters(outcome.model) == count_parameters(live)
        assert outcome.metrics["test"]["auc"] > 0
    # a baseline its part did not cut short keeps its weights (a later fit may reuse it)
    kept = fit_baselines(tiny_synthetic, {"fm": specs["fm"]}, replace(CONFIG, epochs=1))
    assert next(kept["fm"].model.parameters()).device.type == "cpu"


def test_release_weights_frees_the_storage():
    model = torch.nn.Linear(1000, 1000)
    storage = weakref.ref(model.weight.untyped_storage())
    release_weights(model)
    gc.collect()
    assert model.weight.device.type == "meta" and storage() is None


def test_a_sampled_table_is_scored_on_the_sample_s_held_out_rows(tiny_synthetic, monkeypatch):
    monkeypatch.setattr("autodrs.pipeline.MIN_EVAL_ROWS", 100)
    sample = search_sample(tiny_synthetic, 1000, seed=0)
    scored = scored_on_sample(tiny_synthetic, sample)
    assert scored.train is tiny_synthetic.train  # every training row
    assert scored.valid is sample.valid and scored.test is sample.test
    assert len(scored.valid) < len(tiny_synthetic.valid)
    assert scored.info["scored_rows"] == {
        "valid": len(sample.valid), "test": len(sample.test),
        "of_valid": len(tiny_synthetic.valid), "of_test": len(tiny_synthetic.test)}
    assert scored_on_sample(tiny_synthetic, tiny_synthetic) is tiny_synthetic
    # a fit on it predicts only the sampled rows
    outcome = fit_spec(scored, backbone_spec("fm", 4), replace(CONFIG, epochs=1))
    assert outcome.fit.samples == len(tiny_synthetic.train)


def test_the_search_s_retrain_ends_with_the_budget_and_sampled_rows_are_scored(tmp_path):
    # a budget already spent when the retrain starts (10 ms: reading the data takes longer)
    # ends the retrain at its first step; without a budget it trains out (no baselines, so
    # the retrain is no fit the run has done already)
    from autodrs import api

    common = {"data": "synthetic?rows=3000&seed=1", "methods": ["optim"], "seed": 0,
              "baselines": [], "epochs": 2, "threads": 1, "search_rows": 1000,
              "options": {"optim": {"lr_factors": "1"}}}
    cut = api.search(budget=0.01, **common).result
    assert cut["cost"]["retrain_cut_short"] is True
    # the baselines and the retrain were scored on the sample's held-out rows
    assert cut["rows"]["scored"] == {"valid": cut["rows"]["stages"]["valid"],
                                     "test": cut["rows"]["stages"]["test"]}
    full = api.search(**common).result
    assert full["cost"]["retrain_cut_short"] is False


def test_an_evaluation_pass_ends_once_the_time_is_up(tiny_synthetic):
    model = build_model(tiny_synthetic.schema, backbone_spec("fm", 4))
    valid = tiny_synthetic.valid
    config = replace(CONFIG, eval_batch_size=100)
    full = Trainer(config).evaluate(model, valid)
    assert "scored_rows" not in full
    # time already up: one batch is scored, and the metrics say how many rows
    spent = Trainer(config, [TimeLimit(lambda: -1.0)]).evaluate(model, valid)
    assert spent["scored_rows"] == 100 and 0 < spent["auc"] < 1
    with deadline(time.monotonic() - 1.0):
        assert Trainer(config).evaluate(model, valid)["scored_rows"] == 100
    # time left: the whole split
    assert "scored_rows" not in Trainer(config, [TimeLimit(lambda: 1e6)]).evaluate(model, valid)
    assert Trainer(config, [TimeLimit(lambda: 1e6)]).evaluate(model, valid)["auc"] == full["auc"]


class _RecordsDeadline(Method):
    """A stage that records the training deadline its search ran under."""

    name = "records-deadline"
    strategies: ClassVar[tuple[str, ...]] = ("grid",)
    seen: ClassVar[list[float | None]] = []

    def search(self, ctx: SearchContext) -> StageResult:
        self.seen.append(current_deadline())
        return StageResult(self.name, "grid", ctx.spec.copy(fields=["r0", "r1"]), seconds=0.0)


class _Guard:
    """A guard with no retrain timed yet, recording the deadline its judging ran under."""

    def __init__(self) -> None:
        self.seen: list[float | None] = []

    def expected_seconds(self) -> float:
        return 0.0

    def __call__(self, before, result):
        self.seen.append(current_deadline())
        return before


def test_the_guard_judges_within_the_stage_s_share(tiny_synthetic, monkeypatch):
    monkeypatch.setattr(stages_module, "get_method", lambda name: _RecordsDeadline())
    _RecordsDeadline.seen.clear()
    guard = _Guard()
    ctx = SearchContext(dataset=tiny_synthetic, spec=backbone_spec("fm", 4), train=CONFIG,
                        seed=0, budget_seconds=100.0)
    (result,) = run_stages(ctx, ["records-deadline"], guard=guard)
    # no retrain timed yet: the method gets half the share, the guard the rest of it
    method_end, guard_end = _RecordsDeadline.seen[0], guard.seen[0]
    budget = result.extra["budget_seconds"]
    assert 45 < budget <= 50
    assert guard_end - method_end == pytest.approx(budget, abs=0.5)


def test_a_stage_left_no_time_is_not_started(tiny_synthetic, monkeypatch):
    monkeypatch.setattr(stages_module, "get_method", lambda name: _RecordsDeadline())
    _RecordsDeadline.seen.clear()
    ctx = SearchContext(dataset=tiny_synthetic, spec=backbone_spec("fm", 4), train=CONFIG,
                        seed=0, budget_seconds=1.0, started=time.monotonic() - 10.0)
    (result,) = run_stages(ctx, ["records-deadline"])
    assert _RecordsDeadline.seen == []
    assert result.no_result == "no time was left for this stage"
    assert result.spec.to_dict() == ctx.spec.to_dict()
