"""Up-front checks of command-line flags, run by every command before any work starts.

A bad flag (``--epochs 0``, ``--device tpu``, an ``--out`` under a file or in a folder that
cannot be written) is reported as one line naming the flag, before data is read or a run
folder is created, instead of a traceback or a failure after the training. ``FlagError``
is a ``ValueError``, which the CLI turns into that line and exit code 2.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

SEED_MAX = 2**32 - 1  # numpy's generators take seeds in [0, 2**32)


class FlagError(ValueError):
    """A command-line flag has a value the command cannot use."""


def _at_least(low: int | float) -> Callable[[str, Any], None]:
    def check(flag: str, value: Any) -> None:
        if value < low:
            raise FlagError(f"{flag} must be at least {low}, got {value}")
    return check


def _positive(flag: str, value: Any) -> None:
    if not value > 0:
        raise FlagError(f"{flag} must be greater than 0, got {value}")


def _seed(flag: str, value: Any) -> None:
    if not 0 <= value <= SEED_MAX:
        raise FlagError(f"{flag} must be between 0 and {SEED_MAX}, got {value}")


def _port(flag: str, value: Any) -> None:
    if not 0 <= value <= 65535:
        raise FlagError(f"{flag} must be between 0 and 65535, got {value}")


def check_device(name: str, flag: str = "--device") -> None:
    """``auto``, ``cpu``, ``cuda`` or ``cuda:N``, where CUDA (and device N) is available."""
    if name in ("auto", "cpu"):
        return
    kind, _, index = name.partition(":")
    if kind != "cuda" or (index and not index.isdigit()):
        raise FlagError(f"unknown {flag} {name!r}; use auto, cpu or cuda")
    if not torch.cuda.is_available():
        raise FlagError(f"{flag} {name}: CUDA is not available on this machine; "
                        "use --device cpu (or auto)")
    if index and int(index) >= torch.cuda.device_count():
        raise FlagError(f"{flag} {name}: this machine has {torch.cuda.device_count()} "
                        "CUDA device(s)")


def _device(flag: str, value: Any) -> None:
    check_device(value, flag)


# the rule of each flag, by the parameter name the commands use
RULES: dict[str, Callable[[str, Any], None]] = {
    "epochs": _at_least(1),
    "trial_epochs": _at_least(1),
    "batch_size": _at_least(1),
    "lr": _positive,
    "patience": _at_least(0),
    "threads": _at_least(1),
    "seed": _seed,
    "seeds": _at_least(1),
    "embed_dim": _at_least(1),
    "min_count": _at_least(1),
    "trials": _at_least(1),
    "subsample": _positive,
    "search_rows": _at_least(0),
    "chunk_rows": _at_least(1),
    "port": _port,
    "device": _device,
}


def check_flags(**values: Any) -> None:
    """Check each flag given by its parameter name (``epochs=0`` is ``--epochs``); ``None``
    means the flag was left to its default and is not checked."""
    for name, value in values.items():
        if value is not None:
            RULES[name]("--" + name.replace("_", "-"), value)


def _nearest_existing(path: Path) -> Path:
    """``path`` or its closest ancestor that exists; a file on the way is an error."""
    probe = path
    while not probe.exists():
        if probe.parent == probe:
            break
        probe = probe.parent
    return probe


def _writable(folder: Path) -> bool:
    """Whether a file can be created in ``folder``: tried for real, since permission bits
    say nothing for root or on a read-only mount."""
    if not os.access(folder, os.W_OK | os.X_OK):
        return False
    try:
        fd, name = tempfile.mkstemp(dir=folder, prefix=".autodrs-write-check-")
    except OSError:
        return False
    os.close(fd)
    os.unlink(name)
    return True


def check_out_folder(path: Path, flag: str = "--out") -> None:
    """``path`` can be a run folder: it is a folder or can be created as one, and files can be
    written in it. Nothing is created."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise FlagError(f"{flag} {path} is a file; a run folder is needed")
    existing = _nearest_existing(path.absolute())
    if not existing.is_dir():
        raise FlagError(f"{flag} {path}: {existing} is a file, so no folder can be made "
                        "under it")
    if not _writable(existing):
        what = "the folder" if existing == path.absolute() else f"{existing}"
        raise FlagError(f"{flag} {path}: cannot write in {what} (permission denied or a "
                        "read-only file system)")


def check_out_file(path: Path, flag: str = "--out") -> None:
    """``path`` can be written as a file: it is not a folder, and its folder exists (or can be
    made) and is writable (files are written beside the target and moved over it)."""
    path = Path(path)
    if path.is_dir():
        raise FlagError(f"{flag} {path} is a folder; a file name is needed")
    existing = _nearest_existing(path.absolute().parent)
    if not existing.is_dir():
        raise FlagError(f"{flag} {path}: {existing} is a file, so no file can be made "
                        "under it")
    if not _writable(existing):
        raise FlagError(f"{flag} {path}: cannot write in {existing} (permission denied or "
                        "a read-only file system)")
