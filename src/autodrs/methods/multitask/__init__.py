"""Multi-task architecture search (``mtl``)."""
from autodrs.methods.multitask import mtl  # noqa: F401
