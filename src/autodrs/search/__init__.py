"""The search engine: spaces x strategies joined by the ArchSpec."""

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
