"""Random-forest baseline of ERASE: impurity importance of a forest on one column per field
(``tabular.target_encoded``: categorical and sequence fields target-encoded out of fold,
numerical fields as standardised values).

``RandomForestClassifier`` with ERASE's 10 trees; a field's score is its share of the
impurity decrease (``feature_importances_``). Fully grown trees split on noise until every
leaf is pure, and impurity importance credits those splits (most to fields with many
distinct values), so leaves keep at least ``rf_min_leaf`` (20) rows; ERASE grows them fully.

Options: ``rf_rows`` (train rows used, 200,000), ``rf_trees`` (10), ``rf_min_leaf`` (20).
"""

from __future__ import annotations

from sklearn.ensemble import RandomForestClassifier

from autodrs.methods.selection.common import FieldScores, SelectionMethod, option
from autodrs.methods.selection.tabular import importance_shares, target_encoded
from autodrs.search.base import SearchContext, SearchError, register_method


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
        return FieldScores(scores=importance_shares(model.feature_importances_, fields),
                           extra={"trees": trees, "min_samples_leaf": leaf,
                                  "encoding": "target (out-of-fold); numerical raw"})
