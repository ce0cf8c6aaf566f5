"""Spawned data-parallel ranks for the tests: each runs ``target(rank, world, port,
folder)`` and writes ``folder/rank{r}.json``, which ``run_ranks`` returns in rank order."""

from __future__ import annotations

import json
import socket
from collections.abc import Callable
from pathlib import Path

import torch.multiprocessing as mp


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def run_ranks(target: Callable[[int, int, int, str], None], folder: Path,
              world: int = 2, timeout: float = 120) -> list[dict]:
    ctx = mp.get_context("spawn")
    port = free_port()
    procs = [ctx.Process(target=target, args=(r, world, port, str(folder)))
             for r in range(world)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=timeout)
    for p in procs:
        if p.is_alive():
            p.kill()
    assert [p.exitcode for p in procs] == [0] * world
    return [json.loads((Path(folder) / f"rank{r}.json").read_text()) for r in range(world)]
