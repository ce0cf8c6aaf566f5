"""Serving refuses what would lose data or score silently wrong, and the HTTP endpoint bounds
what a request may hold and can require a key.

`predict` never writes over its input; a CSV with a repeated column name, a ragged or blank
row, text that is not UTF-8 or a word in a number column is an error naming the line. A JSON
number or boolean for a categorical field is used only where it cannot mean another training
value (see ``serve/rows.py``). Bodies are bounded in size, depth and per-value length.
"""

from __future__ import annotations

import hmac
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import polars as pl
import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from autodrs.cli import app
from autodrs.data.errors import DataError
from autodrs.data.schema import OOV, infer_schema
from autodrs.data.sources import load_table
from autodrs.serve import app as app_module
from autodrs.serve.app import create_app, read_api_key
from autodrs.serve.encoder import RowEncoder
from autodrs.serve.files import predict_file
from autodrs.serve.predictor import Predictor
from autodrs.serve.rows import (
    MAX_DEPTH,
    MAX_SEQUENCE_ITEMS,
    MAX_VALUE_CHARS,
    RowError,
    rows_to_columns,
)
from autodrs.serve.tuning import ServingConfig

KEY = "s3cret-key-0123456789abcdef"


@pytest.fixture(scope="module")
def predictor(saved_model: Path) -> Predictor:
    return Predictor.from_folder(saved_model)


@pytest.fixture(scope="module")
def raw() -> pl.DataFrame:
    return load_table("synthetic?rows=4000&seed=1").df.head(50).drop("label", "_p_true")


def predict_cli(model: Path, data: Path, out: Path) -> Any:
    return CliRunner().invoke(app, ["predict", "--model", str(model), "--data", str(data),
                                    "--out", str(out), "--threads", "1"])


# ---------------------------------------------------------------- case 3: --out is --data
def test_predict_refuses_to_write_over_its_input(saved_model: Path, raw: pl.DataFrame,
                                                 tmp_path: Path) -> None:
    data = tmp_path / "rows.csv"
    raw.write_csv(data)
    before = data.read_bytes()
    (tmp_path / "sub").mkdir()
    os.link(data, tmp_path / "hardlink.csv")
    (tmp_path / "symlink.csv").symlink_to(data)
    for out in (data, tmp_path / "sub" / ".." / "rows.csv", tmp_path / "hardlink.csv",
                tmp_path / "symlink.csv"):
        result = predict_cli(saved_model, data, out)
        assert result.exit_code == 2, (out, result.output)
        assert "is the input file" in result.output and "Traceback" not in result.output
        assert data.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hardlink.csv", "rows.csv", "sub",
                                                          "symlink.csv"]


def test_a_temporary_file_never_collides_with_the_input(predictor: Predictor,
                                                        raw: pl.DataFrame,
                                                        tmp_path: Path) -> None:
    """Scores are written beside ``--out`` first; an input named like that file survives."""
    data = tmp_path / "scores.csv.tmp"
    raw.write_csv(data)
    before = data.read_bytes()
    assert predict_file(predictor, data, tmp_path / "scores.csv", fmt="csv") == raw.height
    assert data.read_bytes() == before


# ---------------------------------------------------------------- case 5: the file's layout
@pytest.mark.parametrize(("text", "message"), [
    ("{h},r1\n{row}\n", "named more than once in the header: r1 (line 1)"),
    ("{h}\n{row}\n{short}\n{row}\n", "line 3 has 13 fields; the header has 14"),
    ("{h}\n{row}\n{row}\n{row},9\n", "line 4 has 15 fields; the header has 14"),
    ("{h}\n{row}\n\n{row}\n", "line 3 is blank; the header has 14 fields"),
    ("{h}\n{row}\n{row}\n\n", "line 4 is blank"),
])
def test_csv_layout_errors_name_the_line(saved_model: Path, raw: pl.DataFrame, tmp_path: Path,
                                         text: str, message: str) -> None:
    header = ",".join([*raw.columns, "extra"])
    row = ",".join(str(v) for v in raw.row(0)) + ",x"
    short = row.rsplit(",", 1)[0]
    data = tmp_path / "rows.csv"
    data.write_text(text.format(h=header, row=row, short=short))
    before = data.read_bytes()
    result = predict_cli(saved_model, data, tmp_path / "out.csv")
    assert result.exit_code == 2, result.output
    assert message in " ".join(result.output.split()), result.output
    assert not (tmp_path / "out.csv").exists() and data.read_bytes() == before


