"""Chunked readers: every source yields its rows as a sequence of Polars frames, so the
encoder never needs the whole table in memory.

Text files (CSV, TSV, the Criteo and Avazu layouts, gzip'd or not) are read with PyArrow's
streaming CSV reader and every column as text: a column's kind is inferred from its text
(see ``infer_text_kinds``), so ``06513`` stays the string ``06513`` at training and at
scoring time. A row with the wrong number of fields is an error naming its line.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl

from autodrs.data.errors import DataError

CHUNK_ROWS = 262_144
TEXT_BLOCK_BYTES = 16 << 20
_INT_TEXT = re.compile(r"^[+-]?\d+$")


@dataclass
class Source:
    """A table as chunks, plus what its source knows about it. ``chunks()`` starts a new
    pass over the rows each time it is called."""

    name: str
    chunks: Callable[[], Iterator[pl.DataFrame]]
    label: str = "label"
    time: str | None = None
    group: str | None = None
    kinds: dict[str, str] = field(default_factory=dict)
    log_numerical: list[str] = field(default_factory=list)
    identity: str = ""
    truth: dict[str, Any] | None = None
    labels: list[str] | None = None  # several label columns (``label`` is the first)
    text_columns: bool = False  # every column arrives as text (CSV-like files)
    # optional direct Arrow reading: (columns, text columns wanted dictionary-encoded) ->
    # record batches of those columns; the cache build uses it in place of ``chunks``
    arrow: Callable[[list[str], list[str]], Iterator[Any]] | None = None

    def capped(self, rows: int | None) -> Source:
        """The same source reading at most ``rows`` rows (all of them for None)."""
        if rows is None:
            return self
        if rows < 1:
            raise DataError(f"--rows must be at least 1, got {rows}")
        inner = self.chunks

        def chunks() -> Iterator[pl.DataFrame]:
            left = rows
            for chunk in inner():
                if chunk.height >= left:
                    yield chunk.head(left)
                    return
                left -= chunk.height
                yield chunk

        arrow = None
        if self.arrow is not None:
            inner_arrow = self.arrow

            def arrow(columns: list[str], dictionary: list[str]) -> Iterator[Any]:
                left = rows
                for batch in inner_arrow(columns, dictionary):
                    if batch.num_rows >= left:
                        yield batch.slice(0, left)
                        return
                    left -= batch.num_rows
                    yield batch

            # what the cache's native Parquet pass reads: the same file, capped
            arrow.parquet_path = getattr(inner_arrow, "parquet_path", None)  # type: ignore[attr-defined]
            cap = getattr(inner_arrow, "rows_cap", None)
            arrow.rows_cap = rows if cap is None else min(cap, rows)  # type: ignore[attr-defined]

        return Source(**{**self.__dict__, "chunks": chunks, "arrow": arrow,
                         "identity": f"{self.identity}:rows={rows}" if self.identity else ""})


def frame_chunks(df: pl.DataFrame) -> Callable[[], Iterator[pl.DataFrame]]:
    """Chunks of a table already in memory."""
    def chunks() -> Iterator[pl.DataFrame]:
        for start in range(0, max(df.height, 1), CHUNK_ROWS):
            yield df.slice(start, CHUNK_ROWS)

    return chunks


def parquet_chunks(path: Path) -> Callable[[], Iterator[pl.DataFrame]]:
    import pyarrow.parquet as pq

    def chunks() -> Iterator[pl.DataFrame]:
        try:
            pf = pq.ParquetFile(path, pre_buffer=False)
            batches = pf.iter_batches(batch_size=CHUNK_ROWS, use_threads=False)
            for batch in batches:
                df = pl.from_arrow(batch)
                assert isinstance(df, pl.DataFrame)
                yield df
        except (OSError, ValueError) as e:
            raise DataError(f"{path}: cannot read the Parquet file: {_first_line(e)}") from e

    return chunks


def parquet_arrow(path: Path) -> Callable[[list[str], list[str]], Iterator[Any]]:
    """Record batches of some columns of a Parquet file, text columns named in
    ``dictionary`` read as Arrow dictionaries (no per-value strings)."""
    import pyarrow.parquet as pq

    def batches(columns: list[str], dictionary: list[str]) -> Iterator[Any]:
        import pyarrow as pa

        try:
            pf = pq.ParquetFile(path, pre_buffer=False)
            schema = pf.schema_arrow
            missing = [c for c in columns if c not in schema.names]
            if missing:
                raise DataError(f"columns missing from the table: {', '.join(missing)}")
            text = [c for c in dictionary if c in schema.names and
                    (pa.types.is_string(schema.field(c).type)
                     or pa.types.is_large_string(schema.field(c).type))]
            if text:
                pf = pq.ParquetFile(path, read_dictionary=text, pre_buffer=False)
        except (OSError, ValueError) as e:
            if isinstance(e, DataError):
                raise
            raise DataError(f"{path}: cannot read the Parquet file: {_first_line(e)}") from e
        try:
            yield from pf.iter_batches(batch_size=CHUNK_ROWS, columns=columns,
                                       use_threads=False)
        except (OSError, ValueError) as e:
            raise DataError(f"{path}: cannot read the Parquet file: {_first_line(e)}") from e

    batches.parquet_path = path  # type: ignore[attr-defined]  # the cache's native pass
    return batches


def open_text(path: Path) -> io.TextIOBase:
    """A text handle on a plain or gzip'd file."""
    if path.suffix == ".gz":
        import gzip

        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8", errors="replace")
    return path.open("r", encoding="utf-8", errors="replace")


