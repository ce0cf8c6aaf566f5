"""The search engine: spaces x strategies joined by the ArchSpec.

Once imported, this package is the attribute ``autodrs.search``, where the API's function
of that name is expected; calling the package calls the function (``_Callable``)."""

import sys
import types
from typing import Any

from autodrs.search.base import (
    METHODS,
    Method,
    SearchContext,
    SearchError,
    SearchSpace,
    StageResult,
    Supernet,
    get_method,
    parse_budget,
    register_method,
)
from autodrs.search.blackbox import BlackBoxResult, run_blackbox
from autodrs.search.gradient import GradientResult, run_gradient
from autodrs.search.stages import run_stages
from autodrs.search.strategies import BLACKBOX_STRATEGIES, STRATEGIES

__all__ = ["BLACKBOX_STRATEGIES", "METHODS", "STRATEGIES", "BlackBoxResult", "GradientResult",
           "Method", "SearchContext", "SearchError", "SearchSpace", "StageResult", "Supernet",
           "get_method", "parse_budget", "register_method", "run_blackbox", "run_gradient",
           "run_stages"]


class _Callable(types.ModuleType):
    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        from autodrs.api import search

        return search(*args, **kwargs)


sys.modules[__name__].__class__ = _Callable
