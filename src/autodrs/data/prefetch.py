"""One background-thread prefetcher, shared by disk batching and GPU batch pinning."""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterable, Iterator
from typing import Any, TypeVar

T = TypeVar("T")


def prefetch(items: Iterable[T], depth: int = 1) -> Iterator[T]:
    """``items`` in order, produced on a background thread up to ``depth`` ahead of the
    consumer (so reading or pinning overlaps the work on the item before). The thread
    starts an item only once a slot is free, so at most ``depth`` items beside the one the
    consumer holds exist at a time. An error in the thread is raised here; closing the
    iterator early stops the thread."""
    q: queue.Queue[Any] = queue.Queue()
    slots = threading.Semaphore(depth)
    done = object()
    stop = threading.Event()

    def produce() -> None:
        try:
            it = iter(items)
            while True:
                slots.acquire()
                if stop.is_set():
                    return
                item = next(it, done)
                q.put(item)
                if item is done:
                    return
        except BaseException as e:  # handed to the consumer
            q.put(e)

    thread = threading.Thread(target=produce, daemon=True)
    thread.start()
    try:
        while True:
            item = q.get()
            if item is done:
                return
            if isinstance(item, BaseException):
                raise item
            slots.release()
            yield item
            del item
    finally:
        stop.set()
        slots.release()  # unblock a producer waiting for a slot
        thread.join()
