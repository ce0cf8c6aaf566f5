"""Embedding search: how large each field's (or each value's) embedding is, stored at that
size. Per field: AutoDim (gradient), DNIS (gradient), NIS-style RL and RULE-style evolution
under a memory budget (black-box over ``EmbeddingDimSpace``). Per value: PEP (learned
thresholds), AutoEmb (frequency-aware soft selection) and frequency pruning (rare values
share one row, the threshold chosen on validation). Numerical fields: AutoDis against
normalised-linear and equal-frequency bucketising. Rows and dims together: OptEmbed (learned
row pruning, evolution over per-field dims on a one-shot supernet)."""

from autodrs.methods.embedding import (  # noqa: F401
    amtl,
    ant,
    autodim,
    autodis,
    autoemb,
    blackbox,
    dnis,
    esapn,
    frequency,
    optembed,
    pep,
)

__all__ = ["amtl", "ant", "autodim", "autodis", "autoemb", "blackbox", "dnis", "esapn",
           "frequency", "optembed", "pep"]
