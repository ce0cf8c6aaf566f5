"""Rows from a JSON request, checked and turned into canonical columns.

A request is a JSON array of row objects (or ``{"rows": [...]}``), each with a value for
every field of the schema; other keys (an id, the label) are ignored. Values become what a
training table holds for them (numerical: float; categorical: text; sequence: a list of text
tokens), so a row served over HTTP is encoded exactly like the same row read from a file.

Categorical values and sequence tokens are matched as text, as training matched them. A JSON
string is used as sent. A JSON number or boolean becomes the text a table holds for it (an
integer its digits, 7 -> "7"; a float Polars' text for it, 49.0 -> "49.0"; a boolean "true"
or "false") and is used when that text is one of the field's training values, or when it is
an integer and the field's integer-looking training values are all written plainly (no
leading zeros or signs), so that an unseen integer is an unseen value. Otherwise the request
gets 422 naming the row, the field and the value, with training's spelling of the same number
where it has one (49.0 -> "49", 6513 -> "06513"): such a number may be another spelling of a
training value, and scoring it as unseen would be silently wrong. A value meant as unseen is
sent as a JSON string. A hashed field keeps no training values to compare with, so it takes
strings only.

Bounds on what a row can need: strings of at most ``MAX_VALUE_CHARS`` characters, token lists
of at most ``MAX_SEQUENCE_ITEMS`` items, JSON nested at most ``MAX_DEPTH`` levels (a request
needs 4: ``{"rows": [{"tags": [...]}]}``), and valid Unicode text.

``app.request_model`` describes the same request as pydantic models, for the OpenAPI schema
at ``/docs``; ``RowReader`` stays the one that checks a request, since the number rule depends
on each field's training values, which a JSON schema cannot state.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

import numpy as np
import polars as pl

from autodrs.data.schema import Field, Schema
from autodrs.serve.encoder import Columns

MAX_VALUE_CHARS = 4_096  # ids, names and URLs fit; a 50 MB "value" does not
MAX_SEQUENCE_ITEMS = 1_024  # a sequence is cut to its field's length (tens of tokens) anyway
MAX_DEPTH = 8  # 4 needed, the rest for nested keys a client adds and the server ignores

_STRINGS = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"')
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")
_PLAIN_INT = re.compile(r"-?(?:0|[1-9][0-9]*)")
_INT_LIKE = r"^[+-]?[0-9]+$"


class RowError(ValueError):
    """A request whose rows cannot be used; the message names the row and the field."""

    status = 422


class TooLarge(RowError):
    """A request over the size limits (rows or bytes)."""

    status = 413


class BadJson(RowError):
    status = 400


def parse_json(body: bytes) -> Any:
    """Decode a UTF-8 request body nested at most ``MAX_DEPTH`` levels; NaN and Infinity
    are not JSON and are refused."""

    def refuse(name: str) -> None:
        raise ValueError(f"{name} is not allowed in JSON")

    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as e:
        raise BadJson(f"request body is not UTF-8 text (byte {e.start})") from e
    if json_depth(body) > MAX_DEPTH:
        raise BadJson(f"request body is nested more than {MAX_DEPTH} levels deep; a request "
                      "needs 4")
    try:
        return json.loads(text, parse_constant=refuse)
    except ValueError as e:
        raise BadJson(f"request body is not valid JSON: {e}") from e


def json_depth(body: bytes) -> int:
    """How deep the arrays and objects of a JSON text nest, counted without parsing it:
    strings removed, brackets summed in blocks."""
    brackets = _STRINGS.sub(b"", body).translate(None, _NOT_BRACKETS)
    steps = np.frombuffer(brackets, np.uint8)
    depth = deepest = 0
    for start in range(0, len(steps), 1 << 20):
        block = steps[start:start + (1 << 20)]
        running = depth + np.cumsum(np.where((block == 91) | (block == 123), 1, -1))
        deepest = max(deepest, int(running.max()))
        depth = int(running[-1])
    return deepest


class RowReader:
    """Checks requests against one schema; keeps what the number rule needs per field."""

    def __init__(self, schema: Schema) -> None:
        self.schema = schema
        self.known: dict[str, set[str]] = {}
        self.plain_ints: dict[str, bool] = {}
        for f in schema.fields:
            if f.kind == "numerical" or f.hash_buckets:
                continue
            vocab = f.vocab or []
            self.known[f.name] = set(vocab)
            texts = pl.Series(vocab, dtype=pl.String)
            ints = texts.filter(texts.str.contains(_INT_LIKE))
            self.plain_ints[f.name] = len(ints) > 0 and all(
                _PLAIN_INT.fullmatch(v) for v in ints.to_list())

    def columns(self, payload: Any, max_rows: int) -> Columns:
        """Check ``payload`` (a decoded JSON request) and return its rows as canonical
        columns: one list per field of text (categorical), floats (numerical) or token lists
        (sequence), ``None`` where a value is null."""
        rows = payload.get("rows") if isinstance(payload, dict) else payload
        if not isinstance(rows, list):
            raise RowError('the body must be a JSON array of row objects, or {"rows": [...]}')
        if len(rows) > max_rows:
            raise TooLarge(f"{len(rows)} rows in one request; the limit is {max_rows}")
        for i, row in enumerate(rows):
            if not isinstance(row, dict):
                raise RowError(f"row {i} is not an object (got {_json_type(row)})")
            missing = [f.name for f in self.schema.fields if f.name not in row]
            if missing:
                raise RowError(f"row {i} is missing fields: {', '.join(missing)}")
        return {f.name: self._column(f, [row[f.name] for row in rows])
                for f in self.schema.fields}

    def _column(self, f: Field, values: list[Any]) -> list[Any]:
        if f.kind == "numerical":
            out: list[Any] = []
            for i, v in enumerate(values):
                if v is not None and (isinstance(v, bool) or not isinstance(v, int | float)):
                    raise _wrong_type(i, f, v, "a number or null")
                try:
                    number = None if v is None else float(v)
                except OverflowError:
                    number = math.inf
                if number is not None and not math.isfinite(number):
                    raise RowError(f"row {i}, field {f.name!r}: {_show(v)} is not a finite "
                                   "number")
                out.append(number)
            return out
        if f.kind == "sequence":
            return [self._tokens(i, f, v) for i, v in enumerate(values)]
        found: list[tuple[int, Any]] = []
        for i, v in enumerate(values):
            if isinstance(v, str):
                _check_text(i, f, v)
            elif v is not None:
                if not isinstance(v, bool | int | float):
                    raise _wrong_type(i, f, v, "a string, number, boolean or null")
                found.append((i, v))
        out = list(values)
        for (i, _), text in zip(found, self._texts(f, found), strict=True):
            out[i] = text
        return out

    def _tokens(self, i: int, f: Field, value: Any) -> list[str] | None:
        """A sequence value (a list, or text joined by the field's separator) as tokens."""
        if value is None:
            return None
        if isinstance(value, str):
            _check_text(i, f, value)
            parts = (t.strip() for t in value.split(f.sep))
            return [t for t in parts if t]
        if not isinstance(value, list):
            raise _wrong_type(i, f, value, "a list of strings, a string or null")
        if len(value) > MAX_SEQUENCE_ITEMS:
            raise RowError(f"row {i}, field {f.name!r}: a list of {len(value):,} tokens; the "
                           f"limit is {MAX_SEQUENCE_ITEMS:,}")
        found: list[tuple[int, Any]] = []
        for t in value:
            if isinstance(t, str):
                _check_text(i, f, t)
            elif isinstance(t, int) and not isinstance(t, bool):
                found.append((i, t))
            else:
                raise _wrong_type(i, f, t, "a list of strings or integers")
        numbers = iter(self._texts(f, found))
        return [t if isinstance(t, str) else next(numbers) for t in value]

    def _texts(self, f: Field, found: list[tuple[int, Any]]) -> list[str]:
        """The training text of non-string values (row, value), by the rule above."""
        if not found:
            return []
        if f.hash_buckets:
            i, v = found[0]
            raise RowError(f"row {i}, field {f.name!r} is hashed, so {_show(v)} cannot be "
                           "checked against its training values; send it as a JSON string, "
                           "spelled as in the training data")
        floats = [v for _, v in found if isinstance(v, float)]
        float_text = iter(pl.Series(floats, dtype=pl.Float64).cast(pl.String).to_list()
                          if floats else [])
        known, texts = self.known[f.name], []
        for i, v in found:
            if isinstance(v, float) and not math.isfinite(v):
                raise RowError(f"row {i}, field {f.name!r}: {v} is not a finite number")
            text = (("true" if v else "false") if isinstance(v, bool) else
                    next(float_text) if isinstance(v, float) else str(v))
            plain_int = type(v) is int and self.plain_ints[f.name]
            if text not in known and not plain_int:
                raise RowError(f"row {i}, field {f.name!r}: {_show(v)} is not one of the "
                               f"field's training values as text ({text!r})"
                               f"{_spelling(f, v)}; send it as a JSON string to score it as "
                               "written")
            texts.append(text)
        return texts


def rows_to_columns(payload: Any, schema: Schema, max_rows: int) -> Columns:
    """``RowReader(schema).columns(payload, max_rows)``, for a single request."""
    return RowReader(schema).columns(payload, max_rows)


def _check_text(i: int, f: Field, text: str) -> None:
    if len(text) > MAX_VALUE_CHARS:
        raise RowError(f"row {i}, field {f.name!r}: text of {len(text):,} characters; the "
                       f"limit is {MAX_VALUE_CHARS:,}")
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as e:
            raise RowError(f"row {i}, field {f.name!r}: the text is not valid Unicode "
                           f"({e.reason} at character {e.start})") from e


def _spelling(f: Field, value: Any) -> str:
    """Where a training value is the same number spelled otherwise: which one."""
    if isinstance(value, bool) or not f.vocab:
        return ""
    try:
        number = float(value)
    except OverflowError:
        return ""
    numbers = pl.Series(f.vocab, dtype=pl.String).cast(pl.Float64, strict=False)
    same = (numbers == number).fill_null(False)
    if not same.any():
        return ""
    return f", but training holds it as {f.vocab[int(same.arg_true()[0])]!r}"


def _show(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    text = json.dumps(value)
    return text if len(text) <= 40 else f"{text[:37]}..."


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
