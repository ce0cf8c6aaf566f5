"""Encoding a few rows fast: the schema's fitted encoders as plain Python lookups.

``Schema.transform`` encodes a table with a few Polars operations per field; each costs a
fixed overhead, which for a request of one or a few rows outweighs the model itself many
times over. ``RowEncoder`` applies the same encoders with dictionary lookups on the
canonical values of ``rows.py`` (text, float, token lists): ids for known values, OOV for
unseen ones, MISSING for nulls, the schema's own ``hash_ids`` for hashed fields,
``(x - mean) / std`` (after ``log1p`` for log fields) for numbers with the
train mean for nulls, and sequences cut to the field's length, padded, MISSING when empty.
Tests check it agrees with ``Schema.transform``.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import polars as pl
import torch

from autodrs.data.dataset import Batch
from autodrs.data.schema import FIRST_ID, MISSING, OOV, Field, Schema, hash_ids

Columns = dict[str, list[Any]]


class RowEncoder:
    """Encodes canonical columns (one list of values per field) into a ``Batch``."""

    def __init__(self, schema: Schema) -> None:
        self.schema = schema
        self.vocab: dict[str, dict[str, int]] = {
            f.name: {v: i + FIRST_ID for i, v in enumerate(f.vocab or [])}
            for f in schema.fields if f.kind != "numerical" and not f.hash_buckets
        }

    def encode(self, columns: Columns) -> Batch:
        schema = self.schema
        n = len(columns[schema.fields[0].name])
        cats = [self._ids(schema.field(name), columns[name]) for name in schema.categorical]
        cat = np.array(cats, dtype=np.int64).T if cats else np.zeros((n, 0), np.int64)
        nums = [self._numbers(schema.field(name), columns[name]) for name in schema.numerical]
        with np.errstate(over="ignore"):  # too-large numbers are refused by the predictor
            num = (np.array(nums, dtype=np.float64).T.astype(np.float32) if nums
                   else np.zeros((n, 0), np.float32))
        seq = {name: torch.from_numpy(self._sequences(schema.field(name), columns[name]))
               for name in schema.sequence}
        return Batch(torch.from_numpy(np.ascontiguousarray(cat)),
                     torch.from_numpy(np.ascontiguousarray(num)), seq)

    def _ids(self, f: Field, values: list[str | None]) -> list[int]:
        if f.hash_buckets:
            known = [v for v in values if v is not None]
            hashed = iter(_hash_ids(f, known))
            return [MISSING if v is None else next(hashed) for v in values]
        vocab = self.vocab[f.name]
        return [MISSING if v is None else vocab.get(v, OOV) for v in values]

    @staticmethod
    def _numbers(f: Field, values: list[float | None]) -> list[float]:
        out = []
        for v in values:
            if v is None:
                out.append(0.0)  # the train mean after standardisation
                continue
            if f.transform == "log":
                v = math.log1p(max(v, 0.0))
            out.append((v - f.mean) / f.std)
        return out

    def _sequences(self, f: Field, values: list[list[str] | None]) -> np.ndarray:
        out = np.zeros((len(values), f.max_len), np.int64)
        heads = [(v or [])[-f.max_len:] for v in values]  # the last items, as in training
        if f.hash_buckets:
            flat = iter(_hash_ids(f, [t for h in heads for t in h]))
            ids = [[next(flat) for _ in h] for h in heads]
        else:
            vocab = self.vocab[f.name]
            ids = [[vocab.get(t, OOV) for t in h] for h in heads]
        for row, row_ids in enumerate(ids):
            if row_ids:
                out[row, : len(row_ids)] = row_ids
            else:
                out[row, 0] = MISSING
        return out


def columns_to_frame(columns: Columns, schema: Schema) -> pl.DataFrame:
    """Canonical columns as a table in the dtypes ``Schema.transform`` reads."""
    dtypes = {"categorical": pl.String, "numerical": pl.Float64,
              "sequence": pl.List(pl.String)}
    return pl.DataFrame([pl.Series(f.name, columns[f.name], dtype=dtypes[f.kind])
                         for f in schema.fields])


def merge_columns(parts: list[Columns]) -> Columns:
    """The rows of several requests as one set of columns, in order."""
    if len(parts) == 1:
        return parts[0]
    return {name: [v for part in parts for v in part[name]] for name in parts[0]}


def _hash_ids(f: Field, values: list[str]) -> list[int]:
    """Ids of hashed values: the schema's ``hash_ids`` itself, so serving and training can
    never hash differently."""
    if not values:
        return []
    return hash_ids(pl.Series(values, dtype=pl.String), f.hash_buckets).to_list()
