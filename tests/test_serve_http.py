"""The HTTP endpoint: JSON rows are encoded like file rows, requests are micro-batched, and
malformed requests get a 4xx while the server keeps serving."""

from __future__ import annotations

import asyncio
import json
import shutil
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import polars as pl
import pytest
from fastapi.testclient import TestClient

from autodrs.data.dataset import EncodedData
from autodrs.data.schema import MISSING, OOV, Schema, infer_schema
from autodrs.data.sources import load_table
from autodrs.serve.app import create_app
from autodrs.serve.batching import MicroBatcher
from autodrs.serve.encoder import RowEncoder, columns_to_frame
from autodrs.serve.predictor import Predictor
from autodrs.serve.rows import BadJson, RowError, TooLarge, parse_json, rows_to_columns
from autodrs.serve.tuning import ServingConfig, save_serving_config


def mixed_table(rows: int, seed: int, unseen: bool) -> pl.DataFrame:
    """Every kind of field: text, integer, boolean and float categoricals, a hashed
    categorical, a log-scaled number, a vocabulary and a hashed sequence; nulls throughout."""
    rng = np.random.default_rng(seed)
    cities = ["paris", "rome", "oslo", "lima"] + (["tokyo"] if unseen else [])
    tags = ["a", "b", "c", "d", "e"] + (["zz"] if unseen else [])
    words = [f"w{i}" for i in range(60 if unseen else 40)]

    def maybe(values: list[Any]) -> list[Any]:
        return [None if rng.random() < 0.1 else v for v in values]

    return pl.DataFrame({
        "city": maybe(list(rng.choice(cities, rows))),
        "item": maybe([int(v) for v in rng.integers(0, 80 if unseen else 50, rows)]),
        "flag": maybe([bool(v) for v in rng.integers(0, 2, rows)]),
        "grade": maybe([float(v) for v in rng.choice([1.0, 2.5, 3.0, 1e20], rows)]),
        "price": maybe([float(v) for v in rng.lognormal(3, 1, rows)]),
        "tags": maybe([list(rng.choice(tags, int(rng.integers(0, 4)))) for _ in range(rows)]),
        "words": maybe([list(rng.choice(words, int(rng.integers(1, 12)))) for _ in range(rows)]),
        "label": [int(v) for v in rng.integers(0, 2, rows)],
    }, schema_overrides={"tags": pl.List(pl.String), "words": pl.List(pl.String)})


@pytest.fixture(scope="module")
def mixed_schema() -> Schema:
    train = mixed_table(400, seed=0, unseen=False)
    schema = infer_schema(train, categorical=["grade"], log_numerical=["price"])
    # 20 buckets: item (50 values) and words (40 tokens) are hashed, the rest get vocabularies
    return schema.fit(train, hash_threshold=20, max_seq_len=6)


def test_json_rows_encode_like_file_rows(mixed_schema: Schema) -> None:
    assert mixed_schema.field("item").hash_buckets and mixed_schema.field("words").hash_buckets
    table = mixed_table(300, seed=1, unseen=True)
    expected = mixed_schema.transform(table, require_label=False)
    # the rows hold unseen values and nulls, so OOV and MISSING ids are exercised
    assert (expected["cat"] == OOV).any() and (expected["cat"] == MISSING).any()
    # a hashed field takes text only (see rows.py)
    sent = table.with_columns(pl.col("item").cast(pl.String)).to_dicts()
    columns = rows_to_columns(sent, mixed_schema, max_rows=1000)
    for got in (RowEncoder(mixed_schema).encode(columns),
                EncodedData.from_arrays(mixed_schema.transform(
                    columns_to_frame(columns, mixed_schema), require_label=False))):
        np.testing.assert_array_equal(got.cat.numpy(), expected["cat"])
        np.testing.assert_allclose(got.num.numpy(), expected["num"], rtol=0, atol=1e-6)
        for name in ("tags", "words"):
            np.testing.assert_array_equal(got.seq[name].numpy(), expected[f"seq:{name}"])


