"""GBDT baseline: impurity importance of gradient-boosted trees.

``GradientBoostingClassifier`` with ERASE's settings (100 trees of depth 3, learning rate
0.1, early stop after 3 rounds without gain on a held-out tenth) on one column per field:
categorical and sequence fields target-encoded out of fold, numerical fields as their
standardised values (trees need no buckets). A field's score is its share of the total
impurity decrease (``feature_importances_``).

Options: ``gbdt_rows`` (train rows used, default 200,000).
"""

from __future__ import annotations

from sklearn.ensemble import GradientBoostingClassifier

from autodrs.methods.selection.common import FieldScores, SelectionMethod, option
from autodrs.methods.selection.tabular import target_encoded
from autodrs.search.base import SearchContext, register_method


@register_method
class GBDT(SelectionMethod):
    name = "gbdt"
    strategies = ("importance",)

    def score_fields(self, ctx: SearchContext, fields: list[str], strategy: str) -> FieldScores:
        rows = option(ctx, "gbdt_rows", 5_000 if ctx.fast else 200_000, int)
        x, y, _, _ = target_encoded(ctx.dataset, fields, "raw", ctx.seed, rows)
        model = GradientBoostingClassifier(
            n_estimators=20 if ctx.fast else 100, max_depth=3, learning_rate=0.1,
            n_iter_no_change=3, random_state=ctx.seed).fit(x, y)
        scores = model.feature_importances_
        return FieldScores(scores={f: float(s) for f, s in zip(fields, scores, strict=True)},
                           extra={"trees": int(model.n_estimators_),
                                  "encoding": "target (out-of-fold); numerical raw"})
