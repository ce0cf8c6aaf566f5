"""The search engine: strategies, budgets, failures, persistence, estimation, one-shot."""

from __future__ import annotations

import math
import time
from dataclasses import replace
from typing import Any

import optuna
import pytest
import torch

from autodrs.data.dataset import Dataset
from autodrs.methods.hparams import HParamSpace, HParamSupernet
from autodrs.models.backbones import backbone_spec
from autodrs.models.builder import build_model
from autodrs.search.base import SearchContext, SearchError, SearchSpace, parse_budget
from autodrs.search.blackbox import run_blackbox
from autodrs.search.estimation import (
    Estimator,
    inherit_weights,
    subsample,
    weight_sharing_evaluator,
)
from autodrs.search.gradient import run_gradient
from autodrs.search.rl import ReinforceSampler
from autodrs.search.strategies import make_pruner
from autodrs.spec import ArchSpec, SpecError, TrainingSpec
from autodrs.train.trainer import TrainConfig

GOOD = {"a": 2, "b": "y", "c": 1}


class ToySpace(SearchSpace):
    """Three discrete choices written into the spec's embedding dim and MLP; the toy
    objective below rewards the ``GOOD`` combination."""

    name = "toy"

    def suggest(self, trial: optuna.Trial, ctx: SearchContext) -> dict[str, Any]:
        return {"a": trial.suggest_categorical("a", [0, 1, 2, 3]),
                "b": trial.suggest_categorical("b", ["x", "y"]),
                "c": trial.suggest_int("c", 0, 2)}

    def apply(self, spec: ArchSpec, decision: dict[str, Any]) -> ArchSpec:
        return spec.copy(embed_dim=4 + decision["a"], mlp=[8 + decision["c"]])


def score(spec: ArchSpec, trial: optuna.Trial) -> float:
    d = trial.user_attrs["decision"]
    return sum(d[k] == v for k, v in GOOD.items()) + 0.01 * d["a"]


@pytest.fixture()
def ctx(tiny_synthetic: Dataset, fast_config: TrainConfig) -> SearchContext:
    return SearchContext(tiny_synthetic, backbone_spec("deepfm", 8), fast_config, seed=3,
                         trials=8, options={"fast": True})


def decisions(result: Any) -> list[Any]:
    return [t["params"] for t in result.trials]


@pytest.mark.parametrize("strategy", ["random", "grid", "tpe", "evolution", "rl"])
def test_every_blackbox_strategy_is_seeded_and_capped(ctx: SearchContext, strategy: str) -> None:
    first = run_blackbox(ToySpace(), ctx, strategy, score)
    second = run_blackbox(ToySpace(), ctx, strategy, score)
    assert len(first.trials) == 8
    assert decisions(first) == decisions(second)
    assert first.best_spec == second.best_spec
    best = max(t["values"][0] for t in first.trials)
    assert first.best_value == best
    first.best_spec.validate(ctx.dataset.schema)


def test_grid_visits_every_point_once(ctx: SearchContext) -> None:
    ctx.trials = 100
    result = run_blackbox(ToySpace(), ctx, "grid", score)
    seen = {tuple(sorted(t["params"].items())) for t in result.trials}
    assert len(result.trials) == len(seen) == 4 * 2 * 3
    assert result.best_decision == GOOD | {"a": 2}


def test_rl_controller_learns_the_rewarded_choices(ctx: SearchContext) -> None:
    ctx.trials = 60
    result = run_blackbox(ToySpace(), ctx, "rl", score)
    sampler = result.study.sampler
    assert isinstance(sampler, ReinforceSampler)
    policy = sampler.policy()
    assert policy["b"][["x", "y"].index("y")] > 0.7
    assert policy["c"][1] == max(policy["c"])
    late = [t["params"] for t in result.trials[-15:]]
    early = [t["params"] for t in result.trials[:15]]
    assert sum(p["b"] == "y" for p in late) > sum(p["b"] == "y" for p in early)


def test_evolution_returns_a_pareto_front(ctx: SearchContext) -> None:
    def two(spec: ArchSpec, trial: optuna.Trial) -> tuple[float, float]:
        return float(score(spec, trial)), float(spec.embed_dim)

    ctx.trials = 20
    result = run_blackbox(ToySpace(), ctx, "evolution", two, ("maximize", "minimize"))
    assert result.pareto
    front = [tuple(p["values"]) for p in result.pareto]
    done = [tuple(t["values"]) for t in result.trials if t["state"] == "COMPLETE"]
    for f in front:  # nothing finished dominates a front member
        assert not any(o[0] >= f[0] and o[1] <= f[1] and o != f for o in done)
    with pytest.raises(SearchError, match="one objective"):
        run_blackbox(ToySpace(), ctx, "rl", two, ("maximize", "minimize"))


