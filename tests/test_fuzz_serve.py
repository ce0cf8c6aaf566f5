"""Property-based battery over the prediction reader and the HTTP endpoint (Hypothesis).

Random CSV, TSV and Parquet tables (random column types, nulls, text encodings, ragged or
blank rows, repeated or missing columns) go through ``autodrs predict``; random request
bodies (bytes, any JSON, rows with values of any JSON type) go to ``POST /predict``. The
property: a result, or one clear error (exit code 2 and one ``error:`` line / a 4xx with a
``detail``); never a traceback, a 5xx or a changed input file. ``benchmarks/fuzz.py`` runs
the same properties over more examples and counts the failures.
"""

from __future__ import annotations

import csv
import io
import json
import tempfile
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from autodrs.cli import app
from autodrs.data.schema import infer_schema
from autodrs.models.backbones import backbone_spec
from autodrs.models.builder import build_model
from autodrs.runfolder import save_model
from autodrs.serve.app import create_app
from autodrs.serve.predictor import Predictor
from autodrs.serve.tuning import ServingConfig

FIELDS = ["zip", "code", "price", "tags"]
GOOD = {"zip": "text", "code": "text", "price": "float", "tags": "list"}  # the trained kinds
ALLOWED_STATUS = {200, 400, 413, 422}


def fuzz_model(folder: Path) -> Path:
    """An untrained DeepFM over text categoricals, a number and a token list: the properties
    are about reading and checking, not about the scores."""
    train = pl.DataFrame({
        "zip": ["06513", "00501", None, "10001"] * 5,
        "code": ["7", "07", "a", "7.0"] * 5,
        "price": [1.5, None, 3.0, 2.25] * 5,
        "tags": [["1", "b"], [], ["001"], None] * 5,
        "label": [0, 1] * 10,
    }, schema_overrides={"tags": pl.List(pl.String)})
    schema = infer_schema(train).fit(train)
    save_model(folder, build_model(schema, backbone_spec("deepfm", 4)), schema)
    return folder


# ---------------------------------------------------------------- random files
TEXT = st.text(st.characters(codec="utf-8", exclude_characters="\r"), max_size=12)
SCALARS = st.one_of(st.none(), st.integers(-10**6, 10**6), TEXT,
                    st.floats(allow_nan=True, allow_infinity=True), st.booleans(),
                    st.sampled_from(["06513", "007", "7", "1e3", "NaN", "", " ", "a|b", '"']))


@st.composite
def tables(draw: st.DrawFn) -> dict[str, Any]:
    """A table as a file's bytes: its columns, cells, format and damage."""
    names = [*draw(st.permutations(FIELDS)),
             *draw(st.lists(st.sampled_from(["id", "label", "zip"]), max_size=2))]
    if draw(st.integers(0, 4)) == 0:
        names.remove(draw(st.sampled_from(FIELDS)))  # a field the model needs is missing
    rows = draw(st.integers(0, 12))
    kinds = {n: draw(st.sampled_from(["int", "float", "text", "bool", "list", "mixed",
                                      GOOD[n] if n in GOOD else "text"]))
             for n in names}
    cells = [[draw(_cell(kinds[n])) for n in names] for _ in range(rows)]
    return {"names": names, "cells": cells, "kinds": kinds,
            "format": draw(st.sampled_from(["csv", "tsv", "parquet"])),
            "encoding": draw(st.sampled_from(["utf-8", "utf-8", "utf-8", "utf-8-sig",
                                              "latin-1", "utf-16"])),
            "damage": draw(st.sampled_from([None, None, None, "short", "long", "blank",
                                            "cut"])),
            "line": draw(st.integers(0, 20))}


def _cell(kind: str) -> st.SearchStrategy[Any]:
    maybe_null = st.none() | st.just("null-marker")
    value = {"int": st.integers(-10**12, 10**12), "float": st.floats(allow_nan=True),
             "text": TEXT, "bool": st.booleans(), "list": st.lists(TEXT, max_size=3),
             "mixed": SCALARS}[kind]
    return st.one_of(value, maybe_null).map(lambda v: None if v == "null-marker" else v)


