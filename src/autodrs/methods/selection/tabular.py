"""Fields as one numeric column each, for the classic (scikit-learn) baselines.

Categorical and sequence fields are target-encoded: an id becomes the smoothed click rate
of its train rows, ``(clicks + m * prior) / (rows + m)``, and a sequence the mean over its
ids. On train the encoding is out-of-fold (each fold encoded with statistics of the other
folds), otherwise every id would carry its own label and a field of rare values (noise
included) would look predictive. Numerical fields are either kept as standardised values
(``numerical="raw"``, for trees) or bucketed at the schema's equal-frequency boundaries and
target-encoded (``numerical="bucket"``, so a linear model sees a non-monotone effect).
"""

from __future__ import annotations

import numpy as np
import torch

from autodrs.data.dataset import Dataset, EncodedData
from autodrs.data.schema import PAD
from autodrs.methods.selection.subset import field_column

FOLDS = 5
SMOOTHING = 20.0


def _ids(data: EncodedData, ds: Dataset, name: str) -> np.ndarray:
    """Ids ``[N, L]`` of a field (``PAD`` = 0 marks no id); numbers become bucket ids."""
    f = ds.schema.field(name)
    col = field_column(data, ds.schema, name).numpy()
    if f.kind == "numerical":
        return (np.searchsorted(np.asarray(f.boundaries or []), col) + 1)[:, None]
    return col[:, None] if col.ndim == 1 else col


def _encode(ids: np.ndarray, sums: np.ndarray, counts: np.ndarray, prior: float) -> np.ndarray:
    values = ((sums + SMOOTHING * prior) / (counts + SMOOTHING))[ids]
    mask = ids != PAD
    n = mask.sum(1)
    return np.where(n > 0, (values * mask).sum(1) / np.maximum(n, 1), prior)


def _stats(ids: np.ndarray, y: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    mask = ids != PAD
    flat = ids[mask]
    labels = np.broadcast_to(y[:, None], ids.shape)[mask]
    return (np.bincount(flat, weights=labels, minlength=size),
            np.bincount(flat, minlength=size).astype(float))


def target_encoded(ds: Dataset, fields: list[str], numerical: str = "bucket",
                   seed: int = 0, rows: int | None = None
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``(X_train, y_train, X_valid, y_valid)``, one column per field in ``fields`` order.
    ``rows`` caps the train rows used (a seeded sample)."""
    if numerical not in ("bucket", "raw"):
        raise ValueError(f"numerical must be 'bucket' or 'raw', got {numerical!r}")
    rng = np.random.default_rng(seed)
    train = ds.train
    if rows is not None and rows < len(train):
        idx = np.sort(rng.choice(len(train), size=rows, replace=False))
        train = train.subset(torch.from_numpy(idx))
    y = train.label.numpy().astype(float)
    prior = float(y.mean())
    fold = rng.integers(0, FOLDS, size=len(y))
    x_train = np.zeros((len(y), len(fields)))
    x_valid = np.zeros((len(ds.valid), len(fields)))
    for j, name in enumerate(fields):
        kind = ds.schema.field(name).kind
        if kind == "numerical" and numerical == "raw":
            x_train[:, j] = field_column(train, ds.schema, name).numpy()
            x_valid[:, j] = field_column(ds.valid, ds.schema, name).numpy()
            continue
        ids, ids_valid = _ids(train, ds, name), _ids(ds.valid, ds, name)
        size = int(max(ids.max(), ids_valid.max())) + 1
        for k in range(FOLDS):
            inside = fold == k
            sums, counts = _stats(ids[~inside], y[~inside], size)
            x_train[inside, j] = _encode(ids[inside], sums, counts, prior)
        sums, counts = _stats(ids, y, size)
        x_valid[:, j] = _encode(ids_valid, sums, counts, prior)
    return x_train, y, x_valid, ds.valid.label.numpy().astype(float)


def importance_shares(values: np.ndarray, fields: list[str]) -> dict[str, float]:
    """Each field's share of a model's total importance (all zero when nothing was
    credited)."""
    total = float(values.sum())
    out = values / total if total > 0 else values
    return {f: float(v) for f, v in zip(fields, out, strict=True)}