def test_failed_and_diverged_trials_are_recorded_and_the_search_goes_on(
        ctx: SearchContext) -> None:
    def flaky(spec: ArchSpec, trial: optuna.Trial) -> float:
        if trial.number % 3 == 0:
            raise RuntimeError("boom")
        if trial.number % 3 == 1:
            return math.nan
        return score(spec, trial)

    ctx.trials = 9
    result = run_blackbox(ToySpace(), ctx, "random", flaky)
    states = [t["state"] for t in result.trials]
    assert states.count("FAIL") == 6 and states.count("COMPLETE") == 3
    assert result.trials[0]["error"] == "RuntimeError: boom"
    assert result.best_value is not None and math.isfinite(result.best_value)

    def broken(spec: ArchSpec, trial: optuna.Trial) -> float:
        raise ValueError("bad candidate")

    with pytest.raises(SearchError, match="bad candidate"):
        run_blackbox(ToySpace(), ctx, "random", broken)


def test_budget_stops_the_search_and_keeps_the_best(ctx: SearchContext) -> None:
    def slow(spec: ArchSpec, trial: optuna.Trial) -> float:
        time.sleep(0.2)
        return score(spec, trial)

    ctx.trials = None
    ctx.budget_seconds = 0.5
    result = run_blackbox(ToySpace(), ctx, "tpe", slow)
    assert 1 <= len(result.trials) < 20
    assert result.best_value == max(t["values"][0] for t in result.trials if t["values"])


def test_a_budgeted_search_stops_once_the_space_is_exhausted(ctx: SearchContext) -> None:
    calls = []

    def counted(spec: ArchSpec, trial: optuna.Trial) -> float:
        calls.append(trial.number)
        return score(spec, trial)

    ctx.trials = None
    ctx.budget_seconds = 60.0
    result = run_blackbox(ToySpace(), ctx, "random", counted)
    # 24 points: every one is evaluated once, then a run of repeats ends the search long
    # before the minute is up
    assert len(calls) == len({tuple(sorted(t["params"].items())) for t in result.trials}) <= 24
    assert len(result.trials) < 24 + 200
    assert all("repeat_of" in t for t in result.trials[-50:])
    assert result.best_value == max(t["values"][0] for t in result.trials if t["values"])


def test_resumed_study_keeps_finished_trials_and_rl_samples_as_if_uninterrupted(
        ctx: SearchContext, tmp_path: Any) -> None:
    ctx.out_dir = tmp_path / "straight"
    ctx.trials = 10
    straight = run_blackbox(ToySpace(), ctx, "rl", score)
    ctx.out_dir = tmp_path / "resumed"
    ctx.trials = 4
    part = run_blackbox(ToySpace(), ctx, "rl", score)
    ctx.trials, ctx.resume = 10, True
    resumed = run_blackbox(ToySpace(), ctx, "rl", score)
    assert decisions(resumed)[:4] == decisions(part)
    assert decisions(resumed) == decisions(straight)
    assert (tmp_path / "resumed" / "search.db").exists()


def test_bad_arguments_are_named(ctx: SearchContext) -> None:
    with pytest.raises(SearchError, match="unknown strategy 'annealing'"):
        run_blackbox(ToySpace(), ctx, "annealing", score)
    with pytest.raises(SearchError, match="not available"):
        run_blackbox(ToySpace(), ctx, "gradient", score)
    with pytest.raises(SearchError, match="directions"):
        run_blackbox(ToySpace(), ctx, "random", score, ("up",))
    with pytest.raises(SearchError, match="no relaxed face"):
        run_gradient(ToySpace(), ctx)
    with pytest.raises(SearchError, match="unknown pruner"):
        make_pruner("asha", 3)
    # a method option of the wrong type is named, in the engine's readers and hparams'
    for key, bad in (("epochs", "many"), ("subsample", "half")):
        ctx.options = {"fast": True, key: bad}
        with pytest.raises(SearchError, match=f"option {key}='{bad}' is not a valid"):
            run_blackbox(ToySpace(), ctx, "random")
    ctx.options = {"fast": True, "epochs": "many"}
    with pytest.raises(SearchError, match="option epochs='many' is not a valid int"):
        run_gradient(HParamSpace(ctx.spec, fast=True, arch_only=True), ctx)
    from autodrs.search.base import get_method

    ctx.options = {"fast": True, "estimation": "weight_sharing", "epochs": "1.5"}
    with pytest.raises(SearchError, match="option epochs='1.5' is not a valid int"):
        get_method("hparams").search(replace(ctx, strategy="tpe"))


