"""Data-parallel training: ``train --nproc 2`` through torchrun (gloo on CPU) reaches the
one-process AUC and writes one model; ranks with uneven shards run the same steps; ``train
--backend ray`` trains under Ray Train with 2 workers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest
import torch

from autodrs.data.dataset import load_dataset
from autodrs.train import distributed
from autodrs.train.trainer import shuffled_batch_count
from ranks import run_ranks

DATA = "synthetic?rows=20000&seed=3"
FLAGS = ["--data", DATA, "--epochs", "2", "--seed", "0", "--threads", "1", "--no-progress"]


def autodrs(*args: str, timeout: int = 240) -> subprocess.CompletedProcess[str]:
    env = os.environ | {"COLUMNS": "400"}  # result lines on one line
    return subprocess.run([sys.executable, "-m", "autodrs", *args], capture_output=True,
                          text=True, timeout=timeout, env=env)


def test_two_process_ddp_matches_one_process_and_writes_one_model(tmp_path: Path) -> None:
    one = autodrs("train", *FLAGS, "--out", str(tmp_path / "one"))
    assert one.returncode == 0, one.stderr[-2000:]
    two = autodrs("train", *FLAGS, "--out", str(tmp_path / "two"), "--nproc", "2")
    assert two.returncode == 0, two.stderr[-2000:]
    # only rank 0 writes the run folder and says so
    assert two.stdout.count("result.json") == 1, two.stdout
    r1 = json.loads((tmp_path / "one" / "result.json").read_text())
    r2 = json.loads((tmp_path / "two" / "result.json").read_text())
    assert r1["config"]["world_size"] == 1 and r2["config"]["world_size"] == 2
    assert (tmp_path / "two" / "model.pt").exists()
    assert abs(r1["metrics"]["valid"]["auc"] - r2["metrics"]["valid"]["auc"]) < 0.01
    assert r2["metrics"]["valid"]["auc"] > 0.6
    # every train row was seen once per epoch across the two ranks
    assert r2["history"][0]["epoch"] == 1


def test_batch_count_is_what_shuffled_batches_yield() -> None:
    ds = load_dataset("synthetic?rows=3000&seed=1", seed=0)
    for n in (1, 2, 5, 9, 10, 17, 33, 64, 65, 100):
        part = ds.train.subset(torch.arange(n))
        for bs in (1, 2, 4, 8, 16, 32, 64):
            got = sum(1 for _ in part.batches(bs, shuffle=True,
                                              generator=torch.Generator().manual_seed(0)))
            assert shuffled_batch_count(n, bs) == got, (n, bs)


def _uneven_rank(rank: int, world: int, port: int, out: str) -> None:
    import torch.distributed as dist

    from autodrs.experiment import fit_spec
    from autodrs.models.backbones import backbone_spec
    from autodrs.train.trainer import TrainConfig

    os.environ |= {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port),
                   "LOCAL_RANK": str(rank), "LOCAL_WORLD_SIZE": str(world)}
    dist.init_process_group("gloo", rank=rank, world_size=world,
                            timeout=timedelta(seconds=30))
    ds = load_dataset("synthetic?rows=3000&seed=1", seed=0)
    # 19 train rows, 4 per rank and step: rank 0 holds 10 rows (3 batches), rank 1 holds 9
    # (2 batches, its single last row joins the batch before it)
    ds.train = ds.train.subset(torch.arange(19))
    config = TrainConfig(epochs=2, batch_size=8, patience=5, progress=False, threads=1,
                         seed=0, checkpoint=str(Path(out) / "best.pt"))
    outcome = fit_spec(ds, backbone_spec("deepfm", 4), config)
    steps = len(ds.train.shard(rank, world))
    Path(out, f"rank{rank}.json").write_text(json.dumps({
        "rows": steps, "valid_auc": outcome.metrics["valid"]["auc"],
        "samples": outcome.fit.samples, "epochs": len(outcome.fit.history)}))
    dist.destroy_process_group()


def test_uneven_shards_take_equal_steps_and_agree_on_metrics(tmp_path: Path) -> None:
    r0, r1 = run_ranks(_uneven_rank, tmp_path)
    assert (r0["rows"], r1["rows"]) == (10, 9)
    # the same validation metrics (gathered over both ranks) on every rank
    assert r0["valid_auc"] == r1["valid_auc"] and r0["epochs"] == r1["epochs"] == 2
    # 2 steps per epoch on each rank: 2 x 2 x (4 + 4 or 5 rows); the extra batch of rank 0
    # is left out
    assert r0["samples"] == r1["samples"] < 19 * 2
    assert (tmp_path / "best.pt").exists()  # rank 0's checkpoint


def test_launcher_flags_are_checked() -> None:
    with pytest.raises(ValueError, match="backend"):
        distributed.launch_train(None, None, {}, 1, "spark", 2, 0)
    with pytest.raises(ValueError, match="--nproc"):
        distributed.launch_train(None, None, {}, 0, "local", 2, 0)
    with pytest.raises(ValueError, match="--workers"):
        distributed.launch_train(None, None, {"device": "auto", "out_dir": "x"}, 2, "ray", 2, 0)
    assert distributed.launch_train(None, None, {}, 1, "local", 2, 0) is False
    assert distributed.world() == distributed.World(0, 1, 0)


def test_torchrun_command_runs_autodrs_as_a_module() -> None:
    cmd = distributed.torchrun_command(3, ["train", "--data", "synthetic"])
    assert cmd[:3] == [sys.executable, "-m", "torch.distributed.run"]
    assert "--nproc_per_node=3" in cmd
    assert cmd[-5:] == ["-m", "autodrs", "train", "--data", "synthetic"]


def test_ray_train_with_two_workers_trains(tmp_path: Path) -> None:
    import ray.train.torch  # noqa: F401

    run = autodrs("train", "--data", "synthetic?rows=6000&seed=3", "--epochs", "1",
                  "--seed", "0", "--threads", "1", "--no-progress", "--backend", "ray",
                  "--workers", "2", "--out", str(tmp_path / "ray"), timeout=300)
    assert run.returncode == 0, (run.stdout[-2000:], run.stderr[-3000:])
    result = json.loads((tmp_path / "ray" / "result.json").read_text())
    assert result["config"]["world_size"] == 2
    assert result["metrics"]["valid"]["auc"] > 0.55
    assert (tmp_path / "ray" / "model.pt").exists()


def test_ray_tune_trials_ask_for_their_cpus_gpus_and_storage(tmp_path: Path) -> None:
    from autodrs.models.backbones import backbone_spec
    from autodrs.search.base import SearchContext, SearchError
    from autodrs.search.raytune import tune_settings
    from autodrs.train.trainer import TrainConfig

    ds = load_dataset("synthetic?rows=3000&seed=1", seed=0)

    def ctx(**options: object) -> SearchContext:
        return SearchContext(ds, backbone_spec("deepfm", 8), TrainConfig(), seed=0,
                             out_dir=tmp_path / "run", backend="ray", options=dict(options))

    default = tune_settings(ctx())
    assert default.resources == {"cpu": 1.0} and default.concurrency == 2
    assert default.storage == str((tmp_path / "run" / "ray").resolve())
    wide = tune_settings(ctx(ray_cpus_per_trial=4, ray_gpus_per_trial=0.5, ray_concurrency=3,
                             ray_storage="s3://bucket/autodrs"))
    assert wide.resources == {"cpu": 4.0, "gpu": 0.5} and wide.concurrency == 3
    assert wide.storage == "s3://bucket/autodrs" and wide.local_cpus == 12
    assert tune_settings(ctx(ray_storage=str(tmp_path / "shared"))).storage == str(
        (tmp_path / "shared").resolve())
    for bad, match in (({"ray_cpus_per_trial": 0}, "--cpus-per-trial"),
                       ({"ray_gpus_per_trial": -1}, "--gpus-per-trial"),
                       ({"ray_concurrency": 0}, "--concurrency")):
        with pytest.raises(SearchError, match=match):
            tune_settings(ctx(**bad))


def test_search_ray_flags_reach_the_trials(tmp_path: Path) -> None:
    run = autodrs("search", "--data", "synthetic?rows=3000&seed=1", "--methods", "hparams",
                  "--trials", "1", "--baselines", "none", "--backend", "ray",
                  "--concurrency", "0", "--no-progress", "--out", str(tmp_path / "s"))
    assert run.returncode == 2 and "--concurrency must be >= 1, got 0" in run.stderr
