"""A search on a Criteo-layout file: write the file with ``make-synthetic --format criteo``
(unless it exists), run ``autodrs search`` on it under a budget in a child process, and
print the search's own output (each line with the seconds since the start), its wall time,
its peak resident memory (the kernel's high-water mark, and the largest of samples taken
every second), the load average, and from result.json the seconds of each part (data,
baselines, each stage, retrain), whether the retrain was cut short and the rows each part
used. Each output line is shown with the resident memory at that moment, and the peak of
the samples taken until the next line (so every phase the search prints has its own peak;
the ten highest are listed at the end). ``--json`` writes these figures to a file.

    python benchmarks/scale_criteo.py --rows 10000000 --budget 30m --file /tmp/criteo10m.txt
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any


def rss_mb(pid: int) -> float | None:
    """The resident memory of process ``pid`` now (None once it has ended)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def parts(result: dict[str, Any]) -> dict[str, Any]:
    """Seconds and rows of each part of a finished search, from its result.json."""
    cost = result.get("cost", {})
    known = sum(cost.get(k) or 0 for k in ("baseline_seconds", "search_seconds",
                                           "retrain_seconds"))
    return {
        "total_seconds": cost.get("total_seconds"),
        "budget_seconds": cost.get("budget_seconds"),
        # reading the data and writing the results: what the parts below leave
        "other_seconds": round((cost.get("total_seconds") or 0) - known, 1),
        "baseline_seconds": cost.get("baseline_seconds"),
        "baselines": {n: {"seconds": b.get("seconds"), "cut_short": b.get("cut_short"),
                          "test_auc": (b.get("test") or {}).get("auc")}
                      for n, b in (result.get("baselines") or {}).items()},
        "stages": [{"method": s.get("method"), "seconds": round(s.get("seconds") or 0, 1),
                    "budget_seconds": s.get("budget_seconds"),
                    "guard_seconds": (s.get("guard") or {}).get("seconds")}
                   for s in result.get("stages", [])],
        "search_seconds": cost.get("search_seconds"),
        "retrain_seconds": cost.get("retrain_seconds"),
        "retrain_cut_short": cost.get("retrain_cut_short"),
        "test_auc": (result.get("metrics", {}).get("test") or {}).get("auc"),
        "rows": result.get("rows"),
    }


def phase_peaks(lines: list[tuple[float, str]], stamps: list[float], samples: list[float],
                end: float) -> list[dict[str, Any]]:
    """For each output line, the peak of the memory samples taken from it until the next
    line (the first phase runs from the start to the first line)."""
    marks = [(0.0, "(start)"), *lines]
    out = []
    for i, (start, text) in enumerate(marks):
        stop = marks[i + 1][0] if i + 1 < len(marks) else end
        inside = [m for t, m in zip(stamps, samples, strict=True) if start <= t < stop]
        if inside:
            out.append({"start": round(start, 1), "seconds": round(stop - start, 1),
                        "peak_mb": round(max(inside)), "line": text})
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, default=10_000_000)
    p.add_argument("--budget", default="30m")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--file", default="criteo_synthetic.txt")
    p.add_argument("--out", default="runs/criteo-search")
    p.add_argument("--json", default=None, help="write the figures to this file")
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
    load_start = os.getloadavg()
    print(" ".join(cmd[2:]) + f"  (load {load_start[0]:.2f})", flush=True)
    t0 = time.perf_counter()
    child = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    samples: list[float] = []
    stamps: list[float] = []  # seconds since the start of each sample
    loads: list[float] = []

    def sample() -> None:
        while child.poll() is None:
            rss = rss_mb(child.pid)
            if rss is not None:
                samples.append(rss)
                stamps.append(time.perf_counter() - t0)
            loads.append(os.getloadavg()[0])
            time.sleep(1.0)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    assert child.stdout is not None
    lines: list[tuple[float, str]] = []
    for line in child.stdout:
        now = time.perf_counter() - t0
        lines.append((now, line.rstrip()))
        print(f"[{now:7.1f}s {samples[-1] if samples else 0:6.0f} MB] {line.rstrip()}",
              flush=True)
    code = child.wait()
    wall = time.perf_counter() - t0
    sampler.join()
    phases = phase_peaks(lines, stamps, samples, wall)
    peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    figures: dict[str, Any] = {
        "command": " ".join(cmd[2:]), "exit": code, "wall_seconds": round(wall, 1),
        "peak_rss_mb": round(peak_mb), "peak_rss_sampled_mb": round(max(samples, default=0)),
        "load_start": round(load_start[0], 2),
        "load_mean": round(sum(loads) / len(loads), 2) if loads else None,
        "load_end": round(os.getloadavg()[0], 2),
    }
    figures["phases"] = phases
    figures["rss_timeline"] = [[round(t, 1), round(m)] for t, m in zip(stamps, samples,
                                                                       strict=True)]
    result_file = Path(args.out) / "result.json"
    if code == 0 and result_file.exists():
        figures |= parts(json.loads(result_file.read_text()))
    print(json.dumps({k: v for k, v in figures.items() if k not in ("phases", "rss_timeline")}, indent=1))
    print("\nhighest peaks by phase (from the line's time to the next line's):")
    for ph in sorted(phases, key=lambda ph: -ph["peak_mb"])[:10]:
        print(f"  {ph['peak_mb']:6.0f} MB  [{ph['start']:7.1f}s +{ph['seconds']:5.1f}s] "
              f"{ph['line'][:90]}")
    print(f"\nsearch exit {code}, wall {wall / 60:.1f} min, peak RSS {peak_mb:,.0f} MB "
          f"(load {figures['load_start']} at the start, {figures['load_mean']} on average)")
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=1) + "\n")
    sys.exit(code)


if __name__ == "__main__":
    main()
