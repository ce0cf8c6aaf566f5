"""How encoding and training grow with rows: synthetic Parquet files of increasing size,
each encoded into a fresh on-disk cache and trained with DeepFM for one epoch from disk.

For each size, in one process per size and interleaved: Polars' own streaming read of the
same file (every column materialised, batch by batch, with
``collect_batches(engine="streaming")``; the fastest of four reads, two before and two
after the encodings), then the file encoded into a fresh cache by the native Parquet pass
and by the general pass (``AUTODRS_NATIVE_PASS=0``), each ``--encodes`` times (default 2,
the fastest kept, as for Polars' reads) in a process of its own that only encodes (its
seconds: the cache build alone, read, encode, write; not the process start, the imports or
the schema inference before it, which "proc s" adds: the whole encoding process's wall
time, as its parent saw it; its peak resident memory), and their ratios to Polars' read.
With ``--baseline-src DIR`` (the ``src`` folder of another checkout) that checkout's native
pass is timed too, interleaved in the same run, so a change is measured against what it
replaces under the same load. Then, unless
``--no-train``, ``autodrs train`` on the native cache: training samples/s, the cache's bytes
and the train process's peak memory (it encodes again, so its peak covers both). Also the
seconds to write the cache's bytes alone (as many bytes as the cache, in 1 MiB blocks to
files of a shard's size on the same file system; the faster of two writes) and the
1-minute load average when the size started. The synthetic fields' vocabularies are
bounded (at most 2,000 values each), so nothing legitimately grows with rows but the data
itself.

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

ENCODE = """
import json, os, resource, sys
if sys.argv[4]:
    sys.path.insert(0, sys.argv[4])  # a baseline checkout's sources