def test_text_errors_name_the_line(predictor: Predictor, raw: pl.DataFrame,
                                   tmp_path: Path) -> None:
    data = tmp_path / "rows.csv"
    raw.head(3).write_csv(data)
    with data.open("ab") as fh:
        fh.write(",".join(["\xe9t\xe9", *(str(v) for v in raw.row(4)[1:])]).encode("latin-1"))
    with pytest.raises(DataError, match="line 5 is not UTF-8 text"):
        predict_file(predictor, data, tmp_path / "out.csv")
    word = raw.head(6).with_columns(pl.col("num0").cast(pl.String))
    word[4, "num0"] = "high"
    word.write_csv(data)
    with pytest.raises(DataError, match="line 6, column 'num0': 'high' is not a number"):
        predict_file(predictor, data, tmp_path / "out.csv")
    assert not (tmp_path / "out.csv").exists()


def test_a_single_column_file_reads_a_blank_line_as_a_null(tmp_path: Path) -> None:
    train = pl.DataFrame({"code": ["01", "02", "01", None], "label": [1, 0, 1, 0]})
    schema = infer_schema(train).fit(train)
    from autodrs.models.backbones import backbone_spec
    from autodrs.models.builder import build_model

    model = Predictor(build_model(schema, backbone_spec("lr", 4)), schema)
    data = tmp_path / "codes.csv"
    data.write_text("code\n01\n\n02\n")
    predict_file(model, data, tmp_path / "out.csv")
    got = pl.read_csv(tmp_path / "out.csv")["probability"].to_list()
    expected = model.predict_frame(pl.DataFrame({"code": ["01", None, "02"]})).tolist()
    assert got == pytest.approx(expected, abs=1e-6)


# ---------------------------------------------------------------- case 5: JSON values
@pytest.fixture(scope="module")
def text_schema() -> Any:
    train = pl.DataFrame({
        "zip": ["06513", "00501", "10001", "06513"],
        "age": ["49", "18", "25", "49"],
        "grade": ["1.5", "2.0", "1.5", "3.0"],
        "flag": ["true", "false", "true", "true"],
        "tags": [["1", "22"], ["3"], ["1"], ["22"]],
        "label": [1, 0, 1, 0],
    })
    return infer_schema(train, categorical=["grade"]).fit(train)


ROW = {"zip": "06513", "age": "49", "grade": "1.5", "flag": "true", "tags": ["1", "22"]}


@pytest.mark.parametrize(("change", "same_as"), [
    ({"age": 49}, {"age": "49"}),  # an integer training holds, written plainly
    ({"age": 77}, {"age": "77"}),  # an unseen integer of a field of plain integers
    ({"grade": 1.5}, {"grade": "1.5"}),  # a float whose text training holds
    ({"flag": True}, {"flag": "true"}),
    ({"tags": [1, 22, 7]}, {"tags": ["1", "22", "7"]}),
])
def test_numbers_that_cannot_mean_another_value_are_used(text_schema: Any, change: dict,
                                                         same_as: dict) -> None:
    encoder = RowEncoder(text_schema)
    got = encoder.encode(rows_to_columns([ROW | change], text_schema, 5))
    want = encoder.encode(rows_to_columns([ROW | same_as], text_schema, 5))
    assert (got.cat == want.cat).all() and (got.seq["tags"] == want.seq["tags"]).all()


@pytest.mark.parametrize(("change", "message"), [
    ({"age": 49.0}, "row 0, field 'age': 49.0 .*training holds it as '49'"),
    ({"zip": 6513}, "row 0, field 'zip': 6513 .*training holds it as '06513'"),
    ({"zip": 12345}, "row 0, field 'zip': 12345 is not one of the field's training values"),
    ({"grade": 2}, "field 'grade': 2 .*training holds it as '2.0'"),
    ({"flag": 1}, "field 'flag': 1 is not one of"),
    ({"zip": False}, "field 'zip': false is not one of"),
])
def test_numbers_that_could_mean_another_value_are_refused(text_schema: Any, change: dict,
                                                           message: str) -> None:
    with pytest.raises(RowError, match=message) as caught:
        rows_to_columns([ROW, ROW | change][::-1], text_schema, 5)
    assert "send it as a JSON string" in str(caught.value)


def test_a_hashed_field_takes_text_only() -> None:
    train = pl.DataFrame({"user": [f"{i:05d}" for i in range(30)], "label": [0, 1] * 15})
    schema = infer_schema(train).fit(train, hash_threshold=10)
    assert schema.field("user").hash_buckets
    assert rows_to_columns([{"user": "00007"}], schema, 1)["user"] == ["00007"]
    with pytest.raises(RowError, match="field 'user' is hashed.*send it as a JSON string"):
        rows_to_columns([{"user": 7}], schema, 1)


