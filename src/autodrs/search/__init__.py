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
    register_method,
)

__all__ = ["METHODS", "Method", "SearchContext", "SearchError", "SearchSpace", "StageResult",
           "Supernet", "get_method", "register_method"]