def test_json_value_forms_agree(mixed_schema: Schema) -> None:
    """A boolean or float sent as its training text, a sequence sent as joined text: same
    ids."""
    base = {"city": "rome", "item": "7", "flag": True, "grade": 2.5, "price": 12.0,
            "tags": ["a", "c"], "words": ["w1", "w2"]}
    other = base | {"flag": "true", "grade": "2.5", "tags": "a|c", "words": " w1 | w2 "}
    encoder = RowEncoder(mixed_schema)
    a = encoder.encode(rows_to_columns([base], mixed_schema, 10))
    b = encoder.encode(rows_to_columns([other], mixed_schema, 10))
    assert (a.cat == b.cat).all()
    assert all((a.seq[n] == b.seq[n]).all() for n in a.seq)


@pytest.mark.parametrize(("payload", "error", "message"), [
    ({"row": []}, RowError, "must be a JSON array"),
    ([1], RowError, "row 0 is not an object"),
    ([{"city": "rome"}], RowError, "row 0 is missing fields: item, flag"),
    ([{"city": "rome", "item": "1", "flag": True, "grade": 1.0, "price": "cheap",
       "tags": [], "words": []}], RowError, "row 0, field 'price' .*expected a number"),
    ([{"city": {"name": "rome"}, "item": 1, "flag": True, "grade": 1.0, "price": 1.0,
       "tags": [], "words": []}], RowError, "field 'city' .*got an object"),
    ([{"city": "rome", "item": "1", "flag": True, "grade": 1.0, "price": 1.0,
       "tags": [1.5], "words": []}], RowError, "field 'tags'"),
    ([{}] * 11, TooLarge, "11 rows in one request; the limit is 10"),
])
def test_bad_rows_are_named(mixed_schema: Schema, payload: Any, error: type,
                            message: str) -> None:
    with pytest.raises(error, match=message):
        rows_to_columns(payload, mixed_schema, max_rows=10)


def test_bad_json_is_refused() -> None:
    with pytest.raises(BadJson, match="not valid JSON"):
        parse_json(b"[{")
    with pytest.raises(BadJson, match="NaN is not allowed"):
        parse_json(b'[{"x": NaN}]')


# ---------------------------------------------------------------- micro-batching
def run_batcher(requests: list[list[float]], max_rows: int, max_wait_ms: float,
                fail_on: float | None = None) -> tuple[list[Any], list[int]]:
    """Submit every request at once; ``predict`` echoes each row's value as its score."""
    calls: list[int] = []

    def predict(parts: list[list[float]]) -> np.ndarray:
        rows = [v for part in parts for v in part]
        if fail_on is not None and fail_on in rows:
            raise ValueError("bad row")
        calls.append(len(rows))
        return np.array(rows)

    async def main() -> list[Any]:
        batcher = MicroBatcher(predict, max_rows=max_rows, max_wait_ms=max_wait_ms)
        await batcher.start()
        try:
            return await asyncio.gather(*(batcher.submit(r, len(r)) for r in requests),
                                        return_exceptions=True)
        finally:
            await batcher.stop()

    return asyncio.run(main()), calls


def test_concurrent_requests_share_model_calls() -> None:
    requests = [[float(i), float(i) + 0.5] for i in range(10)]
    results, calls = run_batcher(requests, max_rows=64, max_wait_ms=200)
    for request, got in zip(requests, results, strict=True):
        np.testing.assert_array_equal(got, request)  # each request gets its own rows back
    assert len(calls) < len(requests)
    assert sum(calls) == 20


def test_batches_respect_max_rows() -> None:
    requests = [[float(i)] * (1 + i % 3) for i in range(12)]
    results, calls = run_batcher(requests, max_rows=4, max_wait_ms=200)
    assert max(calls) <= 4
    assert [list(r) for r in results] == requests


def test_a_failing_request_does_not_fail_its_neighbours() -> None:
    requests = [[1.0], [2.0], [-1.0], [3.0]]
    results, _ = run_batcher(requests, max_rows=64, max_wait_ms=200, fail_on=-1.0)
    assert isinstance(results[2], ValueError)
    assert [list(results[i]) for i in (0, 1, 3)] == [[1.0], [2.0], [3.0]]