def test_endpoint_refuses_a_float_for_an_integer_field(predictor: Predictor,
                                                       raw: pl.DataFrame) -> None:
    row = raw.row(0, named=True)
    known = predictor.schema.field("r1").vocab[0]
    with TestClient(create_app(predictor)) as client:
        as_float = client.post("/predict", json=[row | {"r1": float(known)}])
        assert as_float.status_code == 422
        assert f"training holds it as '{known}'" in as_float.json()["detail"]
        assert client.post("/predict", json=[row | {"r1": True}]).status_code == 422
        by_int = client.post("/predict", json=[row | {"r1": int(known)}]).json()
        by_text = client.post("/predict", json=[row | {"r1": known}]).json()
        assert by_int == by_text
        unseen = client.post("/predict", json=[row | {"r1": 987_654_321}])
        assert unseen.status_code == 200  # r1's training values are plain integers
    batch = RowEncoder(predictor.schema).encode(
        rows_to_columns([row | {"r1": 987_654_321}], predictor.schema, 1))
    assert batch.cat[0, predictor.schema.categorical.index("r1")] == OOV


# ---------------------------------------------------------------- case 11: bounded bodies
def test_deep_nesting_is_refused_before_parsing(predictor: Predictor) -> None:
    with TestClient(create_app(predictor)) as client:
        response = client.post("/predict", content=b"[" * 100_000)
        assert response.status_code == 400
        assert f"nested more than {MAX_DEPTH} levels" in response.json()["detail"]
        inner = MAX_DEPTH - 2  # inside the array and the row object
        shallow = b'[{"id": ' + b"[" * inner + b"]" * inner + b"}]"
        assert "nested" not in client.post("/predict", content=shallow).json()["detail"]
        assert client.get("/health").status_code == 200


def test_long_values_are_refused(predictor: Predictor, raw: pl.DataFrame,
                                 text_schema: Any) -> None:
    row = raw.row(0, named=True)
    with TestClient(create_app(predictor)) as client:
        response = client.post("/predict", json=[row | {"r1": "x" * (MAX_VALUE_CHARS + 1)}])
        assert response.status_code == 422
        assert (f"row 0, field 'r1': text of {MAX_VALUE_CHARS + 1:,} characters; the limit "
                f"is {MAX_VALUE_CHARS:,}") in response.json()["detail"]
        ok = client.post("/predict", json=[row | {"r1": "x" * MAX_VALUE_CHARS}])
        assert ok.status_code == 200
    with pytest.raises(RowError, match=f"list of {MAX_SEQUENCE_ITEMS + 1:,} tokens"):
        rows_to_columns([ROW | {"tags": ["1"] * (MAX_SEQUENCE_ITEMS + 1)}], text_schema, 1)
    with pytest.raises(RowError, match="row 0, field 'tags': text of"):
        rows_to_columns([ROW | {"tags": "1|" * MAX_VALUE_CHARS}], text_schema, 1)


def test_body_limit_follows_the_row_limit(predictor: Predictor, raw: pl.DataFrame) -> None:
    row = raw.row(0, named=True)
    limit = app_module.body_limit(ServingConfig())
    assert limit < 32 * 2**20  # 10,000 rows of about 2 KiB, not 160 MB
    with TestClient(create_app(predictor)) as client:
        big = client.post("/predict", json=[row | {"id": "x" * limit}])
        assert big.status_code == 413
        assert f"over the limit of {limit:,} bytes" in big.json()["detail"]
    small = ServingConfig(max_request_rows=2)
    assert app_module.body_limit(small) == app_module.MIN_BODY_BYTES


def test_text_that_is_not_unicode_is_refused(predictor: Predictor, raw: pl.DataFrame) -> None:
    row = raw.row(0, named=True)
    with TestClient(create_app(predictor)) as client:
        lone = json.dumps([row | {"r1": "\ud800"}]).encode()  # a lone surrogate, escaped
        response = client.post("/predict", content=lone)
        assert response.status_code == 422
        assert "field 'r1'" in response.json()["detail"]
        latin = client.post("/predict", content='[{"r1": "\xe9"}]'.encode("latin-1"))
        assert latin.status_code == 400 and "UTF-8" in latin.json()["detail"]
        huge = client.post("/predict", json=[row | {"num0": 10**400}])
        assert huge.status_code == 422 and "field 'num0'" in huge.json()["detail"]