def write_table(table: dict[str, Any], folder: Path) -> Path:
    """Write a drawn table as its format; a CSV's text is encoded and damaged as drawn."""
    names, cells = table["names"], table["cells"]
    if table["format"] == "parquet":
        path = folder / "rows.parquet"
        columns = {}
        for j, name in enumerate(dict.fromkeys(names)):
            values = [row[j] for row in cells]
            try:
                columns[name] = pl.Series(name, values, strict=False)
            except (TypeError, ValueError, pl.exceptions.PolarsError, OverflowError):
                columns[name] = pl.Series(name, [None if v is None else str(v) for v in values])
        pl.DataFrame(columns, height=len(cells)).write_parquet(path)
        return path
    sep = "\t" if table["format"] == "tsv" else ","
    buffer = io.StringIO()
    writer = csv.writer(buffer, delimiter=sep, lineterminator="\n")
    writer.writerow(names)
    for row in cells:
        writer.writerow(["" if v is None else "|".join(v) if isinstance(v, list) else v
                         for v in row])
    lines = buffer.getvalue().split("\n")[:-1]
    damage, at = table["damage"], 1 + table["line"] % max(1, len(lines))
    if damage and len(lines) > 1:
        at = min(at, len(lines) - 1) or 1
        if damage == "short":
            lines[at] = lines[at].rsplit(sep, 1)[0]
        elif damage == "long":
            lines[at] += sep + "extra"
        elif damage == "blank":
            lines.insert(at, "")
        else:
            lines = lines[:at] + [lines[at][: len(lines[at]) // 2]]
    text = "\n".join(lines) + "\n"
    path = folder / f"rows.{table['format']}"
    path.write_bytes(text.encode(table["encoding"], errors="replace"))
    return path


def check_predict(model: Path, table: dict[str, Any]) -> int:
    """The file property: scores for every row, or exit 2 with one error line; the input
    is never changed and no traceback escapes."""
    with tempfile.TemporaryDirectory() as tmp:
        path = write_table(table, Path(tmp))
        before = path.read_bytes()
        out = Path(tmp) / "scores.csv"
        result = CliRunner().invoke(app, ["predict", "--model", str(model), "--data", str(path),
                                          "--out", str(out), "--threads", "1"])
        assert path.read_bytes() == before, "the input file changed"
        assert result.exit_code in (0, 2), f"exit {result.exit_code}: {result.exception!r}"
        assert "Traceback" not in result.output, result.output
        if result.exit_code == 2:
            assert result.output.startswith("error: "), result.output
            assert len(result.output.strip().splitlines()) <= 3, result.output
            assert not out.exists()
        else:
            scores = pl.read_csv(out)["probability"]
            assert scores.is_between(0, 1).all()
            assert scores.len() > 0
        return int(result.exit_code)


# ---------------------------------------------------------------- random request bodies
JSON = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=3) |
                    st.dictionaries(TEXT, inner, max_size=3), max_leaves=8)


@st.composite
def bodies(draw: st.DrawFn) -> bytes:
    """Request bodies: mostly rows with every field holding any JSON value, also arbitrary
    JSON, deep nesting and random bytes."""
    kind = draw(st.sampled_from(["rows", "rows", "rows", "json", "deep", "bytes"]))
    if kind == "bytes":
        return draw(st.binary(max_size=64))
    if kind == "deep":
        return b"[" * draw(st.integers(1, 5000)) + b"]" * draw(st.integers(0, 5000))
    if kind == "json":
        return json.dumps(draw(JSON)).encode()
    fitting = {"zip": st.none() | st.sampled_from(["06513", "00501", "99999"]) | TEXT,
               "code": st.none() | st.sampled_from(["7", "07", "7.0", "a"]) | TEXT,
               "price": st.none() | st.floats(-1e6, 1e6) | st.integers(-10**6, 10**6),
               "tags": st.none() | st.lists(TEXT, max_size=4) | TEXT}
    anything = st.one_of(SCALARS, st.lists(SCALARS, max_size=4), JSON)
    row = st.fixed_dictionaries({n: fitting[n] for n in FIELDS},
                                optional={"id": anything})
    if draw(st.booleans()):  # any JSON value for any field, some fields left out
        row = st.fixed_dictionaries({}, optional={n: anything for n in [*FIELDS, "id"]})
    rows = draw(st.lists(row, max_size=9))
    payload: Any = {"rows": rows} if draw(st.booleans()) else rows
    return json.dumps(payload).encode()


def check_request(client: TestClient, body: bytes) -> int:
    """The endpoint property: 200 with one probability per row, or a 4xx with a detail."""
    response = client.post("/predict", content=body)
    assert response.status_code in ALLOWED_STATUS, (response.status_code, response.text)
    answer = response.json()
    if response.status_code == 200:
        probs = answer["probabilities"]
        assert all(0 <= p <= 1 for p in probs)
    else:
        assert isinstance(answer["detail"], str) and answer["detail"]
    return response.status_code


# ---------------------------------------------------------------- the bounded battery
@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return fuzz_model(tmp_path_factory.mktemp("fuzz_model"))


@settings(max_examples=40, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(table=tables())
def test_predict_reads_any_table_or_says_why(model: Path, table: dict[str, Any]) -> None:
    check_predict(model, table)


def test_endpoint_answers_any_body_with_a_result_or_a_4xx(model: Path) -> None:
    predictor = Predictor.from_folder(model)
    with TestClient(create_app(predictor, ServingConfig(max_request_rows=8)),
                    raise_server_exceptions=False) as client:

        @settings(max_examples=60, deadline=None, derandomize=True,
                  suppress_health_check=[HealthCheck.too_slow])
        @given(body=bodies())
        def property_holds(body: bytes) -> None:
            check_request(client, body)

        property_holds()
        assert client.get("/health").status_code == 200
