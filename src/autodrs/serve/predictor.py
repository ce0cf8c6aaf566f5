"""Raw rows in, probabilities out: a model with the encoders it was trained with.

Every serving path (``predict`` over files, the HTTP endpoint, ``tune-serving``) goes
through ``Predictor``, so a row is encoded exactly as the training split was: the schema
fitted on train maps unseen categories to the OOV id and missing values to MISSING (or the
train mean for numbers).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import torch
from torch import nn

from autodrs.data.dataset import Batch, EncodedData
from autodrs.data.errors import DataError
from autodrs.data.schema import FIRST_ID, Schema
from autodrs.runfolder import load_model
from autodrs.serve.encoder import Columns, RowEncoder, columns_to_frame

# above this many rows Polars' vectorised encoding beats per-value Python lookups
FAST_ENCODE_ROWS = 4096


class Predictor:
    """A loaded model and its fitted schema. ``model`` is any module whose ``forward`` takes
    a ``Batch`` and returns one logit per row (every ``CTRModel`` does)."""

    def __init__(self, model: nn.Module, schema: Schema) -> None:
        if not schema.fitted:
            raise DataError("the schema is not fitted; a predictor needs the train encoders")
        self.model = model.eval()
        self.schema = schema
        self.row_encoder = RowEncoder(schema)

    @classmethod
    def from_folder(cls, folder: str | Path) -> Predictor:
        """Load a saved model folder (checksums verified, no code executed)."""
        model, schema = load_model(folder)
        return cls(model, schema)

    @property
    def feature_names(self) -> list[str]:
        return self.schema.field_names

    def missing_columns(self, columns: list[str]) -> list[str]:
        present = set(columns)
        return [n for n in self.feature_names if n not in present]

    def check_columns(self, columns: list[str], where: str = "the table") -> None:
        missing = self.missing_columns(columns)
        if missing:
            raise DataError(f"columns missing from {where}: {', '.join(missing)} "
                            f"(the model needs {', '.join(self.feature_names)})")

    def encode(self, frame: Any) -> Batch:
        """Encode raw rows (see ``as_polars`` for the tables taken) with the train encoders;
        the label column is never needed."""
        df = as_polars(frame)
        self.check_columns(df.columns)
        check_float_categories(self.schema, df)
        with np.errstate(over="ignore"):  # too-large numbers are refused in predict_batch
            arrays = self.schema.transform(df.select(self.feature_names), require_label=False)
        data = EncodedData.from_arrays(arrays)
        return Batch(data.cat, data.num, data.seq)

    @torch.inference_mode()
    def predict_batch(self, batch: Batch) -> np.ndarray:
        """Click probabilities of an encoded batch. A number too large for the model's
        float32 inputs after standardisation is an error, not a NaN score."""
        finite = torch.isfinite(batch.num)
        if not bool(finite.all()):
            row, col = (int(i) for i in torch.nonzero(~finite)[0])
            raise DataError(f"row {row + 1}, field {self.schema.numerical[col]!r}: the value "
                            "is too large for the model (beyond float32 after "
                            "standardisation)")
        return torch.sigmoid(self.model(batch)).float().numpy().astype(np.float64)

    def predict_frame(self, frame: Any) -> np.ndarray:
        """Click probabilities of raw rows: a Polars or pandas DataFrame or an Arrow table."""
        return self.predict_batch(self.encode(frame))

    def predict_columns(self, columns: Columns) -> np.ndarray:
        """Click probabilities of canonical columns (see ``rows.py``): few rows go through
        the Python ``RowEncoder``, many through the vectorised ``Schema.transform``."""
        rows = len(columns[self.feature_names[0]])
        if rows <= FAST_ENCODE_ROWS:
            return self.predict_batch(self.row_encoder.encode(columns))
        return self.predict_frame(columns_to_frame(columns, self.schema))


def check_float_categories(schema: Schema, df: pl.DataFrame) -> None:
    """Refuse a float column of a categorical field whose values training holds as
    integers (``7.0`` where training saw ``"7"``; pandas stores an integer column with
    missing values as floats): scored as written they would all be unseen values, a
    silently wrong score. The HTTP endpoint refuses such numbers the same way."""
    for f in schema.fields:
        col = df[f.name]
        if f.kind != "categorical" or f.hash_buckets or not f.vocab or \
                not col.dtype.is_float():
            continue
        vocab = pl.Series(f.vocab, dtype=pl.String).implode()
        whole = col.is_finite() & (col == col.floor())
        as_int = pl.select(pl.when(whole).then(col).otherwise(None)).to_series()
        ints = as_int.cast(pl.Int64, strict=False).cast(pl.String)
        other_spelling = (~col.cast(pl.String).is_in(vocab) & ints.is_in(vocab)).fill_null(
            False)
        if other_spelling.any():
            row = int(other_spelling.arg_true()[0])
            raise DataError(
                f"column {f.name!r} holds {col[row]!r} as a float, which training holds "
                f"as {ints[row]!r}: scored as written it would be an unseen value. Pass "
                "the column as integers or text (in pandas, .astype('Int64') keeps "
                "missing values)")


def as_polars(frame: Any) -> pl.DataFrame:
    """A table of raw rows as a Polars DataFrame: a Polars DataFrame as it is, a pandas
    DataFrame (its index dropped, NaN as null) or a pyarrow Table or RecordBatch converted.
    Anything else is a ``DataError`` naming its type."""
    if isinstance(frame, pl.DataFrame):
        return frame
    pandas = sys.modules.get("pandas")  # only a frame of an imported pandas can be one
    if pandas is not None and isinstance(frame, pandas.DataFrame):
        try:
            return pl.from_pandas(frame, include_index=False)
        except (pl.exceptions.PolarsError, TypeError, ValueError) as e:
            raise DataError(f"cannot read the pandas DataFrame: {e}") from e
    import pyarrow as pa

    if isinstance(frame, pa.Table | pa.RecordBatch):
        result = pl.from_arrow(frame)
        assert isinstance(result, pl.DataFrame)
        return result
    raise DataError(f"expected a Polars or pandas DataFrame or a pyarrow Table of rows, got "
                    f"{type(frame).__module__}.{type(frame).__qualname__}")


def sample_batch(schema: Schema, rows: int, seed: int = 0) -> Batch:
    """Random valid encoded inputs for ``schema``: ids drawn over each field's whole table
    (reserved ids included), standardised numbers, sequences with random padding."""
    g = torch.Generator().manual_seed(seed)
    cats = [torch.randint(0, schema.field(n).vocab_size, (rows,), generator=g)
            for n in schema.categorical]
    cat = torch.stack(cats, 1) if cats else torch.zeros((rows, 0), dtype=torch.long)
    num = torch.randn((rows, len(schema.numerical)), generator=g)
    seq = {}
    for name in schema.sequence:
        f = schema.field(name)
        ids = torch.randint(FIRST_ID, max(f.vocab_size, FIRST_ID + 1), (rows, f.max_len),
                            generator=g)
        lengths = torch.randint(1, f.max_len + 1, (rows, 1), generator=g)
        seq[name] = torch.where(torch.arange(f.max_len) < lengths, ids, 0)
    return Batch(cat, num, seq)


def sample_rows(schema: Schema, rows: int, seed: int = 0) -> pl.DataFrame:
    """Random raw rows for ``schema`` (known values and some unseen ones), for measuring
    the whole serving path from raw rows."""
    rng = np.random.default_rng(seed)
    columns: dict[str, pl.Series] = {}
    for f in schema.fields:
        if f.kind == "numerical":
            values = rng.normal(f.mean, f.std, rows)
            if f.transform == "log":
                values = np.expm1(np.abs(values))
            columns[f.name] = pl.Series(f.name, values, dtype=pl.Float64)
            continue
        vocab = f.vocab or [f"v{i}" for i in range(max(1, f.hash_buckets))]
        picks = [vocab[i] if i < len(vocab) else f"unseen-{i}"
                 for i in rng.integers(0, len(vocab) + 1, rows)]
        if f.kind == "categorical":
            columns[f.name] = pl.Series(f.name, picks, dtype=pl.String)
        else:
            columns[f.name] = pl.Series(f.name, [[p] for p in picks], dtype=pl.List(pl.String))
    return pl.DataFrame(columns)
