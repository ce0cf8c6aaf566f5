"""Batch prediction over a file in bounded memory: read a chunk, encode, score, append.

CSV and TSV files are scanned lazily with the column types Polars infers from their first
10,000 rows (as ``data.sources`` reads a training file, so a value is encoded the same way
at training and at prediction time) and read in chunks by the streaming engine; Parquet files
are read in record batches. Only the model's fields and the columns to keep are read.
Output is CSV, TSV or Parquet (by the ``--out`` suffix), written chunk by chunk to a
temporary file that replaces the target only when complete.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import polars as pl

from autodrs.data.errors import DataError
from autodrs.data.sources import _guess_format
from autodrs.serve.predictor import Predictor

CHUNK_ROWS = 65_536
INFER_ROWS = 10_000  # as data.sources reads CSV for training
OUTPUT_COLUMN = "probability"
INPUT_FORMATS = ("csv", "tsv", "parquet")


def read_chunks(path: str | Path, columns: list[str], fmt: str | None = None,
                chunk_rows: int = CHUNK_ROWS) -> Iterator[pl.DataFrame]:
    """Chunks of at most ``chunk_rows`` rows of ``columns`` of a CSV, TSV or Parquet file.
    Raises ``DataError`` naming the columns the file lacks."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"data file {path} not found")
    if path.stat().st_size == 0:
        raise DataError(f"{path} is empty")
    if chunk_rows < 1:
        raise DataError(f"chunk rows must be >= 1, got {chunk_rows}")
    fmt = fmt or _guess_format(path)
    if fmt not in INPUT_FORMATS:
        raise DataError(f"predict reads {', '.join(INPUT_FORMATS)} files with a header; "
                        f"{path} looks like {fmt!r} (pass --format to override)")
    try:
        if fmt == "parquet":
            scan = pl.scan_parquet(path)
        else:
            scan = pl.scan_csv(path, separator="\t" if fmt == "tsv" else ",",
                               infer_schema_length=INFER_ROWS)
        available = scan.collect_schema().names()
    except (pl.exceptions.PolarsError, OSError) as e:
        raise DataError(f"{path}: cannot read the file: {str(e).splitlines()[0]}") from e
    missing = [c for c in columns if c not in available]
    if missing:
        raise DataError(f"columns missing from {path}: {', '.join(missing)}")
    return _chunks(scan.select(columns), path, chunk_rows)


def _chunks(scan: pl.LazyFrame, path: Path, chunk_rows: int) -> Iterator[pl.DataFrame]:
    try:
        for chunk in scan.collect_batches(chunk_size=chunk_rows):
            # the streaming engine may hand over more rows than asked; keep chunks bounded
            for start in range(0, chunk.height, chunk_rows):
                yield chunk.slice(start, chunk_rows)
    except (pl.exceptions.PolarsError, OSError) as e:
        raise DataError(f"{path}: cannot read the file: {str(e).splitlines()[0]}") from e


class _Writer:
    """Appends chunks to a CSV, TSV or Parquet file, chosen by the file's suffix."""

    def __init__(self, path: Path) -> None:
        suffix = path.suffix.lower()
        self.kind = ("parquet" if suffix in (".parquet", ".pq") else
                     "tsv" if suffix == ".tsv" else "csv")
        self.tmp = path.with_name(path.name + ".tmp")
        self.path = path
        self.parquet = None
        self.handle = None if self.kind == "parquet" else self.tmp.open("wb")

    def write(self, df: pl.DataFrame) -> None:
        if self.kind == "parquet":
            import pyarrow.parquet as pq

            table = df.to_arrow()
            if self.parquet is None:
                self.parquet = pq.ParquetWriter(self.tmp, table.schema)
            self.parquet.write_table(table)
        else:
            assert self.handle is not None
            df.write_csv(self.handle, separator="\t" if self.kind == "tsv" else ",",
                         include_header=self.handle.tell() == 0)

    def close(self, ok: bool) -> None:
        if self.parquet is not None:
            self.parquet.close()
        if self.handle is not None:
            self.handle.close()
        if ok:
            os.replace(self.tmp, self.path)
        else:
            self.tmp.unlink(missing_ok=True)


def predict_file(predictor: Predictor, data: str | Path, out: str | Path,
                 fmt: str | None = None, keep: list[str] | None = None,
                 chunk_rows: int = CHUNK_ROWS) -> int:
    """Write the click probability of every row of ``data`` to ``out`` (the ``keep`` columns,
    then ``probability``), in input order. Returns the number of rows written."""
    keep = list(keep or [])
    if OUTPUT_COLUMN in keep:
        raise DataError(f"--keep cannot name {OUTPUT_COLUMN!r}: it is the output column")
    columns = list(dict.fromkeys([*predictor.feature_names, *keep]))
    chunks = read_chunks(data, columns, fmt, chunk_rows)
    out = Path(out)
    if out.is_dir():
        raise DataError(f"--out {out} is a folder; give a file name such as {out}/scores.csv")
    out.parent.mkdir(parents=True, exist_ok=True)
    writer = _Writer(out)
    rows, ok = 0, False
    try:
        for chunk in chunks:
            if chunk.height == 0:
                continue
            probs = predictor.predict_frame(chunk)
            writer.write(pl.DataFrame([*(chunk[c] for c in keep),
                                       pl.Series(OUTPUT_COLUMN, probs)]))
            rows += chunk.height
        if rows == 0:
            raise DataError(f"{data} has no data rows")
        ok = True
    finally:
        writer.close(ok)
    return rows
