"""The AUC autodrs computes equals scikit-learn's, ties and dtypes included."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from autodrs.train.metrics import auc


@pytest.mark.parametrize("seed", range(6))
def test_auc_equals_scikit_learn_with_ties_and_float32(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(2, 5000))
    labels = rng.integers(0, 2, n).astype(np.uint8)
    labels[:2] = [0, 1]
    # few distinct values so many ties, in float32 as the trainer scores
    scores = (np.round(rng.random(n) * rng.integers(1, 50)) / 7 + labels * 0.1).astype(np.float32)
    assert auc(labels, scores) == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)
    assert auc(labels.astype(float), scores.astype(np.float64)) == pytest.approx(
        roc_auc_score(labels, scores), abs=1e-12)


def test_auc_of_a_perfect_a_reversed_and_a_constant_score():
    labels = np.array([0, 0, 1, 1])
    assert auc(labels, np.array([0.1, 0.2, 0.8, 0.9])) == 1.0
    assert auc(labels, np.array([0.9, 0.8, 0.2, 0.1])) == 0.0
    assert auc(labels, np.zeros(4)) == 0.5


def test_auc_refuses_one_class_and_nan():
    with pytest.raises(ValueError, match="both classes"):
        auc(np.ones(5), np.arange(5.0))
    with pytest.raises(ValueError, match="NaN"):
        auc(np.array([0, 1]), np.array([0.1, np.nan]))


def test_logloss_equals_scikit_learn_over_several_blocks_with_clipped_extremes():
    from sklearn.metrics import log_loss

    from autodrs.train.metrics import logloss

    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 10_000).astype(np.float32)
    probs = rng.random(10_000)
    probs[:4] = [0.0, 1.0, 1e-12, 1 - 1e-12]  # clipped to [1e-7, 1 - 1e-7] first
    want = log_loss(labels, np.clip(probs, 1e-7, 1 - 1e-7), labels=[0, 1])
    assert logloss(labels, probs, block=999) == pytest.approx(want, rel=1e-12)
    assert logloss(labels.astype(np.uint8), probs) == pytest.approx(want, rel=1e-12)
    with pytest.raises(ValueError, match="0/1 labels"):
        logloss(np.array([0, 2]), np.array([0.5, 0.5]))


def test_logloss_of_millions_of_rows_holds_blocks_not_copies():
    import tracemalloc

    from autodrs.train.metrics import logloss

    rng = np.random.default_rng(1)
    labels = rng.integers(0, 2, 2_000_000).astype(np.float32)
    probs = rng.random(2_000_000)
    tracemalloc.start()
    logloss(labels, probs)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 16e6  # a float64 copy of the scores alone would be 16 MB
