"""Embedding search: how large each field's (or each value's) embedding is, stored at that
size. Per field: AutoDim (gradient), DNIS (gradient), NIS-style RL and RULE-style evolution
under a memory budget (black-box over ``EmbeddingDimSpace``). Per value: PEP (learned
thresholds) and AutoEmb (frequency-aware soft selection). Numerical fields: AutoDis against
normalised-linear and equal-frequency bucketising."""

from autodrs.methods.embedding import autodim, autodis, autoemb, blackbox, dnis, pep  # noqa: F401

__all__ = ["autodim", "autodis", "autoemb", "blackbox", "dnis", "pep"]
