"""Batch prediction over a file in bounded memory: read a chunk, encode, score, append.

A column is encoded as training encoded it, whatever types a reader would guess: a CSV or
TSV file is read as text (as ``data.sources`` reads a training file, so ``06513`` stays
``06513``), and each model field is then converted to what its kind holds: text for a
categorical or sequence field, a float for a numerical one, where a value that is not a
number is an error naming its line. Parquet columns are read as stored and cast the same
way (an integer column becomes its digits, as ``Schema`` casts it at training). Before
reading, a CSV is checked in one pass: UTF-8 text, no column named twice in the header, and
every row (blank ones included) with as many fields as the header, each error naming the
line. Only the model's fields and the columns to keep are read, in chunks.

Files in the Criteo or Avazu layout and gzip'd text files are read by the readers training
uses (``data.sources``, streamed in blocks), so a model trained on such a file scores one
like it.

Output is CSV, TSV or Parquet (by the ``--out`` suffix), written chunk by chunk to a
temporary file beside it that replaces the target only when complete; ``--out`` may not be
the input file.
"""

from __future__ import annotations

import csv
import itertools
import os
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import polars as pl

from autodrs.data.errors import DataError
from autodrs.data.sources import _guess_format
from autodrs.serve.predictor import Predictor

CHUNK_ROWS = 65_536
OUTPUT_COLUMN = "probability"
INPUT_FORMATS = ("csv", "tsv", "parquet", "criteo", "avazu")
LAYOUT_FORMATS = ("criteo", "avazu")


