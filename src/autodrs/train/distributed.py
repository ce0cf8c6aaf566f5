"""Data-parallel training across processes and machines (torch.distributed DDP).

One code path: ``Trainer`` asks ``world()`` whether a process group is up and, when it is,
trains its rank's shard of the train split under ``DistributedDataParallel``, gathers
validation predictions across ranks, and lets only rank 0 write files. The group comes from
``torchrun`` (``init_from_env`` reads WORLD_SIZE/RANK/LOCAL_RANK) or from Ray Train's
``TorchTrainer`` (which sets it up itself); ``autodrs train --nproc N`` re-executes itself
under ``torchrun`` and ``--backend ray`` runs the same command body in Ray Train workers.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

_OWNED = False  # this process set up the process group (torchrun), not Ray Train


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0


def world() -> World:
    """This process's place in the process group (rank 0 of 1 when there is none)."""
    if not (dist.is_available() and dist.is_initialized()):
        return World()
    return World(dist.get_rank(), dist.get_world_size(),
                 int(os.environ.get("LOCAL_RANK", dist.get_rank())))


def is_main() -> bool:
    return world().main


def init_from_env(device: str = "auto") -> World:
    """Join the process group a launcher (torchrun, or anything setting WORLD_SIZE, RANK,
    LOCAL_RANK, MASTER_ADDR, MASTER_PORT) describes: NCCL when training on CUDA, gloo on CPU.
    A no-op in a single process or when the group is already up (Ray Train)."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size <= 1 or dist.is_initialized():
        return world()
    cuda = device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())
    if cuda:
        if not torch.cuda.is_available():
            raise ValueError("--device cuda: no CUDA device is available on this machine")
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group("nccl" if cuda else "gloo")
    global _OWNED
    _OWNED = True
    return world()


def finish() -> None:
    """Wait for every rank (rank 0 writing the run folder), then leave a group this process
    joined in ``init_from_env`` (a rank exiting without that aborts in gloo's threads). A
    group Ray Train set up is left to Ray."""
    global _OWNED
    if world().size > 1:
        dist.barrier()
    if _OWNED and dist.is_initialized():
        dist.destroy_process_group()
        _OWNED = False


def _device() -> torch.device:
    # NCCL collectives need tensors on this rank's GPU; gloo takes CPU tensors
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def all_reduce_int(value: int, op: str = "min") -> int:
    """``value`` reduced over all ranks (min, max or sum)."""
    if world().size == 1:
        return value
    t = torch.tensor([value], dtype=torch.int64, device=_device())
    dist.all_reduce(t, op={"min": dist.ReduceOp.MIN, "max": dist.ReduceOp.MAX,
                           "sum": dist.ReduceOp.SUM}[op])
    return int(t.item())


def gather_to_main(arrays: dict[str, np.ndarray | None]) -> dict[str, np.ndarray | None] | None:
    """Every rank's arrays concatenated rank by rank on rank 0 (None elsewhere)."""
    w = world()
    if w.size == 1:
        return arrays
    parts: list[Any] | None = [None] * w.size if w.main else None
    dist.gather_object(arrays, parts, dst=0)
    if parts is None:
        return None
    return {k: None if parts[0][k] is None else np.concatenate([p[k] for p in parts])
            for k in arrays}


def broadcast_from_main(obj: Any) -> Any:
    """Rank 0's ``obj`` on every rank."""
    if world().size == 1:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


# ---------------------------------------------------------------- launchers
def torchrun_command(nproc: int, args: list[str]) -> list[str]:
    """The command that runs ``autodrs <args>`` as ``nproc`` ranks on this machine."""
    return [sys.executable, "-m", "torch.distributed.run", "--standalone",
            f"--nproc_per_node={nproc}", "-m", "autodrs", *args]


def launch_torchrun(nproc: int, args: list[str]) -> int:
    """Run ``autodrs <args>`` under torchrun with ``nproc`` ranks; its exit status."""
    if nproc < 1:
        raise ValueError(f"--nproc must be >= 1, got {nproc}")
    return subprocess.run(torchrun_command(nproc, args), check=False).returncode


def command_args(ctx: Any, drop: set[str]) -> list[str]:
    """The command line of a click context (command name and the options the user set),
    without the parameters named in ``drop``: what a launcher re-executes."""
    args = [ctx.info_name]
    for param in ctx.command.params:
        name = param.name
        source = ctx.get_parameter_source(name)
        if name in drop or source is None or source.name == "DEFAULT":
            continue
        value = ctx.params[name]
        if getattr(param, "is_flag", False) and param.secondary_opts:
            args.append(param.opts[0] if value else param.secondary_opts[0])
        elif getattr(param, "is_flag", False):
            if value:
                args.append(param.opts[0])
        elif value is not None:
            args += [param.opts[0], str(value)]
    return args


def launch_ray(command: Any, params: dict[str, Any], workers: int, gpus_per_worker: float,
               cpus_per_worker: float, storage: str, address: str | None = None) -> None:
    """Run ``command(**params)`` (the ``train`` command's body) in ``workers`` Ray Train
    workers under ``TorchTrainer``, which sets up the process group (gloo, or NCCL with
    GPUs) before the body's own DDP-aware Trainer runs."""
    if workers < 1:
        raise ValueError(f"--workers must be >= 1, got {workers}")
    if gpus_per_worker < 0:
        raise ValueError(f"--gpus-per-worker must be >= 0, got {gpus_per_worker}")
    try:
        import ray
        from ray.train import RunConfig, ScalingConfig
        from ray.train.torch import TorchTrainer
    except ImportError as e:
        raise ValueError("--backend ray needs Ray Train: pip install 'autodrs[ray]'") from e
    started_here = not ray.is_initialized()
    if started_here:
        ray.init(address=address, include_dashboard=False, configure_logging=False,
                 num_cpus=None if address else int(max(1, workers * cpus_per_worker)))
    try:
        resources = {"CPU": cpus_per_worker} | ({"GPU": gpus_per_worker}
                                                if gpus_per_worker else {})
        trainer = TorchTrainer(
            _ray_worker,
            train_loop_config={"command": command, "params": params},
            scaling_config=ScalingConfig(num_workers=workers, use_gpu=gpus_per_worker > 0,
                                         resources_per_worker=resources),
            run_config=RunConfig(name="train", storage_path=storage),
        )
        result = trainer.fit()
        if result.error is not None:
            raise RuntimeError(f"Ray Train failed: {result.error}")
    finally:
        if started_here:
            ray.shutdown()


def _ray_worker(config: dict[str, Any]) -> None:
    import typer

    if torch.cuda.is_available() and "LOCAL_RANK" in os.environ:
        import ray.train.torch

        torch.cuda.set_device(ray.train.torch.get_device())
    try:
        config["command"](**config["params"])
    except typer.Exit as e:  # the command's one-line error is already printed
        if e.exit_code:
            raise RuntimeError(f"rank {world().rank}: train exited with {e.exit_code}") from None


def launch_train(command: Any, ctx: Any, params: dict[str, Any], nproc: int, backend: str,
                 workers: int, gpus_per_worker: float) -> bool:
    """Hand the ``train`` command (its click context ``ctx``, its arguments ``params``) to
    torchrun (``nproc`` > 1) or Ray Train (``backend`` ray) and return True once it ran
    there; False when this process should train itself."""
    import typer

    if backend not in ("local", "ray"):
        raise ValueError(f"unknown backend {backend!r}; use local or ray")
    if nproc < 1:
        raise ValueError(f"--nproc must be >= 1, got {nproc}")
    if backend == "ray":
        if nproc > 1:
            raise ValueError("--nproc is for the local backend; with --backend ray use --workers")
        if gpus_per_worker > 0 and params.get("device") == "cpu":
            raise ValueError("--gpus-per-worker > 0 trains on CUDA; drop --device cpu")
        out = Path(params["out_dir"]).absolute()
        params = {k: v for k, v in params.items() if k != "click_ctx"}
        local = params | {"click_ctx": None, "backend": "local", "nproc": 1, "workers": 1, "out_dir": out,
                          "progress": False,
                          "device": "cuda" if gpus_per_worker > 0 else params["device"]}
        cpus = max(1.0, float(params.get("threads") or 1))
        launch_ray(command, local, workers, gpus_per_worker, cpus, str(out / "ray"))
        return True
    if nproc > 1:
        if int(os.environ.get("WORLD_SIZE", "1")) > 1:
            raise ValueError("--nproc inside a torchrun launch: run the command without it")
        code = launch_torchrun(nproc, command_args(ctx, {"nproc"}))
        if code:
            raise typer.Exit(code)
        return True
    return False
