"""Raw-field selection: AutoField, AdaFS, MARLFS-style agents and black-box search over the
keep/drop space, FSTD (temporal-difference RL over subsets), and ERASE's other baselines
(Lasso, GBDT, random forest, XGBoost-style gain, permutation, SFS, SHARK, LPFS, OptFS,
MvFS), all ranked and cut by the shared ERASE protocol (``erase.py``)."""

from autodrs.methods.selection import (  # noqa: F401  (registers the methods)
    adafs,
    autofield,
    fstd,
    gbdt,
    lasso,
    lpfs,
    marlfs,
    mvfs,
    optfs,
    permutation,
    rf,
    sfs,
    shark,
    xgb,
)
from autodrs.methods.selection.erase import EraseCurve, erase_curve, pick_k
from autodrs.methods.selection.space import FieldSelectionSpace
from autodrs.methods.selection.truth import planted_recovery

__all__ = ["EraseCurve", "FieldSelectionSpace", "erase_curve", "pick_k", "planted_recovery"]
