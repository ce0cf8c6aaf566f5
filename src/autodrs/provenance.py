"""Versions recorded with every run and saved model.

``versions()`` is written into ``result.json`` and a model folder's ``manifest.json`` so a
result can be traced to the code that produced it and a model file read by an incompatible
release is refused with a clear error instead of scoring silently wrong.
"""

from __future__ import annotations

from importlib import metadata

__all__ = ["PACKAGES", "autodrs_version", "versions"]

# the libraries whose behaviour decides what a model file means
PACKAGES = ("autodrs", "torch", "polars", "numpy", "pyarrow")


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def autodrs_version() -> str:
    """The installed autodrs version (``0+unknown`` when run from an uninstalled tree)."""
    return _version("autodrs") or "0+unknown"


def versions() -> dict[str, str | None]:
    """Installed versions of autodrs and the libraries a model's meaning depends on
    (``None`` for one that is not installed). Reads package metadata only: importing torch
    is not needed."""
    out = {p: _version(p) for p in PACKAGES}
    out["autodrs"] = autodrs_version()
    return out
