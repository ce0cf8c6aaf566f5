"""Helpers shared by the benchmark scripts: machine line, mean ± spread tables."""

from __future__ import annotations

import os
import platform
from collections.abc import Sequence

import numpy as np
import torch


def machine_line() -> str:
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return (f"machine: {platform.machine()} {cores} cores, torch {torch.__version__}, "
            f"threads {torch.get_num_threads()}, python {platform.python_version()}")


def mean_std(values: Sequence[float]) -> str:
    arr = np.asarray(values, dtype=float)
    return f"{arr.mean():.4f} ± {arr.std():.4f}"


def paired_difference(values: Sequence[float], reference: Sequence[float]) -> str:
    """The mean of per-seed differences ``values - reference`` with its standard error: the
    figure for a method against a baseline measured on the same seeds (the seed-to-seed
    spread that ``mean_std`` shows is shared by both and cancels)."""
    diff = np.asarray(values, dtype=float) - np.asarray(reference, dtype=float)
    if diff.size < 2:
        return f"{diff.mean():+.4f}"
    return f"{diff.mean():+.4f} ± {diff.std(ddof=1) / np.sqrt(diff.size):.4f}"


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)