# ---------------------------------------------------------------- case 12: an API key
def test_a_key_is_required_when_set(predictor: Predictor, raw: pl.DataFrame,
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    compared: list[bytes] = []
    constant_time = hmac.compare_digest

    def compare(a: bytes, b: bytes) -> bool:
        compared.append(a)
        return constant_time(a, b)

    monkeypatch.setattr(app_module.hmac, "compare_digest", compare)
    body = [raw.row(0, named=True)]
    with TestClient(create_app(predictor, api_key=KEY)) as client:
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"X-API-Key": KEY[:-1]},
                        {"Authorization": KEY}):
            response = client.post("/predict", json=body, headers=headers)
            assert response.status_code == 401, headers
            assert response.headers["www-authenticate"] == "Bearer"
            assert "API key" in response.json()["detail"]
            assert client.get("/health", headers=headers).status_code == 401
        for headers in ({"Authorization": f"Bearer {KEY}"}, {"X-API-Key": KEY}):
            assert client.post("/predict", json=body, headers=headers).status_code == 200
            assert client.get("/health", headers=headers).status_code == 200
    assert KEY.encode() in compared


def test_docs_can_be_turned_off(predictor: Predictor) -> None:
    with TestClient(create_app(predictor)) as client:
        assert client.get("/openapi.json").status_code == 200
        assert client.get("/docs").status_code == 200
    with TestClient(create_app(predictor, docs=False)) as client:
        assert client.get("/openapi.json").status_code == 404
        assert client.get("/docs").status_code == 404
        assert client.get("/redoc").status_code == 404
        assert client.get("/health").status_code == 200


def test_reading_the_key(tmp_path: Path) -> None:
    path = tmp_path / "key"
    path.write_text(KEY + "\n")
    assert read_api_key(path, {}) == KEY
    assert read_api_key(None, {"AUTODRS_API_KEY": KEY}) == KEY
    assert read_api_key(path, {"AUTODRS_API_KEY": "other-key-0123456789"}) == KEY
    assert read_api_key(None, {}) is None
    with pytest.raises(ValueError, match="--api-key-file .*not found"):
        read_api_key(tmp_path / "nope", {})
    for bad, message in (("", "is empty"), ("short", "at least 16 characters"),
                         ("with space 0123456789", "printable ASCII without spaces")):
        path.write_text(bad)
        with pytest.raises(ValueError, match=message):
            read_api_key(path, {})
    with pytest.raises(ValueError, match="AUTODRS_API_KEY: .*at least 16"):
        read_api_key(None, {"AUTODRS_API_KEY": "short"})


def test_serve_with_a_key_file(saved_model: Path, raw: pl.DataFrame, tmp_path: Path) -> None:
    """``autodrs serve --api-key-file --no-docs`` on loopback; a missing file is exit 2."""
    result = CliRunner().invoke(app, ["serve", "--model", str(saved_model), "--api-key-file",
                                      str(tmp_path / "missing")])
    assert result.exit_code == 2 and "not found" in result.output
    key_file = tmp_path / "key"
    key_file.write_text(KEY)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen([sys.executable, "-c", "from autodrs.cli import main; main()",
                             "serve", "--model", str(saved_model), "--port", str(port),
                             "--api-key-file", str(key_file), "--no-docs"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env=os.environ | {"AUTODRS_API_KEY": "another-key-0123456789"})
    try:
        headers = {"Authorization": f"Bearer {KEY}"}
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None, f"server exited with {proc.returncode}"
            assert time.monotonic() < deadline, "server did not start in 120 s"
            try:
                health = httpx.get(f"{url}/health", headers=headers, timeout=2)
                break
            except httpx.TransportError:
                time.sleep(0.2)
        assert health.status_code == 200  # the file's key, not the environment's
        body = [raw.row(0, named=True)]
        assert httpx.post(f"{url}/predict", json=body, timeout=30).status_code == 401
        assert httpx.post(f"{url}/predict", json=body, headers=headers,
                          timeout=30).status_code == 200
        assert httpx.get(f"{url}/openapi.json", timeout=5).status_code == 404
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_numbers_too_large_for_the_model_are_refused(predictor: Predictor, raw: pl.DataFrame,
                                                     tmp_path: Path) -> None:
    """A finite number beyond float32 after standardisation would score as NaN."""
    row = raw.row(0, named=True)
    with TestClient(create_app(predictor)) as client:
        response = client.post("/predict", json=[row, row | {"num0": 1e300}])
        assert response.status_code == 422
        assert "row 2, field 'num0': the value is too large" in response.json()["detail"]
    data = tmp_path / "rows.parquet"
    raw.head(3).with_columns(pl.Series("num0", [0.0, -1e45, 1.0])).write_parquet(data)
    with pytest.raises(DataError, match="data rows 1-3: row 2, field 'num0': the value is too"):
        predict_file(predictor, data, tmp_path / "out.csv")