# ---------------------------------------------------------------- the app
@pytest.fixture(scope="module")
def predictor(saved_model: Path) -> Predictor:
    return Predictor.from_folder(saved_model)


@pytest.fixture(scope="module")
def rows() -> list[dict[str, Any]]:
    table = load_table("synthetic?rows=4000&seed=1").df.head(40)
    return table.to_dicts()


def test_endpoint_scores_rows_like_the_predictor(predictor: Predictor,
                                                 rows: list[dict[str, Any]]) -> None:
    expected = predictor.predict_frame(pl.DataFrame(rows))
    config = ServingConfig(batch_size=16, max_request_rows=100)
    with TestClient(create_app(predictor, config)) as client:
        health = client.get("/health").json()
        assert health["status"] == "ok"
        assert health["fields"]["num0"] == "numerical"
        one = client.post("/predict", json=rows[:1])
        assert one.status_code == 200
        np.testing.assert_allclose(one.json()["probabilities"], expected[:1], atol=1e-6)
        many = client.post("/predict", json={"rows": rows})
        np.testing.assert_allclose(many.json()["probabilities"], expected, atol=1e-6)
        assert client.post("/predict", json=[]).json() == {"probabilities": []}


def test_malformed_requests_get_4xx_and_serving_goes_on(predictor: Predictor,
                                                        rows: list[dict[str, Any]]) -> None:
    config = ServingConfig(max_request_rows=5)
    no_r1 = {k: v for k, v in rows[0].items() if k != "r1"}
    bad = [
        (b"[{", 400, "not valid JSON"),
        (b'{"rows": 3}', 422, "must be a JSON array"),
        (b"[" + b",".join([b"{}"] * 6) + b"]", 413, "6 rows in one request; the limit is 5"),
    ]
    with TestClient(create_app(predictor, config)) as client:
        for body, status, message in bad:
            response = client.post("/predict", content=body)
            assert response.status_code == status
            assert message in response.json()["detail"]
        response = client.post("/predict", json=[no_r1])
        assert response.status_code == 422
        assert "row 0 is missing fields: r1" in response.json()["detail"]
        response = client.post("/predict", json=[rows[0] | {"num0": "high"}])
        assert response.status_code == 422
        assert "field 'num0'" in response.json()["detail"]
        assert client.post("/predict", json=rows[:2]).status_code == 200
        assert client.get("/health").status_code == 200


