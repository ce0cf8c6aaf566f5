"""How long ``autodrs --help`` takes, against a bare Python start and an ``import torch``.

Each command runs in a fresh interpreter, interleaved, ``--repeats`` times; the medians are
printed with the ratio of ``autodrs --help`` to a bare start, and whether the help loaded
PyTorch (it must not: the commands import their heavy modules when they run).

    python benchmarks/cli_startup.py --repeats 7
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time

CASES = {
    "python -c pass": "pass",
    "import torch": "import torch",
    "autodrs --help": "import sys\nsys.argv = ['autodrs', '--help']\n"
                      "from autodrs.cli import main\ntry:\n    main()\nexcept SystemExit:\n"
                      "    pass\nassert 'torch' not in sys.modules, 'the help imported torch'",
    "autodrs --version": "import sys\nsys.argv = ['autodrs', '--version']\n"
                         "from autodrs.cli import main\ntry:\n    main()\nexcept SystemExit:\n"
                         "    pass",
}


def once(code: str) -> float:
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    times: dict[str, list[float]] = {name: [] for name in CASES}
    for _ in range(args.repeats):
        for name, code in CASES.items():  # interleaved, so load changes hit every case alike
            times[name].append(once(code))
    bare = statistics.median(times["python -c pass"])
    print(f"{'command':<20} {'median s':>9} {'x bare':>7}")
    for name, values in times.items():
        median = statistics.median(values)
        print(f"{name:<20} {median:>9.3f} {median / bare:>7.1f}")


if __name__ == "__main__":
    main()