def test_parse_budget() -> None:
    assert parse_budget("90s") == 90
    assert parse_budget("10m") == 600
    assert parse_budget("1.5h") == 5400
    assert parse_budget("45") == 45
    assert parse_budget(None) is None
    with pytest.raises(SearchError, match="10 minutes"):
        parse_budget("10 minutes")


def test_spec_training_round_trip_validation_and_provenance(tiny_synthetic: Dataset) -> None:
    spec = backbone_spec("deepfm", 8)
    spec.training = TrainingSpec(lr=3e-3, batch_size=256)
    spec.record("hparams", "tpe", ["lr", "batch_size"], 1.23456, trials=4)
    back = ArchSpec.from_json(spec.to_json())
    assert back == spec
    assert back.provenance[-1] == {"method": "hparams", "strategy": "tpe",
                                   "decided": ["batch_size", "lr"], "seconds": 1.235,
                                   "trials": 4}
    with pytest.raises(SpecError, match="training.batch_size"):
        spec.copy(training=TrainingSpec(batch_size=0)).validate(tiny_synthetic.schema)


# ------------------------------------------------------------------ estimation
def test_subsample_is_seeded_and_sized(tiny_synthetic: Dataset) -> None:
    train = tiny_synthetic.train
    half = subsample(train, 0.5, seed=1)
    assert len(half) == round(len(train) * 0.5)
    assert torch.equal(half.label, subsample(train, 0.5, seed=1).label)
    assert len(subsample(train, 100, seed=1)) == 100
    assert subsample(train, None, seed=1) is train
    with pytest.raises(SearchError, match="subsample"):
        subsample(train, -1, seed=1)


def test_warm_start_copies_matching_and_sliced_weights(tiny_synthetic: Dataset) -> None:
    parent = build_model(tiny_synthetic.schema, backbone_spec("deepfm", 8))
    child = build_model(tiny_synthetic.schema, backbone_spec("deepfm", 8).copy(mlp=[64, 32]))
    state = parent.state_dict()
    copied = inherit_weights(child, state)
    assert copied > 0
    w = child.mlp.net[0].weight
    assert torch.equal(w, state["mlp.net.0.weight"][:64])
    assert torch.equal(child.embedding.tables[0].weight, state["embedding.tables.0.weight"])


def test_median_pruner_stops_poor_trials(ctx: SearchContext) -> None:
    def curve(spec: ArchSpec, trial: optuna.Trial) -> float:
        level = score(spec, trial)
        for step in range(1, 4):
            trial.report(level, step)
            if trial.should_prune():
                raise optuna.TrialPruned()
        return level

    ctx.trials, ctx.options = 16, {"pruner": "median"}
    result = run_blackbox(ToySpace(), ctx, "random", curve)
    states = [t["state"] for t in result.trials]
    assert "PRUNED" in states and "COMPLETE" in states


def test_estimator_trains_on_a_subsample_and_reports_each_epoch(ctx: SearchContext) -> None:
    ctx.options = {"subsample": 0.25, "epochs": 2, "pruner": "median"}
    ctx.trials = 3
    est = Estimator(ctx)
    assert len(est.train) == round(len(ctx.dataset.train) * 0.25)
    result = run_blackbox(HParamSpace(ctx.spec, fast=True), ctx, "random", est)
    study_trial = result.study.trials[0]
    assert study_trial.intermediate_values  # per-epoch validation AUC for the pruner
    assert 0.5 < result.best_value <= 1.0
    assert result.trials[0]["model_params"]["total"] > 0


