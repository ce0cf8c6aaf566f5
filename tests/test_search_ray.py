"""``--backend ray``: black-box trials run as concurrent Ray Tune trials, with Optuna as
the search algorithm, and give the same kind of result as the local backend."""

from __future__ import annotations

from pathlib import Path

from autodrs.data.dataset import Dataset
from autodrs.methods.hparams import HParamSpace
from autodrs.models.backbones import backbone_spec
from autodrs.search.base import SearchContext
from autodrs.search.blackbox import run_blackbox
from autodrs.train.trainer import TrainConfig


def test_ray_runs_two_concurrent_trials_like_the_local_backend(
        tiny_synthetic: Dataset, fast_config: TrainConfig, tmp_path: Path) -> None:
    ctx = SearchContext(tiny_synthetic, backbone_spec("deepfm", 8), fast_config, seed=0,
                        trials=2, out_dir=tmp_path / "ray", backend="ray",
                        options={"fast": True, "ray_cpus": 2, "ray_concurrency": 2})
    space = HParamSpace(ctx.spec, fast=True)
    remote = run_blackbox(space, ctx, "random", method="hparams")
    assert [t["state"] for t in remote.trials] == ["COMPLETE", "COMPLETE"]
    first, second = remote.study.trials
    # the two trials overlapped in time: Ray ran them side by side
    assert first.datetime_start < second.datetime_complete
    assert second.datetime_start < first.datetime_complete
    remote.best_spec.validate(tiny_synthetic.schema)
    assert all(t["model_params"]["total"] > 0 for t in remote.trials)
    assert (tmp_path / "ray" / "search.db").exists()

    ctx.backend, ctx.out_dir = "local", tmp_path / "local"
    local = run_blackbox(space, ctx, "random", method="hparams")
    assert sorted(remote.trials[0]) == sorted(local.trials[0])  # same record shape
    assert [t["params"] for t in local.trials] == [t["params"] for t in remote.trials]
    assert local.best_decision == remote.best_decision
    assert abs(local.best_value - remote.best_value) < 1e-6


def test_ray_trials_are_pruned_by_the_studys_pruner(
        tiny_synthetic: Dataset, fast_config: TrainConfig, tmp_path: Path) -> None:
    """``--pruner median`` under Ray: each epoch's value reaches the study's median pruner
    in the driver, and Ray stops the trials it prunes (recorded as pruned, not complete)."""

    def curve(spec, trial):  # type: ignore[no-untyped-def]
        import time as clock

        d = trial.user_attrs["decision"]
        level = 0.5 + 0.1 * (d["embed_dim"] == 8) + 0.05 * (d["mlp_width"] == 32) \
            + 0.02 * (d["lr"] == 3e-3)
        for step in range(1, 6):
            trial.report(level, step)
            clock.sleep(0.4)  # time for the driver to stop a pruned trial
        return level

    ctx = SearchContext(tiny_synthetic, backbone_spec("deepfm", 8), fast_config, seed=1,
                        trials=4, out_dir=tmp_path / "ray", backend="ray",
                        options={"fast": True, "ray_cpus": 1, "ray_concurrency": 1,
                                 "pruner": "median", "reuse_duplicates": False})
    result = run_blackbox(HParamSpace(ctx.spec, fast=True), ctx, "random", curve,
                          method="hparams")
    states = {t.number: t.state.name for t in result.study.trials}
    pruned = [t for t in result.study.trials if t.state.name == "PRUNED"]
    complete = [t for t in result.study.trials if t.state.name == "COMPLETE"]
    assert pruned and complete, states
    for t in pruned:  # stopped early, below the median of the trials before it
        assert len(t.intermediate_values) < 5
        assert [r["state"] for r in result.trials if r["number"] == t.number] == ["PRUNED"]
    assert all(len(t.intermediate_values) == 5 for t in complete)
    assert result.best_value == max(t.values[0] for t in complete)