# ---------------------------------------------------------------- a real server
# the `autodrs` entry point, run by this interpreter
SERVE_MAIN = "from autodrs.cli import main; main()"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_real_server_on_loopback(saved_model: Path, predictor: Predictor,
                                 rows: list[dict[str, Any]], tmp_path: Path) -> None:
    """``autodrs serve`` in a subprocess: it reads serving.json, batches concurrent
    requests, refuses a bad one and keeps serving."""
    folder = Path(shutil.copytree(saved_model, tmp_path / "model"))
    save_serving_config(folder, ServingConfig(batch_size=7, threads=1, max_wait_ms=20,
                                              source="tune-serving"))
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen([sys.executable, "-c", SERVE_MAIN, "serve", "--model",
                             str(folder), "--port", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        health = _wait_healthy(url, proc)
        assert health["config"]["batch_size"] == 7
        assert health["config"]["source"] == "tune-serving"
        expected = predictor.predict_frame(pl.DataFrame(rows))
        with httpx.Client(base_url=url, timeout=30) as client:
            def post(i: int) -> list[float]:
                response = client.post("/predict", json=rows[2 * i: 2 * i + 2])
                assert response.status_code == 200, response.text
                return response.json()["probabilities"]

            with ThreadPoolExecutor(8) as pool:
                got = list(pool.map(post, range(20)))
            np.testing.assert_allclose(np.concatenate(got), expected, atol=1e-6)
            assert client.post("/predict", content=b"not json").status_code == 400
            assert len(post(0)) == 2
            served = client.get("/health").json()["served"]
        assert served["requests"] == 21
        assert served["model_calls"] <= served["requests"]
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        if proc.stderr is not None:
            proc.stderr.close()


def _wait_healthy(url: str, proc: subprocess.Popen[bytes]) -> dict[str, Any]:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            err = proc.stderr.read().decode() if proc.stderr else ""
            raise AssertionError(f"server exited with {proc.returncode}: {err}")
        try:
            return httpx.get(f"{url}/health", timeout=2).json()
        except httpx.TransportError:
            time.sleep(0.2)
    raise AssertionError("server did not become healthy in 120 s")


# ---------------------------------------------------------------- the documented body
def test_openapi_describes_the_predict_body(predictor: Predictor,
                                            rows: list[dict[str, Any]]) -> None:
    config = ServingConfig(max_request_rows=7)
    with TestClient(create_app(predictor, config)) as client:
        spec = client.get("/openapi.json").json()
        assert client.get("/docs").status_code == 200
        schemas = spec["components"]["schemas"]
        body = spec["paths"]["/predict"]["post"]["requestBody"]
        assert body["content"]["application/json"]["schema"] == {
            "$ref": "#/components/schemas/PredictRequest"}
        row = schemas["Row"]
        assert row["required"] == predictor.feature_names  # every field, by its name
        assert row["additionalProperties"] is True  # other keys (an id) are ignored
        types = {name: sorted(t.get("type", "array") for t in p["anyOf"])
                 for name, p in row["properties"].items()}
        assert types["num0"] == ["null", "number"]
        assert types["r0"] == ["boolean", "integer", "null", "number", "string"]
        request = schemas["PredictRequest"]
        as_list = next(v for v in request["anyOf"] if v.get("type") == "array")
        assert as_list["maxItems"] == 7
        answers = spec["paths"]["/predict"]["post"]["responses"]
        assert {"200", "400", "401", "413", "422"} <= set(answers)
        assert answers["200"]["content"]["application/json"]["schema"] == {
            "$ref": "#/components/schemas/Probabilities"}
        assert "Health" in schemas
        # the example shown in /docs is a request the server scores
        example = request["examples"][0]
        response = client.post("/predict", json=example)
        assert response.status_code == 200 and len(response.json()["probabilities"]) == 1
        assert client.post("/predict", json={"rows": rows[:3]}).status_code == 200


@pytest.mark.parametrize(("change", "valid"), [
    ({}, True),
    ({"flag": "true", "tags": "a|c", "price": None, "id": 5}, True),
    ({"price": "cheap"}, False),
    ({"price": True}, False),
    ({"city": {"name": "rome"}}, False),
    ({"tags": [1.5]}, False),
    ({"item": 7}, False),  # a hashed field takes text only
    ({"city": "x" * 5000}, False),
])
def test_the_documented_body_agrees_with_the_reader(mixed_schema: Schema,
                                                    change: dict[str, Any],
                                                    valid: bool) -> None:
    """What the pydantic model (the schema in /docs) accepts, the reader accepts, and what
    it refuses for its JSON type, the reader refuses too."""
    from pydantic import ValidationError

    from autodrs.serve.app import request_model

    row = {"city": "rome", "item": "7", "flag": True, "grade": 2.5, "price": 12.0,
           "tags": ["a", "c"], "words": ["w1", "w2"]} | change
    model = request_model(mixed_schema, max_rows=10)
    for payload in ([row], {"rows": [row]}):
        text = json.dumps(payload)
        if valid:
            model.model_validate_json(text)
            rows_to_columns(json.loads(text), mixed_schema, max_rows=10)
        else:
            with pytest.raises(ValidationError):
                model.model_validate_json(text)
            with pytest.raises(RowError):
                rows_to_columns(json.loads(text), mixed_schema, max_rows=10)
    with pytest.raises(ValidationError):
        model.model_validate_json(json.dumps([row] * 11))