def test_weight_sharing_scores_subnets_without_training(ctx: SearchContext) -> None:
    space = HParamSpace(ctx.spec, fast=True, arch_only=True)
    supernet = space.supernet(ctx)
    supernet.sample_paths = True
    from autodrs.train.trainer import Trainer

    Trainer(ctx.train).fit(supernet, ctx.dataset.train, ctx.dataset.valid,
                           parameters=supernet.weight_parameters())
    supernet.sample_paths = False
    before = {k: v.clone() for k, v in supernet.state_dict().items()}
    evaluate = weight_sharing_evaluator(supernet, ctx.dataset.valid, ctx.train)
    ctx.trials = 8
    result = run_blackbox(space, ctx, "grid", evaluate)
    assert all(torch.equal(before[k], v) for k, v in supernet.state_dict().items())
    values = {round(t["values"][0], 6) for t in result.trials}
    assert len(values) > 1  # different subnets really are scored differently
    assert result.best_value > 0.55


def test_gradient_strategy_derives_a_valid_deterministic_decision(ctx: SearchContext) -> None:
    space = HParamSpace(ctx.spec, fast=True, arch_only=True)
    first = run_gradient(space, ctx, every=2)
    second = run_gradient(space, ctx, every=2)
    assert first.decision == second.decision
    assert first.arch_steps > 0
    first.spec.validate(ctx.dataset.schema)
    assert isinstance(first.supernet, HParamSupernet)
    moved = [float(p.detach().abs().sum()) for p in first.supernet.arch_parameters()]
    assert all(m > 0 for m in moved)
    single = run_gradient(space, ctx, mode="same_batch")
    assert single.arch_steps > first.arch_steps
    with pytest.raises(SearchError, match="black-box"):
        ctx.spec = backbone_spec("dcnv2", 8)
        run_gradient(space, ctx)


def test_hparams_with_weight_sharing_trains_no_candidate(ctx: SearchContext) -> None:
    from autodrs.search.base import get_method

    ctx.strategy, ctx.trials = "tpe", 4
    ctx.options = {"fast": True, "estimation": "weight_sharing"}
    stage = get_method("hparams").search(ctx)
    stage.spec.validate(ctx.dataset.schema)
    assert len(stage.trials) == 4
    assert all("model_params" not in t for t in stage.trials)  # scored, never trained
    assert set(stage.extra["best"]) == {"embed_dim", "mlp_width", "mlp_depth"}
    assert stage.spec.training == ctx.spec.training  # lr and batch size were not searched


def test_stages_refine_the_spec_in_order_and_resume_after_finished_stages(
        ctx: SearchContext, tmp_path: Any) -> None:
    from autodrs.search.stages import load_stage, run_stages, stage_dir

    ctx.out_dir, ctx.trials, ctx.strategy = tmp_path, 2, "random"
    first = run_stages(ctx, ["hparams", "hparams"])
    assert [s.method for s in first] == ["hparams", "hparams"]
    assert first[1].spec.provenance[-2]["method"] == "hparams"  # stage 2 started from stage 1
    saved = load_stage(stage_dir(tmp_path, 1, "hparams"))
    assert saved is not None and saved.spec == first[1].spec
    ctx.resume = True
    again = run_stages(ctx, ["hparams", "hparams"])
    assert [s.seconds for s in again] == [round(s.seconds, 3) for s in first]  # not rerun
    assert again[1].spec == first[1].spec
    with pytest.raises(SearchError, match="does not support strategy"):
        ctx.strategy = "annealing"
        run_stages(ctx, ["hparams"])


# ------------------------------------------------------------------ objectives and failures
def dominated(p: tuple[float, ...], q: tuple[float, ...]) -> bool:
    """Whether q beats p: AUC (first) at least as high, every cost at most as high, and
    the two differ."""
    return q[0] >= p[0] and all(b <= a for a, b in zip(p[1:], q[1:], strict=True)) and q != p


