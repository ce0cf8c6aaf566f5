"""Tree-ensemble baselines of ERASE besides GBDT: random-forest impurity importance and
XGBoost-style gain, on one column per field (``tabular.target_encoded``: categorical and
sequence fields target-encoded out of fold, numerical fields as standardised values).

``rf``: ``RandomForestClassifier`` with ERASE's 10 trees; a field's score is its share of
the impurity decrease (``feature_importances_``). Fully grown trees split on noise until
every leaf is pure, and impurity importance credits those splits (most to fields with many
distinct values), so leaves keep at least ``rf_min_leaf`` (20) rows; ERASE grows them fully.

``xgb``: ERASE's ``XGBClassifier(n_estimators=10)`` (depth 6, learning rate 0.3) rebuilt on
scikit-learn's ``HistGradientBoostingClassifier`` (10 boosting rounds, depth 6, learning
rate 0.3, no L2), so no extra dependency: a field's score is its share of the total split
gain over all trees, XGBoost's ``importance_type="total_gain"``, read from the fitted
trees' nodes.

Options: ``rf_rows`` / ``xgb_rows`` (train rows used, 200,000), ``rf_trees`` (10),
``rf_min_leaf`` (20), ``xgb_rounds`` (10).
"""

from __future__ import annotations

import numpy as np
from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestClassifier

from autodrs.methods.selection.common import FieldScores, SelectionMethod, option
from autodrs.methods.selection.tabular import target_encoded
from autodrs.search.base import SearchContext, SearchError, register_method


def shares(values: np.ndarray, fields: list[str]) -> dict[str, float]:
    """Each field's share of the total (all zero when nothing was credited)."""
    total = float(values.sum())
    out = values / total if total > 0 else values
    return {f: float(v) for f, v in zip(fields, out, strict=True)}


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
class RandomForest(SelectionMethod):
    name = "rf"
    strategies = ("importance",)

    def score_fields(self, ctx: SearchContext, fields: list[str], strategy: str) -> FieldScores:
        rows = option(ctx, "rf_rows", 5_000 if ctx.fast else 200_000, int)
        trees = option(ctx, "rf_trees", 10, int)
        leaf = option(ctx, "rf_min_leaf", 20, int)
        if trees < 1 or leaf < 1:
            raise SearchError(f"options rf_trees and rf_min_leaf must be >= 1, got {trees} "
                              f"and {leaf}")
        x, y, _, _ = target_encoded(ctx.dataset, fields, "raw", ctx.seed, rows)
        model = RandomForestClassifier(n_estimators=trees, min_samples_leaf=leaf,
                                       random_state=ctx.seed, n_jobs=1).fit(x, y)
        return FieldScores(scores=shares(model.feature_importances_, fields),
                           extra={"trees": trees, "min_samples_leaf": leaf,
                                  "encoding": "target (out-of-fold); numerical raw"})


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
        return FieldScores(scores=shares(total_gain(model, len(fields)), fields),
                           extra={"rounds": int(model.n_iter_), "importance": "total gain",
                                  "encoding": "target (out-of-fold); numerical raw"})
