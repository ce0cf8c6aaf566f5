"""Logging: autodrs reports through the ``autodrs`` logger and never configures any other.

A library does not install handlers: Python code calling the API sees autodrs's messages
once it configures logging (``logging.basicConfig(level=logging.INFO)``), or warnings only
by Python's default. The command line installs ``console_handler`` (plain lines on stderr,
``-v``/``-q`` set its level), and every run writes its folder's ``run.log`` (``run_log``)
with timestamps and every message at DEBUG and above.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

LOGGER = "autodrs"
RUN_LOG = "run.log"

log = logging.getLogger(LOGGER)


class _Stderr(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever ``sys.stderr`` is when a message is emitted (a test runner or a
    notebook may have replaced it since the handler was made)."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property  # type: ignore[override]
    def stream(self) -> object:
        return sys.stderr

    @stream.setter
    def stream(self, value: object) -> None:
        pass


class _ConsoleFormat(logging.Formatter):
    """Information as plain lines; warnings and errors prefixed by their level."""

    def format(self, record: logging.LogRecord) -> str:
        text = record.getMessage()
        if record.levelno >= logging.WARNING:
            return f"{record.levelname.lower()}: {text}"
        return text


def console_handler(verbosity: int = 0) -> logging.Handler:
    """Install (once) the command line's handler on the ``autodrs`` logger: INFO by
    default, DEBUG with ``verbosity`` > 0, WARNING with ``verbosity`` < 0."""
    level = logging.DEBUG if verbosity > 0 else logging.WARNING if verbosity < 0 else logging.INFO
    for handler in log.handlers:
        if isinstance(handler, _Stderr):
            handler.setLevel(level)
            break
    else:
        handler = _Stderr()
        handler.setFormatter(_ConsoleFormat())
        handler.setLevel(level)
        log.addHandler(handler)
    log.setLevel(logging.DEBUG)
    return handler


class _Forward(logging.Handler):
    """Passes records on to the root logger's handlers, as propagation would: used while a
    run log lowers the ``autodrs`` level, so that the user's own handlers still see only
    the levels they asked for."""

    def emit(self, record: logging.LogRecord) -> None:
        logging.getLogger().handle(record)


@contextmanager
def run_log(folder: Path) -> Iterator[Path]:
    """Within the block, every autodrs message, DEBUG and above, also goes to
    ``folder/run.log`` (appended, so a resumed search keeps the log of the run it
    continues); what reaches any other handler is unchanged."""
    path = Path(folder) / RUN_LOG
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    level, propagate = log.level, log.propagate
    forward = _Forward(log.getEffectiveLevel())
    log.addHandler(handler)
    if propagate:
        log.addHandler(forward)
    log.setLevel(logging.DEBUG)
    log.propagate = False
    try:
        yield path
    finally:
        log.removeHandler(handler)
        log.removeHandler(forward)
        handler.close()
        log.setLevel(level)
        log.propagate = propagate


@contextmanager
def quiet_optuna() -> Iterator[None]:
    """Within the block, Optuna logs warnings only (not a line per trial); its verbosity as
    it was is restored after, so importing or running autodrs never changes it for good."""
    import optuna

    before = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        yield
    finally:
        optuna.logging.set_verbosity(before)
