"""The HTTP JSON endpoint (FastAPI): raw rows in, probabilities out.

- ``POST /predict``: a JSON array of row objects (or ``{"rows": [...]}``), answered with
  ``{"probabilities": [...]}`` in row order. Bad JSON gets 400, a body or row count over the
  limit 413, a row that is not an object, lacks a field or has a value of the wrong type 422,
  each with ``{"detail": "..."}`` naming the problem; the server keeps serving.
- ``GET /health``: ``{"status": "ok", ...}`` with the fields and the serving configuration.

Requests are micro-batched (see ``batching.py``). A body is at most ``body_limit`` bytes
(about ``BYTES_PER_ROW`` per row the configuration allows), UTF-8, nested at most
``rows.MAX_DEPTH`` levels, with values bounded as ``rows.py`` says. With an API key, both
routes answer 401 unless the request carries ``Authorization: Bearer <key>`` or
``X-API-Key: <key>`` (compared in constant time); ``/docs`` and ``/openapi.json`` describe
the API only and can be turned off. The OpenAPI schema shows the body of ``/predict`` for this
model's fields (``rows.request_model``) and its answers; the body is read and checked by
``RowReader`` itself, so the size limits apply before any parsing.
"""

from __future__ import annotations

import hmac
import os
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Annotated, Any

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, RootModel, create_model
from pydantic import Field as Describe

from autodrs.data.errors import DataError
from autodrs.data.schema import Field, Schema
from autodrs.serve.batching import MicroBatcher
from autodrs.serve.encoder import merge_columns
from autodrs.serve.predictor import Predictor
from autodrs.serve.rows import (
    MAX_SEQUENCE_ITEMS,
    MAX_VALUE_CHARS,
    RowError,
    RowReader,
    TooLarge,
    parse_json,
)
from autodrs.serve.tuning import ServingConfig

BYTES_PER_ROW = 2_048  # a CTR row in JSON takes a few hundred bytes
MIN_BODY_BYTES = 65_536  # room for one row of long values when few rows are allowed
KEY_ENV = "AUTODRS_API_KEY"
MIN_KEY_CHARS = 16


class Probabilities(BaseModel):
    """The answer to ``POST /predict``."""

    probabilities: list[float] = Describe(description="the click probability of each row, "
                                                      "in row order")


class ErrorDetail(BaseModel):
    """The body of every 4xx answer."""

    detail: str = Describe(description="what was wrong, naming the row, field and value")


Text = Annotated[str, Describe(max_length=MAX_VALUE_CHARS)]


def request_model(schema: Schema, max_rows: int) -> type[RootModel[Any]]:
    """The body of ``POST /predict`` for ``schema`` as a pydantic model: a JSON array of rows,
    or ``{"rows": [...]}``, each row an object with every field (other keys allowed and
    ignored). Strict, so that a value it accepts has a JSON type ``RowReader`` accepts."""
    fields: dict[str, Any] = {}
    for i, f in enumerate(schema.fields):
        annotation, description = _field_type(f)
        # aliases carry the field names, which need not be Python identifiers
        fields[f"field_{i}"] = (annotation, Describe(alias=f.name, description=description))
    config = ConfigDict(extra="allow", strict=True)
    row: Any = create_model("Row", __config__=config, __doc__="One row: a value for every "
                            "field of the model; other keys are ignored.", **fields)
    rows = Annotated[list[row], Describe(max_length=max_rows,
                                         description=f"at most {max_rows:,} rows")]
    envelope: Any = create_model("RowsObject", __config__=config, rows=(rows, ...))
    model: type[RootModel[Any]] = create_model(
        "PredictRequest", __base__=RootModel[rows | envelope],
        __doc__='A JSON array of row objects, or {"rows": [...]}.')
    model.model_config = ConfigDict(
        strict=True, json_schema_extra={"examples": [[example_row(schema)]]})
    model.model_rebuild(force=True)
    return model


def example_row(schema: Schema) -> dict[str, Any]:
    """A row the model accepts: each field's most frequent training value, the mean of a
    number; a hashed field, which keeps no values, gets an unseen one."""
    row: dict[str, Any] = {}
    for f in schema.fields:
        value = (f.vocab or ["unseen"])[0]
        if f.kind == "numerical":
            row[f.name] = round(float(f.mean), 4)
        elif f.kind == "sequence":
            row[f.name] = [value]
        else:
            row[f.name] = value
    return row


def _field_type(f: Field) -> tuple[Any, str]:
    """A field's value as a type, and in words."""
    if f.kind == "numerical":
        return float | None, "a number, or null for a missing value (the training mean)"
    if f.kind == "sequence":
        item = Text if f.hash_buckets else Text | int
        tokens = Annotated[list[item], Describe(max_length=MAX_SEQUENCE_ITEMS)]  # type: ignore[valid-type]
        return (tokens | Text | None,
                f"a list of tokens, or text joined by {f.sep!r}; null when missing")
    if f.hash_buckets:
        return Text | None, "text as in the training data (a hashed field takes text only)"
    return (Text | int | float | bool | None,
            "text as in the training data; a number or boolean only where it cannot mean "
            "another training value (see docs/serving.md); null when missing")


class Health(BaseModel):
    """The answer to ``GET /health``."""

    status: str = Describe(description='"ok" while the server serves')
    fields: dict[str, str] = Describe(description="each field of the model and its kind")
    config: dict[str, Any] = Describe(description="the serving configuration in use")
    served: dict[str, int] = Describe(description="requests answered and model calls made")


ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorDetail, "description": "not UTF-8 JSON, or nested too deeply"},
    401: {"model": ErrorDetail, "description": "missing or wrong API key (when one is set)"},
    413: {"model": ErrorDetail, "description": "a body or row count over the limits"},
    422: {"model": ErrorDetail, "description": "a row that is not an object, lacks a field "
                                               "or holds a value the field cannot take"},
}