def read_chunks(path: str | Path, columns: list[str], fmt: str | None = None,
                chunk_rows: int = CHUNK_ROWS,
                kinds: dict[str, str] | None = None) -> Iterator[pl.DataFrame]:
    """Chunks of at most ``chunk_rows`` rows of ``columns`` of a CSV, TSV or Parquet file,
    each column named in ``kinds`` converted to what a field of that kind holds (see the
    module docstring). Raises ``DataError`` naming the columns the file lacks or the line
    where the file is malformed."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"data file {path} not found")
    if path.stat().st_size == 0:
        raise DataError(f"{path} is empty")
    if chunk_rows < 1:
        raise DataError(f"chunk rows must be >= 1, got {chunk_rows}")
    fmt = fmt or _guess_format(path)
    if fmt not in INPUT_FORMATS:
        raise DataError(f"predict reads {', '.join(INPUT_FORMATS)} files; "
                        f"{path} looks like {fmt!r} (pass --format to override)")
    if fmt in LAYOUT_FORMATS or path.suffix == ".gz":
        return _source_chunks(path, fmt, columns, chunk_rows, kinds or {})
    spans_lines = False
    try:
        if fmt == "parquet":
            scan = pl.scan_parquet(path)
        else:
            sep = "\t" if fmt == "tsv" else ","
            spans_lines = check_csv(path, sep)
            scan = pl.scan_csv(path, separator=sep, infer_schema=False)
        available = scan.collect_schema().names()
    except (pl.exceptions.PolarsError, OSError) as e:
        raise DataError(f"{path}: cannot read the file: {str(e).splitlines()[0]}") from e
    missing = [c for c in columns if c not in available]
    if missing:
        raise DataError(f"columns missing from {path}: {', '.join(missing)}")
    return _chunks(scan.select(columns), path, chunk_rows, kinds or {}, spans_lines)


def _source_chunks(path: Path, fmt: str, columns: list[str], chunk_rows: int,
                   kinds: dict[str, str]) -> Iterator[pl.DataFrame]:
    """Chunks through training's reader for ``fmt`` (which names the line of a malformed
    row); the first block is read here, so missing columns are reported before any output."""
    from autodrs.data.sources import open_source

    blocks = open_source(str(path), fmt=fmt).chunks()
    first = next(blocks, None)
    if first is None:
        raise DataError(f"{path} has no data rows")
    missing = [c for c in columns if c not in first.columns]
    if missing:
        raise DataError(f"columns missing from {path} (read as {fmt}): {', '.join(missing)}; "
                        f"it has {', '.join(first.columns)}")

    def chunks() -> Iterator[pl.DataFrame]:
        done = 0
        for block in itertools.chain([first], blocks):
            block = block.select(columns)
            for start in range(0, block.height, chunk_rows):
                chunk = block.slice(start, chunk_rows)
                yield _as_kinds(chunk, kinds, path, done, spans_lines=True)
                done += chunk.height

    return chunks()


def check_csv(path: Path, sep: str) -> bool:
    """Check a CSV or TSV file in one pass, as Polars will parse it (quotes included):
    UTF-8 text, a header without repeated names, the header's field count on every line (a
    blank line counts as one empty field). Returns whether a quoted field spans lines."""
    if csv.field_size_limit() < sys.maxsize // 2:
        csv.field_size_limit(sys.maxsize // 2)  # fields as long as Polars reads
    spans = False
    with path.open("rb") as fh:
        lines = _utf8_lines(fh, path)
        reader = csv.reader(lines, delimiter=sep, quotechar='"')
        try:
            header = next(reader)
            header[0] = header[0].removeprefix("\ufeff")
            repeated = sorted({n for n in header if header.count(n) > 1})
            if repeated:
                raise DataError(f"{path}: columns named more than once in the header: "
                                f"{', '.join(repeated)} (line 1)")
            last_line = reader.line_num
            for row in reader:
                line = last_line + 1
                if reader.line_num != line:
                    spans = True
                last_line = reader.line_num
                if len(header) == 1 and not row:
                    continue  # a blank line is a null in a one-column file
                if not row:
                    raise DataError(f"{path}: line {line} is blank; the header has "
                                    f"{len(header)} fields")
                if len(row) != len(header):
                    raise DataError(f"{path}: line {line} has {len(row)} fields; the header "
                                    f"has {len(header)}")
        except StopIteration:
            raise DataError(f"{path} is empty") from None
        except csv.Error as e:
            raise DataError(f"{path}: line {reader.line_num}: {e}") from e
    return spans


def _utf8_lines(fh: object, path: Path) -> Iterator[str]:
    for number, raw in enumerate(fh, start=1):  # type: ignore[call-overload]
        try:
            yield raw.decode("utf-8")
        except UnicodeDecodeError as e:
            raise DataError(f"{path}: line {number} is not UTF-8 text (byte {e.start + 1} of "
                            "the line); save the file as UTF-8") from e


def _chunks(scan: pl.LazyFrame, path: Path, chunk_rows: int, kinds: dict[str, str],
            spans_lines: bool) -> Iterator[pl.DataFrame]:
    done = 0
    try:
        for batch in scan.collect_batches(chunk_size=chunk_rows):
            # the streaming engine may hand over more rows than asked; keep chunks bounded
            for start in range(0, batch.height, chunk_rows):
                chunk = batch.slice(start, chunk_rows)
                yield _as_kinds(chunk, kinds, path, done, spans_lines)
                done += chunk.height
    except (pl.exceptions.PolarsError, OSError) as e:
        raise DataError(f"{path}: cannot read the file: {str(e).splitlines()[0]}") from e


def _as_kinds(chunk: pl.DataFrame, kinds: dict[str, str], path: Path, first_row: int,
              spans_lines: bool) -> pl.DataFrame:
    """``chunk`` with each field's column as its kind holds it: text (categorical), a float
    (numerical), text or a list of text (sequence)."""
    columns = []
    for name, kind in kinds.items():
        col = chunk[name]
        try:
            if kind == "numerical":
                columns.append(_numbers(col, path, first_row, spans_lines))
            elif kind == "sequence" and isinstance(col.dtype, pl.List):
                columns.append(col.cast(pl.List(pl.String)))
            else:
                columns.append(col.cast(pl.String))
        except (pl.exceptions.PolarsError, OverflowError) as e:
            raise DataError(f"{path}: column {name!r} of type {col.dtype} cannot be read as a "
                            f"{kind} field: {str(e).splitlines()[0]}") from e
    return chunk.with_columns(columns)


def _numbers(col: pl.Series, path: Path, first_row: int, spans_lines: bool) -> pl.Series:
    if col.dtype.is_numeric() or col.dtype == pl.Boolean or col.dtype == pl.Null:
        return col.cast(pl.Float64)
    if col.dtype != pl.String:
        raise DataError(f"{path}: column {col.name!r} holds {col.dtype}, not numbers")
    values = col.cast(pl.Float64, strict=False)
    bad = (values.is_null() & col.is_not_null()).arg_true()
    if len(bad):
        row = first_row + int(bad[0])
        where = f"data row {row + 1}" if spans_lines else f"line {row + 2}"
        raise DataError(f"{path}: {where}, column {col.name!r}: {col[int(bad[0])]!r} is not "
                        "a number")
    return values


class _Writer:
    """Appends chunks to a CSV, TSV or Parquet file, chosen by the file's suffix, through a
    temporary file of its own beside the target."""

    def __init__(self, path: Path) -> None:
        suffix = path.suffix.lower()
        self.kind = ("parquet" if suffix in (".parquet", ".pq") else
                     "tsv" if suffix == ".tsv" else "csv")
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        os.close(fd)
        self.tmp = Path(tmp)
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
    then ``probability``, or ``probability_<task>`` per task of a multi-task model), in
    input order. Returns the number of rows written."""
    keep = list(keep or [])
    if OUTPUT_COLUMN in keep:
        raise DataError(f"--keep cannot name {OUTPUT_COLUMN!r}: it is the output column")
    data, out = Path(data), Path(out)
    if _same_file(data, out):
        raise DataError(f"--out {out} is the input file {data}; predict would replace the rows "
                        "it reads with their scores. Give another file name")
    if out.is_dir():
        raise DataError(f"--out {out} is a folder; give a file name such as {out}/scores.csv")
    columns = list(dict.fromkeys([*predictor.feature_names, *keep]))
    kinds = {f.name: f.kind for f in predictor.schema.fields}
    chunks = read_chunks(data, columns, fmt, chunk_rows, kinds)
    out.parent.mkdir(parents=True, exist_ok=True)
    writer = _Writer(out)
    rows, ok = 0, False
    try:
        for chunk in chunks:
            if chunk.height == 0:
                continue
            try:
                probs = predictor.predict_frame(chunk)
            except DataError as e:
                raise DataError(f"{data}, data rows {rows + 1}-{rows + chunk.height}: {e}") from e
            if probs.ndim == 2:  # a multi-task model: ``probability_<task>`` per task
                out_cols = [pl.Series(f"{OUTPUT_COLUMN}_{t}", probs[:, k])
                            for k, t in enumerate(predictor.schema.tasks)]
            else:
                out_cols = [pl.Series(OUTPUT_COLUMN, probs)]
            scored = pl.DataFrame([*(chunk[c] for c in keep), *out_cols])
            try:
                writer.write(scored)
            except (pl.exceptions.PolarsError, ValueError) as e:
                raise DataError(f"cannot write {out}: {str(e).splitlines()[0]} (a kept list "
                                "column needs Parquet output)") from e
            rows += chunk.height
        if rows == 0:
            raise DataError(f"{data} has no data rows")
        ok = True
    finally:
        writer.close(ok)
    return rows


def _same_file(data: Path, out: Path) -> bool:
    """Whether writing ``out`` would replace ``data``: one path, or links to one file."""
    if data.resolve() == out.resolve():
        return True
    try:
        return out.exists() and data.exists() and os.path.samefile(data, out)
    except OSError:
        return False
