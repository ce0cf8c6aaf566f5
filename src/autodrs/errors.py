"""The exceptions autodrs raises for input it cannot use, in one place.

Every one is an ordinary exception (a ``ValueError``, but ``TrainingDiverged``); the
command line turns them into one line and exit code 2 (3 for a diverged training).
"""

from __future__ import annotations

from autodrs.config import ConfigError
from autodrs.data.errors import DataError
from autodrs.runfolder import ModelFileError, RunFolderError
from autodrs.search.base import SearchError
from autodrs.spec import SpecError
from autodrs.train.trainer import TrainingDiverged
from autodrs.validation import FlagError

__all__ = ["ConfigError", "DataError", "FlagError", "ModelFileError", "RunFolderError",
           "SearchError", "SpecError", "TrainingDiverged"]
