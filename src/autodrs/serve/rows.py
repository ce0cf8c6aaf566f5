"""Rows from a JSON request, checked and turned into canonical columns.

A request is a JSON array of row objects (or ``{"rows": [...]}``), each with a value for
every field of the schema; other keys (an id, the label) are ignored. Values become what a
training table would hold for the same values after the schema's casts (categorical: text,
as Polars writes numbers and booleans; numerical: float; sequence: a list of text tokens),
so a row served over HTTP is encoded exactly like the same row read from a file.
"""

from __future__ import annotations

import json
import math
from typing import Any

import polars as pl

from autodrs.data.schema import Field, Schema
from autodrs.serve.encoder import Columns


class RowError(ValueError):
    """A request whose rows cannot be used; the message names the row and the field."""

    status = 422


class TooLarge(RowError):
    """A request over the size limits (rows or bytes)."""

    status = 413


class BadJson(RowError):
    status = 400


def parse_json(body: bytes) -> Any:
    """Decode a request body; NaN and Infinity are not JSON and are refused."""

    def refuse(name: str) -> None:
        raise ValueError(f"{name} is not allowed in JSON")

    try:
        return json.loads(body, parse_constant=refuse)
    except (ValueError, UnicodeDecodeError) as e:
        raise BadJson(f"request body is not valid JSON: {e}") from e


def rows_to_columns(payload: Any, schema: Schema, max_rows: int) -> Columns:
    """Check ``payload`` (a decoded JSON request) and return its rows as canonical columns:
    one list per field of text (categorical), floats (numerical) or token lists (sequence),
    ``None`` where a value is null."""
    rows = payload.get("rows") if isinstance(payload, dict) else payload
    if not isinstance(rows, list):
        raise RowError('the body must be a JSON array of row objects, or {"rows": [...]}')
    if len(rows) > max_rows:
        raise TooLarge(f"{len(rows)} rows in one request; the limit is {max_rows}")
    for i, row in enumerate(rows):
        if not isinstance(row, dict):
            raise RowError(f"row {i} is not an object (got {_json_type(row)})")
        missing = [f.name for f in schema.fields if f.name not in row]
        if missing:
            raise RowError(f"row {i} is missing fields: {', '.join(missing)}")
    return {f.name: _column(f, [row[f.name] for row in rows]) for f in schema.fields}


def _column(f: Field, values: list[Any]) -> list[Any]:
    if f.kind == "numerical":
        for i, v in enumerate(values):
            if v is not None and (isinstance(v, bool) or not isinstance(v, int | float)):
                raise _wrong_type(i, f, v, "a number or null")
            if isinstance(v, float) and not math.isfinite(v):
                raise RowError(f"row {i}, field {f.name!r}: {v} is not a finite number")
        return [None if v is None else float(v) for v in values]
    if f.kind == "sequence":
        return [_tokens(i, f, v) for i, v in enumerate(values)]
    return _as_text(f, values)


def _as_text(f: Field, values: list[Any]) -> list[str | None]:
    """Categorical values as the text Polars gives when it casts them, the cast the schema
    applies to a table read from a file."""
    out: list[str | None] = [None] * len(values)
    floats: list[int] = []
    for i, v in enumerate(values):
        if v is None:
            continue
        if isinstance(v, str):
            out[i] = v
        elif isinstance(v, bool):
            out[i] = "true" if v else "false"
        elif isinstance(v, int):
            out[i] = str(v)
        elif isinstance(v, float):
            if not math.isfinite(v):
                raise RowError(f"row {i}, field {f.name!r}: {v} is not a finite number")
            floats.append(i)
        else:
            raise _wrong_type(i, f, v, "a string, number, boolean or null")
    if floats:
        text = pl.Series([values[i] for i in floats], dtype=pl.Float64).cast(pl.String)
        for i, t in zip(floats, text.to_list(), strict=True):
            out[i] = t
    return out


def _tokens(i: int, f: Field, value: Any) -> list[str] | None:
    """A sequence value (a list, or text joined by the field's separator) as tokens."""
    if value is None:
        return None
    if isinstance(value, str):
        parts = (t.strip() for t in value.split(f.sep))
        return [t for t in parts if t]
    if not isinstance(value, list):
        raise _wrong_type(i, f, value, "a list of strings, a string or null")
    tokens = []
    for t in value:
        if isinstance(t, str):
            tokens.append(t)
        elif isinstance(t, int) and not isinstance(t, bool):
            tokens.append(str(t))
        else:
            raise _wrong_type(i, f, t, "a list of strings or integers")
    return tokens


def _wrong_type(i: int, f: Field, value: Any, expected: str) -> RowError:
    return RowError(f"row {i}, field {f.name!r} ({f.kind}): expected {expected}, "
                    f"got {_json_type(value)}")


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__
