"""Behaviour-sequence search: AMEIR's one-shot random search over the behaviour-modelling
block, the Hadamard interactions of the other fields and the MLP."""

from autodrs.methods.sequence import ameir  # noqa: F401  (registers it)
