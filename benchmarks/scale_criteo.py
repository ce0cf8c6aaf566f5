"""A search on a Criteo-layout file: write the file with ``make-synthetic --format criteo``
(unless it exists), run ``autodrs search`` on it under a budget in a child process, and
print the search's own output, its wall time and its peak resident memory.

    python benchmarks/scale_criteo.py --rows 10000000 --budget 30m --file /tmp/criteo10m.txt
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import time
from pathlib import Path


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, default=10_000_000)
    p.add_argument("--budget", default="30m")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--file", default="criteo_synthetic.txt")
    p.add_argument("--out", default="runs/criteo-search")
    p.add_argument("--search-args", default="", help="more arguments for autodrs search")
    args = p.parse_args()
    autodrs = [sys.executable, "-m", "autodrs"]
    path = Path(args.file)
    if not path.exists():
        t0 = time.perf_counter()
        subprocess.run([*autodrs, "make-synthetic", "--format", "criteo", "--rows",
                        str(args.rows), "--seed", str(args.seed), "--out", str(path)],
                       check=True)
        print(f"wrote {path} in {time.perf_counter() - t0:.0f} s", flush=True)
    cmd = [*autodrs, "search", "--data", str(path), "--format", "criteo", "--budget",
           args.budget, "--seed", str(args.seed), "--out", args.out, "--overwrite",
           *args.search_args.split()]
    print(" ".join(cmd[2:]) + f"  (load {os.getloadavg()[0]:.2f})", flush=True)
    t0 = time.perf_counter()
    done = subprocess.run(cmd, check=False)
    wall = time.perf_counter() - t0
    peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    print(f"\nsearch exit {done.returncode}, wall {wall / 60:.1f} min, peak RSS {peak_mb:,.0f} MB "
          f"(load {os.getloadavg()[0]:.2f})")
    sys.exit(done.returncode)


if __name__ == "__main__":
    main()