def read_header(path: Path, sep: str) -> list[str]:
    """The column names of a delimited file's first line; duplicates are an error."""
    with open_text(path) as fh:
        first = fh.readline()
    if not first.strip():
        raise DataError(f"{path} is empty")
    names = next(csv.reader([first.rstrip("\r\n")], delimiter=sep))
    seen: set[str] = set()
    dups = sorted({n for n in names if n in seen or seen.add(n)})  # type: ignore[func-returns-value]
    if dups:
        raise DataError(f"{path}: duplicate column names in the header: {', '.join(dups)}")
    if any(not n for n in names):
        raise DataError(f"{path}: the header has an empty column name")
    return names


def text_chunks(path: Path, sep: str, names: list[str], header: bool,
                quote: bool = True) -> Callable[[], Iterator[pl.DataFrame]]:
    """Stream a delimited text file as frames of text columns; empty fields are null."""
    import pyarrow as pa
    import pyarrow.csv as pcsv

    def chunks() -> Iterator[pl.DataFrame]:
        bad: list[Any] = []

        def invalid(row: Any) -> str:
            bad.append(row)
            return "error"

        read = pcsv.ReadOptions(use_threads=False, block_size=TEXT_BLOCK_BYTES,
                                column_names=names, skip_rows=1 if header else 0)
        parse = pcsv.ParseOptions(delimiter=sep, quote_char='"' if quote else False,
                                  invalid_row_handler=invalid)
        convert = pcsv.ConvertOptions(column_types={n: pa.string() for n in names},
                                      strings_can_be_null=True, null_values=[""],
                                      quoted_strings_can_be_null=True)
        try:
            stream = pa.input_stream(str(path), compression="detect")
            reader = pcsv.open_csv(stream, read_options=read, parse_options=parse,
                                   convert_options=convert)
            for batch in reader:
                df = pl.from_arrow(batch)
                assert isinstance(df, pl.DataFrame)
                yield df
        except (pa.ArrowInvalid, OSError, UnicodeDecodeError) as e:
            if bad:
                row = bad[0]
                line = row.number if row.number is not None else "?"
                raise DataError(
                    f"{path}: malformed row at line {line}: expected {row.expected_columns} "
                    f"fields separated by {sep!r}, found {row.actual_columns}") from e
            if isinstance(e, pa.ArrowInvalid) and "Empty CSV file" in str(e):
                raise DataError(f"{path} is empty") from e
            raise DataError(f"{path}: cannot read the file: {_first_line(e)}") from e

    return chunks


def infer_text_kinds(df: pl.DataFrame, skip: set[str]) -> dict[str, str]:
    """Kinds of text columns: a column whose values all read as decimal numbers but not all
    as integers is numerical; everything else (integers included, which are ids in CTR data)
    is categorical. Integer-looking text keeps its spelling (leading zeros)."""
    kinds = {}
    for name in df.columns:
        if name in skip or df[name].dtype != pl.String:
            continue
        values = df[name].drop_nulls()
        if values.len() == 0:
            kinds[name] = "categorical"
            continue
        as_float = values.cast(pl.Float64, strict=False)
        numeric = as_float.null_count() == 0
        integer = bool(values.str.contains(_INT_TEXT.pattern).all())
        kinds[name] = "numerical" if numeric and not integer else "categorical"
    return kinds


def cast_or_line(df: pl.DataFrame, path: Path, col: str, dtype: Any,
                 first_line: int) -> pl.DataFrame:
    """Cast a text column, naming the file line of the first value that is not a number
    (``first_line`` is the line of the frame's first row)."""
    cast = df[col].cast(dtype, strict=False)
    bad = (cast.is_null() & df[col].is_not_null()).arg_true()
    if len(bad):
        row = int(bad[0])
        raise DataError(
            f"{path}: malformed row at line {first_line + row}: column {col} has "
            f"{df[col][row]!r}, expected a number")
    return df.with_columns(cast.alias(col))


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__
