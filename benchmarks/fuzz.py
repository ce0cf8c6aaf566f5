"""Fuzzing `autodrs predict` and `POST /predict` with the battery of tests/test_fuzz_serve.py.

Runs both properties over many more random examples than the test suite (random CSV, TSV and
Parquet tables with random types, nulls, encodings and damaged rows; random request bodies),
keeps going after a failure, and prints how many examples were tried, how they ended, and
each distinct failure.

    python benchmarks/fuzz.py [--files 500] [--bodies 3000] [--seed 0]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import traceback
from collections import Counter
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, seed, settings

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from _common import machine_line  # noqa: E402
from autodrs.serve.app import create_app  # noqa: E402
from autodrs.serve.predictor import Predictor  # noqa: E402
from autodrs.serve.tuning import ServingConfig  # noqa: E402
from test_fuzz_serve import (  # noqa: E402
    bodies,
    check_predict,
    check_request,
    fuzz_model,
    tables,
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=500, help="random tables to predict")
    parser.add_argument("--bodies", type=int, default=3000, help="random request bodies")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    print(machine_line())
    with tempfile.TemporaryDirectory() as tmp:
        model = fuzz_model(Path(tmp) / "model")
        exits: Counter[int] = Counter()

        def predict(table: dict[str, Any]) -> None:
            exits[check_predict(model, table)] += 1

        tried, failures = run(args.files, args.seed, tables(), predict)
        report("predict on random files", tried, failures)
        print(f"  passing examples by exit code: {dict(sorted(exits.items()))}")
        predictor = Predictor.from_folder(model)
        with TestClient(create_app(predictor, ServingConfig(max_request_rows=8)),
                        raise_server_exceptions=False) as client:
            statuses: Counter[int] = Counter()

            def request(body: bytes) -> None:
                statuses[check_request(client, body)] += 1

            tried, failures = run(args.bodies, args.seed, bodies(), request)
            healthy = client.get("/health").status_code == 200
        report("POST /predict with random bodies", tried, failures)
        print(f"  passing examples by status: {dict(sorted(statuses.items()))}")
        print(f"server healthy after the run: {healthy}")


def run(examples: int, seed_value: int, strategy: Any,
        check: Any) -> tuple[int, Counter[str]]:
    """Draw ``examples`` values and apply ``check`` to each; failures are counted by their
    last traceback line, not shrunk, and the run goes on."""
    tried = 0
    failures: Counter[str] = Counter()

    @seed(seed_value)
    @settings(max_examples=examples, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    @given(value=strategy)
    def each(value: Any) -> None:
        nonlocal tried
        tried += 1
        try:
            check(value)
        except Exception as e:  # every failure is counted, whatever its kind
            lines = traceback.format_exception_only(e)
            failures[f"{type(e).__name__}: {lines[-1].strip()[:200]}"] += 1

    each()
    return tried, failures


def report(name: str, tried: int, failures: Counter[str]) -> None:
    print(f"{name}: {tried} examples tried, {sum(failures.values())} failed")
    for message, count in failures.most_common():
        print(f"  {count} x {message}")


if __name__ == "__main__":
    main()