def test_multi_objective_hparams_returns_a_pareto_front(ctx: SearchContext,
                                                        tmp_path: Any) -> None:
    from autodrs.models.builder import count_bytes, count_parameters
    from autodrs.search.base import get_method
    from autodrs.search.stages import load_stage, run_stages, stage_dir

    names = ["auc", "embedding_bytes", "params"]
    ctx.strategy, ctx.trials, ctx.out_dir = "evolution", 8, tmp_path
    ctx.options = {"fast": True, "objectives": ",".join(names), "population_size": 4}
    stage = run_stages(ctx, ["hparams"])[0]
    front = stage.pareto
    assert front is not None and len(front) > 1, stage.trials
    assert stage.extra["pareto_objectives"] == names
    points = [(p["valid_auc"], p["embedding_bytes"], p["params"]) for p in front]
    assert len(set(points)) == len(points)  # each point once
    done = [tuple(t["values"]) for t in stage.trials if t["state"] == "COMPLETE"]
    assert all(len(v) == 3 for v in done)
    for p in points:  # nothing finished beats a front member
        assert not any(dominated(p, q) for q in done), (p, done)
    for p in done:  # and every other finished trial is beaten by one (or is one)
        assert p in points or any(dominated(p, q) for q in points)
    assert [p[1:] for p in points] == sorted(p[1:] for p in points)  # cheapest first
    # the costs are the candidate's own: stored embedding bytes and parameters
    space = HParamSpace(ctx.spec, fast=True)
    for p in front:
        model = build_model(ctx.dataset.schema, space.apply(ctx.spec, p["decision"]))
        assert p["embedding_bytes"] == count_bytes(model)["embedding"]
        assert p["params"] == count_parameters(model)["total"]
    # the stage's spec is the front's most accurate point
    best = max(front, key=lambda p: p["valid_auc"])
    assert stage.extra["best"] == best["decision"]
    assert stage.spec.embed_dim == best["decision"]["embed_dim"]
    # the front reaches result.json through the stage's details
    saved = load_stage(stage_dir(tmp_path, 0, "hparams"))
    assert saved is not None and saved.to_dict()["pareto"] == front
    assert saved.to_dict()["pareto_objectives"] == names
    # with one objective there is no front; a pruner cannot judge several
    ctx.options, ctx.out_dir = {"fast": True}, None
    assert get_method("hparams").search(replace(ctx, trials=2)).pareto is None
    with pytest.raises(SearchError, match="--pruner median cannot apply"):
        get_method("hparams").search(replace(ctx, options={
            "fast": True, "objectives": "auc,bytes", "pruner": "median"}))


def test_objectives_a_method_cannot_honour_are_refused(ctx: SearchContext,
                                                       tmp_path: Any) -> None:
    from autodrs.search.base import get_method
    from autodrs.search.stages import run_stages

    two = {"fast": True, "objectives": ("auc", "embedding_params")}
    for name, strategy, message in (
            ("sif", None, "method 'sif' optimises its own criterion only; it cannot take "
                          "--objectives auc,embedding_params"),
            ("autoctr", None, "cannot take --objectives"),
            ("hparams", "gradient", "Pareto front only with strategy random or tpe or "
                                    "evolution, not 'gradient'"),
            ("hparams", "rl", "not 'rl'"),
            ("autopi", "gradient", "not 'gradient'")):
        with pytest.raises(SearchError, match=message):
            get_method(name).search(replace(ctx, strategy=strategy, options=two))
    for bad, message in (("auc,size", "unknown objective 'size'"),
                         ("embedding_bytes", "auc followed by distinct cost objectives"),
                         ("auc,bytes,bytes", "distinct")):
        with pytest.raises(SearchError, match=message):
            get_method("hparams").search(replace(ctx, options={"objectives": bad}))
    # a run of stages refuses before its first stage runs
    with pytest.raises(SearchError, match="method 'sif'"):
        run_stages(replace(ctx, out_dir=tmp_path, options=two), ["hparams", "sif"])
    assert not (tmp_path / "stages").exists()


def test_a_search_that_finishes_no_trial_says_so_and_keeps_its_input(
        ctx: SearchContext) -> None:
    from autodrs.search.base import get_method
    from autodrs.search.stages import run_stages

    spent = replace(ctx, trials=None, budget_seconds=1e-9)
    for name, strategy in (("hparams", "tpe"), ("autofeature", "evolution"),
                           ("autopi", "random"), ("autoctr", "evolution")):
        stage = get_method(name).search(replace(spent, strategy=strategy))
        assert stage.no_result and "budget" in stage.no_result, name
        assert stage.spec == ctx.spec and not stage.ranking and stage.pareto is None, name
        assert stage.to_dict()["no_result"] == stage.no_result
    # the stage's input goes on, unjudged by a guard
    judged: list[str] = []

    def guard(spec: ArchSpec, result: Any) -> ArchSpec:
        judged.append(result.method)
        return result.spec

    stages = run_stages(replace(spent, strategy="tpe"), ["hparams"], guard=guard)
    assert stages[0].no_result and stages[0].spec == ctx.spec and judged == []
    # trials that all fail (an error or a value that is not a number) are an error
    with pytest.raises(SearchError, match="all 3 finished trials .* not a finite number"):
        run_blackbox(ToySpace(), replace(ctx, trials=3), "random",
                     lambda spec, trial: math.nan)
