"""Micro-batching: concurrent requests share one model call.

A model call over 64 rows costs little more than over one, so under load the server
gathers requests: the first waiting request opens a batch, requests arriving within
``max_wait_ms`` join it until it holds ``max_rows`` rows, and the batch is encoded and
scored in one worker thread (the event loop keeps accepting requests meanwhile). Each request
gets its own rows' probabilities back. A request larger than ``max_rows`` runs alone; one that
would overflow the open batch opens the next.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch


@dataclass
class _Request:
    payload: Any
    rows: int
    future: asyncio.Future[np.ndarray]


class MicroBatcher:
    """An asyncio queue of requests drained into batches by one background task.

    ``predict`` takes the payloads of one batch, in order, and returns the probabilities of
    all their rows, in order."""

    def __init__(self, predict: Callable[[list[Any]], np.ndarray], max_rows: int,
                 max_wait_ms: float, threads: int = 1) -> None:
        if max_rows < 1:
            raise ValueError(f"max_rows must be >= 1, got {max_rows}")
        if max_wait_ms < 0:
            raise ValueError(f"max_wait_ms must be >= 0, got {max_wait_ms}")
        self.predict = predict
        self.max_rows = max_rows
        self.max_wait = max_wait_ms / 1000.0
        self.threads = threads
        self.calls = 0
        self.requests = 0
        self._queue: asyncio.Queue[_Request] | None = None
        self._task: asyncio.Task[None] | None = None
        self._executor: ThreadPoolExecutor | None = None

    async def start(self) -> None:
        self._queue = asyncio.Queue()
        # torch's thread count is per calling thread: set it where the model runs
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="autodrs-infer",
                                            initializer=torch.set_num_threads,
                                            initargs=(self.threads,))
        self._task = asyncio.create_task(self._loop())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        if self._queue is not None:
            while not self._queue.empty():
                request = self._queue.get_nowait()
                if not request.future.done():
                    request.future.set_exception(RuntimeError("the server is shutting down"))
        if self._executor is not None:
            self._executor.shutdown(wait=True)

    async def submit(self, payload: Any, rows: int) -> np.ndarray:
        """Queue a request of ``rows`` rows and wait for its probabilities."""
        if self._queue is None:
            raise RuntimeError("the micro-batcher is not started")
        future: asyncio.Future[np.ndarray] = asyncio.get_running_loop().create_future()
        await self._queue.put(_Request(payload, rows, future))
        return await future

    async def _loop(self) -> None:
        assert self._queue is not None
        loop = asyncio.get_running_loop()
        carry: _Request | None = None
        while True:
            first = carry if carry is not None else await self._queue.get()
            carry = None
            batch, rows = [first], first.rows
            deadline = loop.time() + self.max_wait
            while rows < self.max_rows:
                try:
                    if self._queue.empty():
                        timeout = deadline - loop.time()
                        if timeout <= 0:
                            break
                        request = await asyncio.wait_for(self._queue.get(), timeout)
                    else:
                        request = self._queue.get_nowait()
                except TimeoutError:
                    break
                if rows + request.rows > self.max_rows:
                    carry = request
                    break
                batch.append(request)
                rows += request.rows
            await self._run(batch)

    async def _run(self, batch: list[_Request]) -> None:
        loop = asyncio.get_running_loop()
        payloads = [r.payload for r in batch]
        try:
            probs = await loop.run_in_executor(self._executor, self.predict, payloads)
        except Exception as e:
            if len(batch) == 1:
                if not batch[0].future.done():
                    batch[0].future.set_exception(e)
                return
            # score each request alone, so one bad request does not fail its neighbours
            for request in batch:
                await self._run([request])
            return
        self.calls += 1
        self.requests += len(batch)
        start = 0
        for request in batch:
            end = start + request.rows
            if not request.future.done():  # the client may have gone away
                request.future.set_result(probs[start:end])
            start = end
