"""autodrs: automated design of deep recommender systems for CTR prediction.

The Python API, in the style of scikit-learn and AutoGluon::

    import autodrs

    result = autodrs.search(frame, label="click", budget="10m")
    result.leaderboard()              # the searched model against the baselines
    scores = result.predict(new_rows) # click probabilities of raw rows
    result.save("runs/ctr")
    model = autodrs.load("runs/ctr")  # .predict(frame) again
    one = autodrs.train(frame, label="click", model="deepfm")  # one model

Names are imported on first use, so ``import autodrs`` (and ``autodrs --help``) does not
load PyTorch.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

from autodrs.provenance import autodrs_version

__version__ = autodrs_version()

# public name -> module that defines it
_EXPORTS = {
    "search": "autodrs.api", "train": "autodrs.api", "load": "autodrs.api",
    "SearchResult": "autodrs.api", "RunResult": "autodrs.api", "Model": "autodrs.api",
    "SearchSettings": "autodrs.config", "TrainSettings": "autodrs.config",
    "BenchSettings": "autodrs.config",
    "ArchSpec": "autodrs.spec",
    "ConfigError": "autodrs.errors", "DataError": "autodrs.errors",
    "FlagError": "autodrs.errors", "ModelFileError": "autodrs.errors",
    "RunFolderError": "autodrs.errors", "SearchError": "autodrs.errors",
    "SpecError": "autodrs.errors", "TrainingDiverged": "autodrs.errors",
}

__all__ = [
    "ArchSpec", "BenchSettings", "ConfigError", "DataError", "FlagError", "Model",
    "ModelFileError", "RunFolderError", "RunResult", "SearchError", "SearchResult",
    "SearchSettings", "SpecError", "TrainSettings", "TrainingDiverged", "__version__", "load",
    "search", "train",
]

if TYPE_CHECKING:
    from autodrs.api import Model, RunResult, SearchResult, load, search, train
    from autodrs.config import BenchSettings, SearchSettings, TrainSettings
    from autodrs.errors import (
        ConfigError,
        DataError,
        FlagError,
        ModelFileError,
        RunFolderError,
        SearchError,
        SpecError,
        TrainingDiverged,
    )
    from autodrs.spec import ArchSpec


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        value = getattr(import_module(_EXPORTS[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'autodrs' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