os.environ["AUTODRS_NATIVE_PASS"] = sys.argv[3]
from autodrs.data.dataset import load_dataset
ds = load_dataset(sys.argv[1], cache_dir=sys.argv[2], in_memory=False)
print(json.dumps({"encode_s": ds.info["cache"]["encode_seconds"],
                  "bytes": ds.info["cache"]["bytes"],
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def encode_only(path: Path, folder: Path, native: bool, src: str = "") -> dict:
    """Encode ``path`` into a fresh cache in a process of its own (so its peak memory is
    the encoding's alone), with the sources in ``src`` when given; the cache is removed
    afterwards. ``process_s``: the process's whole wall time."""
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", ENCODE, str(path), str(folder),
                          "1" if native else "0", src], check=True, capture_output=True,
                         text=True)
    seconds = time.perf_counter() - t0
    shutil.rmtree(folder, ignore_errors=True)
    return json.loads(out.stdout.strip().splitlines()[-1]) | {"process_s": seconds}


def fastest(runs: list[dict]) -> dict:
    """The run of fewest encoding seconds, with the largest peak memory of all runs."""
    best = min(runs, key=lambda r: r["encode_s"])
    return best | {"peak_rss_mb": max(r["peak_rss_mb"] for r in runs)}


def polars_read(path: Path) -> float:
    import polars as pl

    t0 = time.perf_counter()
    for batch in pl.scan_parquet(path).collect_batches(engine="streaming"):
        del batch  # every column materialised
    return time.perf_counter() - t0


def one(rows: int, folder: Path, threads: int, batch_size: int, train: bool,
        encodes: int = 2, baseline: str = "") -> dict:
    """Runs in the child process: write, read with Polars, encode both ways and train."""
    from autodrs.data.synthetic import write_synthetic

    path = folder / f"synthetic-{rows}.parquet"
    write_synthetic(path, rows=rows, seed=0)
    load = os.getloadavg()[0]
    reads = [polars_read(path) for _ in range(2)]  # the file is in the page cache for all
    runs: dict[str, list[dict]] = {"native": [], "baseline": [], "general": []}
    for _ in range(encodes):  # interleaved, so each sees the same spread of load
        runs["native"].append(encode_only(path, folder / "native", native=True))
        if baseline:
            runs["baseline"].append(encode_only(path, folder / "base", True, baseline))
        runs["general"].append(encode_only(path, folder / "general", native=False))
    reads += [polars_read(path) for _ in range(2)]
    native, general = fastest(runs["native"]), fastest(runs["general"])
    row = {"rows": rows, "polars_read_s": min(reads), "encode_s": native["encode_s"],
           "encode_process_s": native["process_s"],
           "encode_peak_mb": native["peak_rss_mb"], "general_encode_s": general["encode_s"],
           "general_peak_mb": general["peak_rss_mb"], "cache_bytes": native["bytes"],
           "file_bytes": path.stat().st_size, "load_average": load,
           "load_average_end": os.getloadavg()[0]}
    if baseline:
        base = fastest(runs["baseline"])
        row |= {"baseline_encode_s": base["encode_s"], "baseline_peak_mb": base["peak_rss_mb"],
                "baseline_cache_bytes": base["bytes"]}
    row["write_only_s"] = min(write_only(native["bytes"], folder / "write-only")
                              for _ in range(2))
    if train:
        os.environ["AUTODRS_CACHE"] = str(folder / "cache")
        os.environ["AUTODRS_IN_MEMORY_BYTES"] = "0"  # always train from disk
        out = folder / f"run-{rows}"
        cmd = [sys.executable, "-m", "autodrs", "train", "--data", str(path), "--model",
               "deepfm", "--epochs", "1", "--batch-size", str(batch_size), "--threads",
               str(threads), "--no-progress", "--out", str(out)]
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
        # the train process (the largest child so far)
        row["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        result = json.loads((out / "result.json").read_text())
        row["train_samples_per_s"] = result["cost"]["train_samples_per_second"]
        row["test_auc"] = result["metrics"]["test"]["auc"]
    return row


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
    p.add_argument("--no-train", action="store_true", help="encode only")
    p.add_argument("--encodes", type=int, default=2,
                   help="encodings of each kind per size (the fastest is kept)")
    p.add_argument("--baseline-src", default="",
                   help="another checkout's src folder: time its native pass too")
    p.add_argument("--one", type=int, help=argparse.SUPPRESS)
    p.add_argument("--folder", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.one:
        print(json.dumps(one(args.one, Path(args.folder), args.threads, args.batch_size,
                             not args.no_train, args.encodes, args.baseline_src)))
        return
    rows_list = [int(r) for r in args.rows.split(",")]
    table = []
    for rows in rows_list:
        with tempfile.TemporaryDirectory(prefix="autodrs-scale-") as folder:
            child = subprocess.Popen(
                [sys.executable, __file__, "--one", str(rows), "--folder", folder,
                 "--threads", str(args.threads), "--batch-size", str(args.batch_size),
                 "--encodes", str(args.encodes),
                 *(["--baseline-src", str(Path(args.baseline_src).resolve())]
                   if args.baseline_src else []),
                 *(["--no-train"] if args.no_train else [])],
                stdout=subprocess.PIPE, text=True)
            stdout, _ = child.communicate()
            if child.returncode:
                sys.exit(f"size {rows} failed")
            row = json.loads(stdout.strip().splitlines()[-1])
        table.append(row)
        print(json.dumps(row), flush=True)
    first, last = table[0], table[-1]
    base = "baseline_encode_s" in first
    print(f"\n{'rows':>11} {'polars s':>9} {'native s':>9} {'ratio':>6} {'proc s':>7} "
          f"{'peak MB':>8} "
          + (f"{'before s':>9} {'ratio':>6} {'peak MB':>8} " if base else "")
          + f"{'general s':>9} {'ratio':>6} {'peak MB':>8} {'write s':>8} {'ratio':>6} "
          f"{'cache MB':>9} {'load':>9}")
    for r in table:
        read = r["polars_read_s"]
        before = (f"{r['baseline_encode_s']:>9.2f} {r['baseline_encode_s'] / read:>6.2f} "
                  f"{r['baseline_peak_mb']:>8.0f} ") if base else ""
        print(f"{r['rows']:>11,} {read:>9.2f} {r['encode_s']:>9.2f} "
              f"{r['encode_s'] / read:>6.2f} {r['encode_process_s']:>7.2f} "
              f"{r['encode_peak_mb']:>8.0f} {before}"
              f"{r['general_encode_s']:>9.2f} {r['general_encode_s'] / read:>6.2f} "
              f"{r['general_peak_mb']:>8.0f} {r['write_only_s']:>8.2f} "
              f"{r['write_only_s'] / read:>6.2f} {r['cache_bytes'] / 1e6:>9.1f} "
              f"{r['load_average']:>4.1f}-{r['load_average_end']:<4.1f}")
    print(f"\nnative encode s per row, last/first: "
          f"{(last['encode_s'] / last['rows']) / (first['encode_s'] / first['rows']):.2f}")
    if "train_samples_per_s" in first:
        print(f"\n{'rows':>11} {'train/s':>9} {'train s/M':>9} {'train peak MB':>13} "
              f"{'test AUC':>8}")
        for r in table:
            print(f"{r['rows']:>11,} {r['train_samples_per_s']:>9,.0f} "
                  f"{0.8e6 / r['train_samples_per_s']:>9.2f} {r['peak_rss_mb']:>13.0f} "
                  f"{r['test_auc']:>8.4f}")
        print(f"train samples/s, first/last: "
              f"{first['train_samples_per_s'] / last['train_samples_per_s']:.2f}; "
              f"peak RSS, last/first: {last['peak_rss_mb'] / first['peak_rss_mb']:.2f}")


if __name__ == "__main__":
    main()
