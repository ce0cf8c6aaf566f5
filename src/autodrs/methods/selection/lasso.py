"""Lasso baseline: L1-regularised logistic regression on target-encoded fields.

Each field is one target-encoded column (``tabular.target_encoded``: out-of-fold on train,
numerical fields bucketed), standardised; an L1-penalised logistic regression (liblinear,
``l1_logistic``) is fitted along a path of ``C`` from strong to weak regularisation. A field's score is its
mean ``|coef|`` over the path, so a field that enters the model early (survives strong
shrinkage) outranks one that only enters when the penalty is weak. ERASE instead regresses
the 0/1 label on raw integer codes with ``sklearn.linear_model.Lasso``; codes ordered by
frequency are not a meaningful scale, hence the target encoding here.

Options: ``lasso_rows`` (train rows used, default 200,000).
"""

from __future__ import annotations

import numpy as np
import sklearn
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

from autodrs.methods.selection.common import FieldScores, SelectionMethod, option
from autodrs.methods.selection.tabular import target_encoded
from autodrs.search.base import SearchContext, register_method

PATH = np.logspace(-3, 1, 9)
SKLEARN_VERSION = tuple(int(p) for p in sklearn.__version__.split(".")[:2])


def l1_logistic(c: float, seed: int, version: tuple[int, ...] | None = None,
                max_iter: int = 200) -> LogisticRegression:
    """An L1-penalised logistic regression on every scikit-learn the project allows: before
    1.8 the penalty is ``penalty="l1"`` (``l1_ratio`` alone is ignored there, leaving L2);
    from 1.8 it is ``l1_ratio=1`` (``penalty`` is deprecated, and removed in 1.10)."""
    if (version or SKLEARN_VERSION) < (1, 8):
        return LogisticRegression(C=c, penalty="l1", solver="liblinear",
                                  random_state=seed, max_iter=max_iter)
    return LogisticRegression(C=c, l1_ratio=1.0, solver="liblinear", random_state=seed,
                              max_iter=max_iter)


@register_method
class Lasso(SelectionMethod):
    name = "lasso"
    strategies = ("importance",)

    def score_fields(self, ctx: SearchContext, fields: list[str], strategy: str) -> FieldScores:
        rows = option(ctx, "lasso_rows", 20_000 if ctx.fast else 200_000, int)
        x, y, _, _ = target_encoded(ctx.dataset, fields, "bucket", ctx.seed, rows)
        x = StandardScaler().fit_transform(x)
        path = np.zeros((len(PATH), len(fields)))
        for i, c in enumerate(PATH):
            path[i] = np.abs(l1_logistic(float(c), ctx.seed).fit(x, y).coef_[0])
        scores = path.mean(0)
        return FieldScores(scores={f: float(s) for f, s in zip(fields, scores, strict=True)},
                           extra={"encoding": "target (out-of-fold)",
                                  "C_path": PATH.tolist()})
