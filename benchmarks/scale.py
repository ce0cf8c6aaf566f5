"""How encoding and training grow with rows: synthetic Parquet files of increasing size,
each encoded into a fresh on-disk cache and trained with DeepFM for one epoch from disk.

For each size it prints: Polars' own streaming read of the same file (every column
materialised, batch by batch, with ``collect_batches(engine="streaming")``; the faster of
two reads just before the encoding), autodrs's encoding seconds (the cache build alone:
read, encode, write; not the schema inference before it) and their ratio, the seconds to
write the cache's bytes alone (as many bytes as the cache, in 1 MiB blocks to files of a
shard's size on the same file system; the faster of two writes after the training) and
its ratio to Polars' read (the floor of the encoding ratio, as every encoding writes its
cache), training samples/s, seconds per million rows for both, the cache's bytes and the
peak resident memory of the ``autodrs train`` process that encoded and trained, and the
1-minute load average when the size started. Each size runs in its own process, so peak
memory is per size. The synthetic fields' vocabularies are bounded (at most 2,000 values
each), so nothing legitimately grows with rows but the data itself.

    nice -n 10 python benchmarks/scale.py --rows 1000000,4000000,16000000 --threads 1
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def one(rows: int, folder: Path, threads: int, batch_size: int) -> dict:
    """Runs in the child process: write, read with Polars, encode and train."""
    import polars as pl

    from autodrs.data.synthetic import write_synthetic

    path = folder / f"synthetic-{rows}.parquet"
    write_synthetic(path, rows=rows, seed=0)
    lf = pl.scan_parquet(path)
    reads = []
    for _ in range(2):  # the faster of two reads, as the file is in the page cache for both
        t0 = time.perf_counter()
        for batch in lf.collect_batches(engine="streaming"):  # every column materialised
            del batch
        reads.append(time.perf_counter() - t0)
    polars_read = min(reads)
    load = os.getloadavg()[0]
    os.environ["AUTODRS_CACHE"] = str(folder / "cache")
    os.environ["AUTODRS_IN_MEMORY_BYTES"] = "0"  # always train from disk
    out = folder / f"run-{rows}"
    cmd = [sys.executable, "-m", "autodrs", "train", "--data", str(path), "--model", "deepfm",
           "--epochs", "1", "--batch-size", str(batch_size), "--threads", str(threads),
           "--no-progress", "--out", str(out)]
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024  # the train process
    result = json.loads((out / "result.json").read_text())
    cache = result["data"]["cache"]
    writes = [write_only(cache["bytes"], folder / "write-only") for _ in range(2)]
    return {"rows": rows, "polars_read_s": polars_read, "encode_s": cache["encode_seconds"],
            "write_only_s": min(writes),
            "cache_bytes": cache["bytes"], "file_bytes": path.stat().st_size,
            "train_samples_per_s": result["cost"]["train_samples_per_second"],
            "test_auc": result["metrics"]["test"]["auc"], "peak_rss_mb": peak,
            "load_average": load}


def write_only(nbytes: int, folder: Path, shard_bytes: int = 1 << 26) -> float:
    """Seconds to write ``nbytes`` bytes to files of ``shard_bytes`` each, 1 MiB a call,
    as the cache's shards are written (the files are kept until the end, as a cache's are,
    then removed)."""
    import numpy as np

    block = memoryview(np.ones(1 << 18, np.int32)).cast("B")
    folder.mkdir()
    t0 = time.perf_counter()
    written, index = 0, 0
    while written < nbytes:
        with open(folder / f"{index:05d}.bin", "wb") as fh:
            for _ in range(shard_bytes // len(block)):
                if written >= nbytes:
                    break
                take = min(len(block), nbytes - written)
                fh.write(block[:take])
                written += take
        index += 1
    seconds = time.perf_counter() - t0
    shutil.rmtree(folder)
    return seconds


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", default="1000000,4000000,16000000")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--batch-size", type=int, default=4096)
    p.add_argument("--one", type=int, help=argparse.SUPPRESS)
    p.add_argument("--folder", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.one:
        print(json.dumps(one(args.one, Path(args.folder), args.threads, args.batch_size)))
        return
    rows_list = [int(r) for r in args.rows.split(",")]
    table = []
    for rows in rows_list:
        with tempfile.TemporaryDirectory(prefix="autodrs-scale-") as folder:
            child = subprocess.Popen(
                [sys.executable, __file__, "--one", str(rows), "--folder", folder,
                 "--threads", str(args.threads), "--batch-size", str(args.batch_size)],
                stdout=subprocess.PIPE, text=True)
            stdout, _ = child.communicate()
            if child.returncode:
                sys.exit(f"size {rows} failed")
            row = json.loads(stdout.strip().splitlines()[-1])
        table.append(row)
        print(json.dumps(row), flush=True)
    first = table[0]
    print(f"\n{'rows':>11} {'polars s':>9} {'encode s':>9} {'ratio':>6} {'write s':>8} "
          f"{'ratio':>6} {'enc s/M':>8} "
          f"{'train/s':>9} {'train s/M':>9} {'cache MB':>9} {'peak MB':>8} {'load':>5}")
    for r in table:
        m = r["rows"] / 1e6
        print(f"{r['rows']:>11,} {r['polars_read_s']:>9.2f} {r['encode_s']:>9.2f} "
              f"{r['encode_s'] / r['polars_read_s']:>6.2f} {r['write_only_s']:>8.2f} "
              f"{r['write_only_s'] / r['polars_read_s']:>6.2f} {r['encode_s'] / m:>8.2f} "
              f"{r['train_samples_per_s']:>9,.0f} {0.8e6 / r['train_samples_per_s']:>9.2f} "
              f"{r['cache_bytes'] / 1e6:>9.1f} {r['peak_rss_mb']:>8.0f} "
              f"{r['load_average']:>5.1f}")
    last = table[-1]
    print(f"\nencode s per row, last/first: "
          f"{(last['encode_s'] / last['rows']) / (first['encode_s'] / first['rows']):.2f}; "
          f"train samples/s, first/last: "
          f"{first['train_samples_per_s'] / last['train_samples_per_s']:.2f}; "
          f"peak RSS, last/first: {last['peak_rss_mb'] / first['peak_rss_mb']:.2f}")


if __name__ == "__main__":
    main()
