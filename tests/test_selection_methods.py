"""Selection methods against trivial stand-ins: the Lasso baseline is L1 on every allowed
scikit-learn, and a search that finished nothing says so instead of presenting a subset."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from sklearn.preprocessing import StandardScaler

from autodrs.data.dataset import Dataset
from autodrs.methods.selection.lasso import l1_logistic
from autodrs.methods.selection.tabular import target_encoded
from autodrs.models.backbones import backbone_spec
from autodrs.search.base import SearchContext, SearchError, get_method
from autodrs.train.trainer import TrainConfig


@pytest.mark.parametrize("version", [(1, 4), (1, 7), (1, 8), (1, 9)])
def test_lasso_is_l1_on_every_allowed_sklearn(version: tuple[int, int],
                                              synthetic_20k: Dataset) -> None:
    truth = synthetic_20k.info["truth"]
    fields = [*truth["relevant"], *truth["noise"]]
    x, y, _, _ = target_encoded(synthetic_20k, fields, "bucket", 0, 8_000)
    x = StandardScaler().fit_transform(x)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # penalty= is deprecated from 1.8
        model = l1_logistic(0.003, 0, version)
        params = model.get_params()
        # the parameter that makes it L1 on that version (before 1.8 l1_ratio alone is
        # ignored, and the default penalty is L2)
        if version < (1, 8):
            assert params["penalty"] == "l1"
        else:
            assert params["l1_ratio"] == 1.0 and params["penalty"] != "l2"
        coef = dict(zip(fields, model.fit(x, y).coef_[0], strict=True))
    # an L1 penalty this strong zeroes the noise fields exactly and keeps strong ones; an
    # L2 penalty only shrinks every coefficient
    assert all(coef[f] == 0.0 for f in truth["noise"]), coef
    assert sum(coef[f] != 0.0 for f in truth["relevant"]) >= 3, coef
    assert np.isfinite(list(coef.values())).all()


def test_marlfs_with_no_finished_trial_is_an_error(tiny_synthetic: Dataset,
                                                   fast_config: TrainConfig) -> None:
    ctx = SearchContext(tiny_synthetic, backbone_spec("dnn", 8), fast_config, seed=0,
                        budget_seconds=0.0, trials=4, options={"fast": True})
    with pytest.raises(SearchError, match="marlfs found no field subset: no trial"):
        get_method("marlfs").search(ctx)
