"""Where the encoder's time goes, against Polars' own streaming read of the same file.

Writes a synthetic Parquet file of ``--rows`` rows (as ``benchmarks/scale.py`` does), reads
it with Polars' streaming engine (every column materialised, the faster of two reads), then
builds a fresh cache with the encoder's parts timed. The native Parquet pass (the default):
waiting for Polars' reads (Polars reads them and computes the provisional ids on its own
threads, so that CPU is the whole process's less the parts'), ordering a read's rows by
split (the row hash, a radix argsort) on the main thread; on a worker thread counting the
train ids and keeping the numerical moments and samples; on another gathering each split's
rows and writing the shards. The general pass (``--general``): reading the Arrow
batches (on the encoder's prefetch thread), the split and the order of rows, categorical
ids (vocabulary look-up and train counts), numerical moments and samples, writing the
shards. Both: after the pass fitting the vocabularies and numerical boundaries and
standardising the numbers (the second write). CPU seconds are each part's own thread's
time, so they do not count the waiting that another process's load adds to wall time;
Polars' CPU seconds are its whole process's (its worker threads). The write floor writes
as many bytes as the cache, in 1 MiB blocks (``scale.write_only``).

    python benchmarks/encode_breakdown.py --rows 4000000 [--general]
"""

from __future__ import annotations

import argparse
import functools
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, default=4_000_000)
    p.add_argument("--folder", default=None, help="where to write (default: a temp folder)")
    p.add_argument("--general", action="store_true", help="time the general pass")
    args = p.parse_args()
    if args.general:
        import os

        os.environ["AUTODRS_NATIVE_PASS"] = "0"

    import polars as pl

    import autodrs.data.cache as C
    from autodrs.data.dataset import load_dataset
    from autodrs.data.synthetic import write_synthetic
    from scale import write_only

    times: dict[str, list[float]] = {}

    def timed(name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(fn)
        def wrapper(*a: Any, **k: Any) -> Any:
            c0, t0 = time.thread_time(), time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                cpu, wall = times.get(name, [0.0, 0.0])
                times[name] = [cpu + time.thread_time() - c0,
                               wall + time.perf_counter() - t0]
        return wrapper

    source_batches = C.source_batches

    def read_timed(*a: Any, **k: Any) -> Any:
        it = source_batches(*a, **k)
        while True:
            c0, t0 = time.thread_time(), time.perf_counter()
            batch = next(it, None)
            cpu, wall = times.get("read (prefetch thread)", [0.0, 0.0])
            times["read (prefetch thread)"] = [cpu + time.thread_time() - c0,
                                               wall + time.perf_counter() - t0]
            if batch is None:
                return
            yield batch

    C.source_batches = read_timed
    batches = C._fast.batches

    def polars_timed(*a: Any, **k: Any) -> Any:
        it = batches(*a, **k)
        while True:
            c0, t0 = time.thread_time(), time.perf_counter()
            batch = next(it, None)
            cpu, wall = times.get("wait for Polars' reads", [0.0, 0.0])
            times["wait for Polars' reads"] = [cpu + time.thread_time() - c0,
                                                 wall + time.perf_counter() - t0]
            if batch is None:
                return
            yield batch

    C._fast.batches = polars_timed
    C._group = timed("order rows by split (hash, argsort)", C._group)
    C._absorb = timed("worker: counts, moments, samples", C._absorb)
    C._write = timed("writer: gathers, write shards", C._write)
    C.row_hash = timed("split hash", C.row_hash)
    C._labels = timed("labels", C._labels)
    C._Vocab.encode = timed("categorical ids", C._Vocab.encode)
    C._Moments.add = timed("numbers and moments", C._Moments.add)
    C._ShardWriter.add = timed("write shards", C._ShardWriter.add)
    C._Vocab.fit = timed("fit vocabularies", C._Vocab.fit)
    C._Moments.fit = timed("fit numbers (quantiles)", C._Moments.fit)
    C._finalise = timed("standardise (second write)", C._finalise)
    C._encode_chunk = timed("chunk total", C._encode_chunk)
    C._build = timed("build total", C._build)

    folder = Path(args.folder or tempfile.mkdtemp(prefix="autodrs-breakdown-"))
    folder.mkdir(parents=True, exist_ok=True)
    try:
        path = folder / f"synthetic-{args.rows}.parquet"
        write_synthetic(path, rows=args.rows, seed=0)
        reads = []
        for _ in range(2):
            t0, c0 = time.perf_counter(), time.process_time()
            for batch in pl.scan_parquet(path).collect_batches(engine="streaming"):
                del batch
            reads.append((time.perf_counter() - t0, time.process_time() - c0))
        polars_wall, polars_cpu = min(reads)
        c0 = time.process_time()
        ds = load_dataset(str(path), cache_dir=folder / "cache", in_memory=False)
        process_cpu = time.process_time() - c0
        cache_bytes = ds.info["cache"]["bytes"]
        floor = min(write_only(cache_bytes, folder / "write-only") for _ in range(2))
    finally:
        if args.folder is None:
            shutil.rmtree(folder, ignore_errors=True)
    build = times.pop("build total")
    chunk = times.pop("chunk total", None)
    if chunk is not None:
        in_chunk = ("split hash", "labels", "categorical ids", "numbers and moments",
                    "write shards")
        times["order rows by split, the rest of a chunk"] = [
            chunk[0] - sum(times.get(k, [0, 0])[0] for k in in_chunk),
            chunk[1] - sum(times.get(k, [0, 0])[1] for k in in_chunk)]
    else:  # "split hash" is inside grouping, the moments inside counting, writes inside
        # the second thread's total
        times["  of which the split hash"] = times.pop("split hash", [0.0, 0.0])
        for k in ("numbers and moments", "write shards"):
            if k in times:
                times[f"  of which {k}"] = times.pop(k)
    print(f"pass: {'general' if args.general else 'native Parquet'}")
    print(f"{args.rows:,} rows, cache {cache_bytes / 1e6:.1f} MB")
    print(f"{'part':42} {'CPU s':>7} {'x Polars':>8} {'wall s':>7}")
    print(f"{'Polars streaming read (whole process)':42} {polars_cpu:7.3f} {1:8.2f} "
          f"{polars_wall:7.3f}")
    for name, (cpu, wall) in times.items():
        print(f"{name:42} {cpu:7.3f} {cpu / polars_cpu:8.2f} {wall:7.3f}")
    print(f"{'encoder, whole process':42} {process_cpu:7.3f} "
          f"{process_cpu / polars_cpu:8.2f} {build[1]:7.3f}")
    print(f"{'write floor (the cache bytes alone)':42} {'':7} {'':8} {floor:7.3f}")
    print(f"\nencoding wall / Polars wall: {build[1] / polars_wall:.2f}; "
          f"encoder CPU / Polars CPU: {process_cpu / polars_cpu:.2f}; "
          f"write floor / Polars wall: {floor / polars_wall:.2f}")


if __name__ == "__main__":
    main()
