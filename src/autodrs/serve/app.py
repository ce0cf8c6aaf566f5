"""The HTTP JSON endpoint (FastAPI): raw rows in, probabilities out.

- ``POST /predict``: a JSON array of row objects (or ``{"rows": [...]}``), answered with
  ``{"probabilities": [...]}`` in row order. Bad JSON gets 400, a body or row count over the
  limit 413, a row that is not an object, lacks a field or has a value of the wrong type 422,
  each with ``{"detail": "..."}`` naming the problem; the server keeps serving.
- ``GET /health``: ``{"status": "ok", ...}`` with the fields and the serving configuration.

Requests are micro-batched (see ``batching.py``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import asdict
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from autodrs.data.errors import DataError
from autodrs.serve.batching import MicroBatcher
from autodrs.serve.encoder import merge_columns
from autodrs.serve.predictor import Predictor
from autodrs.serve.rows import RowError, TooLarge, parse_json, rows_to_columns
from autodrs.serve.tuning import ServingConfig

BYTES_PER_ROW = 16_384  # generous bound on one JSON row, for the body size limit


def create_app(predictor: Predictor, config: ServingConfig | None = None) -> FastAPI:
    """An app serving ``predictor`` with ``config`` (micro-batch size, threads, limits)."""
    config = (config or ServingConfig()).check()
    batcher = MicroBatcher(lambda parts: predictor.predict_columns(merge_columns(parts)),
                           max_rows=config.batch_size,
                           max_wait_ms=config.max_wait_ms, threads=config.threads)
    max_body = config.max_request_rows * BYTES_PER_ROW

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await batcher.start()
        try:
            yield
        finally:
            await batcher.stop()

    app = FastAPI(title="autodrs", lifespan=lifespan)
    fields = {f.name: f.kind for f in predictor.schema.fields}

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {
            "status": "ok",
            "fields": fields,
            "config": asdict(config),
            "served": {"requests": batcher.requests, "model_calls": batcher.calls},
        }

    @app.post("/predict")
    async def predict(request: Request) -> JSONResponse:
        try:
            body = await _read_body(request, max_body)
            columns = rows_to_columns(parse_json(body), predictor.schema,
                                      config.max_request_rows)
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

    return app


async def _read_body(request: Request, limit: int) -> bytes:
    """The request body, refused as soon as it grows past ``limit`` bytes."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise TooLarge(f"request body of {declared} bytes is over the limit of {limit}")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise TooLarge(f"request body is over the limit of {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)
