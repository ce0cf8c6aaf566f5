"""Several labels through the Python API: a pandas frame with two 0/1 columns, trained and
searched with ``labels=``, scored per task in label order, and alike after save and load."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import autodrs
from autodrs.data.errors import DataError


@pytest.fixture(scope="module")
def two_labels() -> pd.DataFrame:
    """``click`` is ``x0 > 0`` and ``buy`` is ``x1 > 0.5``: each label reads its own field."""
    rng = np.random.default_rng(1)
    x = rng.normal(0, 1, (3000, 3))
    frame = pd.DataFrame({f"x{k}": x[:, k] for k in range(3)})
    frame["click"] = (x[:, 0] > 0).astype(np.int8)
    frame["buy"] = (x[:, 1] > 0.5).astype(np.int8)
    return frame


def test_train_with_labels_scores_each_task_in_label_order(
        two_labels: pd.DataFrame, tmp_path: Path) -> None:
    done = autodrs.train(two_labels, labels=["click", "buy"], model="deepfm", epochs=8,
                         batch_size=128, threads=1, seed=0)
    test = done.metrics["test"]
    assert test["auc:click"] > 0.95 and test["auc:buy"] > 0.95
    scores = done.predict(two_labels.drop(columns=["click", "buy"]))
    assert scores.shape == (len(two_labels), 2)
    # column k follows label k: click's column tracks x0, buy's tracks x1
    corr = np.corrcoef(np.c_[scores, two_labels[["x0", "x1"]].to_numpy()].T)
    assert corr[0, 2] > 0.5 > abs(corr[0, 3]) and corr[1, 3] > 0.5 > abs(corr[1, 2])
    done.save(tmp_path / "model")
    again = autodrs.load(tmp_path / "model").predict(two_labels.head(50))
    np.testing.assert_allclose(again, scores[:50], rtol=1e-5, atol=1e-6)


def test_search_with_labels_returns_a_multitask_spec_and_per_task_metrics(
        two_labels: pd.DataFrame) -> None:
    result = autodrs.search(two_labels, labels=["click", "buy"], methods="mtl", fast=True,
                            epochs=2, threads=1, seed=0)
    assert result.spec.multitask is not None
    assert result.spec.multitask.backbone in ("shared_bottom", "mmoe")
    assert {"auc:click", "auc:buy"} <= set(result.metrics["test"])
    assert result.predict(two_labels.head(5)).shape == (5, 2)


def test_labels_that_are_not_columns_are_named(two_labels: pd.DataFrame) -> None:
    with pytest.raises(DataError, match="label column 'nope' not found"):
        autodrs.train(two_labels, labels=["click", "nope"], epochs=1, threads=1)