def body_limit(config: ServingConfig) -> int:
    """The largest request body ``config`` accepts, in bytes."""
    return max(MIN_BODY_BYTES, config.max_request_rows * BYTES_PER_ROW)


def read_api_key(path: Path | None, environ: Mapping[str, str] = os.environ) -> str | None:
    """The API key from ``path`` (``--api-key-file``), else from ``AUTODRS_API_KEY``, else
    None (no authentication). A key is printable ASCII without spaces, 16 characters or
    more; surrounding whitespace (a final newline) is dropped."""
    if path is not None:
        if not path.is_file():
            raise ValueError(f"--api-key-file {path} not found")
        try:
            key, where = path.read_text(encoding="utf-8").strip(), f"--api-key-file {path}"
        except (OSError, UnicodeDecodeError) as e:
            raise ValueError(f"--api-key-file {path} cannot be read: {e}") from e
    elif environ.get(KEY_ENV) is not None:
        key, where = environ[KEY_ENV].strip(), KEY_ENV
    else:
        return None
    if not key:
        raise ValueError(f"{where} is empty")
    if not all(33 <= ord(c) <= 126 for c in key):
        raise ValueError(f"{where}: the key must be printable ASCII without spaces")
    if len(key) < MIN_KEY_CHARS:
        raise ValueError(f"{where}: the key must be at least {MIN_KEY_CHARS} characters, "
                         f"got {len(key)}")
    return key


def create_app(predictor: Predictor, config: ServingConfig | None = None,
               api_key: str | None = None, docs: bool = True) -> FastAPI:
    """An app serving ``predictor`` with ``config`` (micro-batch size, threads, limits);
    with ``api_key``, every route but the docs requires it; ``docs=False`` removes
    ``/docs``, ``/redoc`` and ``/openapi.json``."""
    config = (config or ServingConfig()).check()
    batcher = MicroBatcher(lambda parts: predictor.predict_columns(merge_columns(parts)),
                           max_rows=config.batch_size,
                           max_wait_ms=config.max_wait_ms, threads=config.threads)
    max_body = body_limit(config)
    reader = RowReader(predictor.schema)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await batcher.start()
        try:
            yield
        finally:
            await batcher.stop()

    expected = api_key.encode("ascii") if api_key is not None else None

    def authorize(request: Request) -> None:
        if expected is None:
            return
        given = request.headers.get("x-api-key")
        if given is None:
            scheme, _, token = request.headers.get("authorization", "").partition(" ")
            given = token.strip() if scheme.lower() == "bearer" else ""
        if not hmac.compare_digest(given.encode("latin-1", "replace"), expected):
            raise HTTPException(401, "missing or wrong API key: send 'Authorization: Bearer "
                                "<key>' or 'X-API-Key: <key>'",
                                headers={"WWW-Authenticate": "Bearer"})

    app = FastAPI(title="autodrs", lifespan=lifespan, dependencies=[Depends(authorize)],
                  docs_url="/docs" if docs else None, redoc_url="/redoc" if docs else None,
                  openapi_url="/openapi.json" if docs else None)
    fields = {f.name: f.kind for f in predictor.schema.fields}

    @app.get("/health", response_model=Health)
    async def health() -> dict[str, Any]:
        return {
            "status": "ok",
            "fields": fields,
            "config": asdict(config),
            "served": {"requests": batcher.requests, "model_calls": batcher.calls},
        }

    @app.post("/predict", response_model=Probabilities, responses=ERRORS)
    async def predict(request: Request) -> JSONResponse:
        """Click probabilities of raw rows, in row order."""
        try:
            body = await _read_body(request, max_body)
            columns = reader.columns(parse_json(body), config.max_request_rows)
        except RowError as e:
            return JSONResponse({"detail": str(e)}, status_code=e.status)
        rows = len(columns[predictor.feature_names[0]])
        if rows == 0:
            return JSONResponse({"probabilities": []})
        try:
            probs = await batcher.submit(columns, rows)
        except DataError as e:
            return JSONResponse({"detail": str(e)}, status_code=422)
        return JSONResponse({"probabilities": probs.tolist()})

    body = request_model(predictor.schema, config.max_request_rows)

    def openapi() -> dict[str, Any]:
        """FastAPI's schema, with the body of ``/predict`` that ``request_model`` describes."""
        if app.openapi_schema is None:
            spec = get_openapi(title=app.title, version=app.version, routes=app.routes,
                               description="Click probabilities of raw rows.")
            schema = body.model_json_schema(ref_template="#/components/schemas/{model}")
            components = spec.setdefault("components", {}).setdefault("schemas", {})
            components.update(schema.pop("$defs", {}))
            components["PredictRequest"] = schema
            spec["paths"]["/predict"]["post"]["requestBody"] = {
                "required": True, "content": {"application/json": {
                    "schema": {"$ref": "#/components/schemas/PredictRequest"}}}}
            app.openapi_schema = spec
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app


async def _read_body(request: Request, limit: int) -> bytes:
    """The request body, refused as soon as it grows past ``limit`` bytes."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise TooLarge(f"request body of {int(declared):,} bytes is over the limit of "
                       f"{limit:,} bytes")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise TooLarge(f"request body is over the limit of {limit:,} bytes")
        chunks.append(chunk)
    return b"".join(chunks)
