"""XGBoost-gain baseline of ERASE, on scikit-learn: ERASE's ``XGBClassifier(n_estimators=10)``
(depth 6, learning rate 0.3) rebuilt as ``HistGradientBoostingClassifier`` (10 boosting
rounds, depth 6, learning rate 0.3, no L2), so no extra dependency. The fields are one
column each (``tabular.target_encoded``: categorical and sequence fields target-encoded out
of fold, numerical fields as standardised values). A field's score is its share of the
total split gain over all trees, XGBoost's ``importance_type="total_gain"``, read from the
fitted trees' nodes.

Options: ``xgb_rows`` (train rows used, 200,000), ``xgb_rounds`` (10).
"""

from __future__ import annotations

import numpy as np
from sklearn.ensemble import HistGradientBoostingClassifier

from autodrs.methods.selection.common import FieldScores, SelectionMethod, option
from autodrs.methods.selection.tabular import importance_shares, target_encoded
from autodrs.search.base import SearchContext, SearchError, register_method


def total_gain(model: HistGradientBoostingClassifier, n_features: int) -> np.ndarray:
    """Sum of split gains per feature over every tree of a fitted histogram GBDT."""
    gains = np.zeros(n_features)
    predictors = getattr(model, "_predictors", None)
    if predictors is None:
        raise SearchError("this scikit-learn's HistGradientBoostingClassifier does not expose "
                          "its trees (_predictors); the xgb baseline cannot read the gains")
    for round_trees in predictors:
        for tree in round_trees:
            nodes = tree.nodes
            split = ~nodes["is_leaf"].astype(bool)
            np.add.at(gains, nodes["feature_idx"][split], nodes["gain"][split])
    return gains



@register_method
class XGB(SelectionMethod):
    name = "xgb"
    strategies = ("importance",)

    def score_fields(self, ctx: SearchContext, fields: list[str], strategy: str) -> FieldScores:
        rows = option(ctx, "xgb_rows", 5_000 if ctx.fast else 200_000, int)
        rounds = option(ctx, "xgb_rounds", 10, int)
        if rounds < 1:
            raise SearchError(f"option xgb_rounds must be >= 1, got {rounds}")
        x, y, _, _ = target_encoded(ctx.dataset, fields, "raw", ctx.seed, rows)
        model = HistGradientBoostingClassifier(
            max_iter=rounds, learning_rate=0.3, max_depth=6, max_leaf_nodes=None,
            l2_regularization=0.0, early_stopping=False, random_state=ctx.seed).fit(x, y)
        return FieldScores(scores=importance_shares(total_gain(model, len(fields)), fields),
                           extra={"rounds": int(model.n_iter_), "importance": "total gain",
                                  "encoding": "target (out-of-fold); numerical raw"})
