"""The cache build's native pass for Parquet files: Polars reads the file a row group at a
time (``slices``) and computes on its own threads every categorical field's provisional id,
``value - min + 2`` in uint16 (int32 when a field's range is wider), the range taken from
the file's row-group statistics. Python sees each read once (``cache._native_pass``): it
hashes the row numbers into splits and orders the rows by split, counts the train ids per
field, keeps the numerical moments and appends the blocks to the shards. The vocabularies
are then fitted from the counts exactly as the general pass fits them (same values, same
train counts), so the final ids read through the ``remap`` tables are the same; only the
provisional ids on disk differ (value order, not order of first sight).

It applies to a random split of a Parquet file whose categorical fields are integer columns
with statistics in every row group (range below ``cache.LUT_RANGE``), whose numerical fields
are untransformed numbers, with one label and no sequence or group column; anything else
takes the general pass (``plan`` returns None).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from autodrs.data import readers
from autodrs.data.errors import DataError
from autodrs.data.prefetch import prefetch
from autodrs.data.schema import Schema, check_label

_P_MISSING, _P_FIRST = 1, 2


@dataclass
class Plan:
    """What the native pass needs: the file, the row cap, each categorical field's value
    range (``lo``, ``hi``) and whether it has nulls, and the id dtype."""

    path: Path
    rows: int | None
    total: int  # rows the pass reads
    ranges: dict[str, tuple[int, int]]
    nulls: dict[str, bool]
    id_dtype: Any  # pl.UInt16 or pl.Int32
    groups: list[int]  # rows of each row group, in file order


def plan(source: Any, schema: Schema, split: str, time_cuts: Any, lut_range: int,
         extra: tuple[str, ...]) -> Plan | None:
    """The native pass's plan for ``source``, or None where the general pass must run."""
    arrow = getattr(source, "arrow", None)
    path = getattr(arrow, "parquet_path", None)
    if path is None or split != "random" or time_cuts is not None or schema.group \
            or schema.labels:
        return None
    if any(f.kind not in ("categorical", "numerical") for f in schema.fields):
        return None
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        meta = pq.ParquetFile(path).metadata
        arrow_schema = pq.read_schema(path)
    except (OSError, ValueError):
        return None  # the general pass names the problem
    names = arrow_schema.names
    for c in [*schema.field_names, schema.label, *extra]:
        if c not in names:
            return None
    t = arrow_schema.field(schema.label).type
    if not (pa.types.is_integer(t) or pa.types.is_boolean(t)):
        return None
    for f in schema.fields:
        t = arrow_schema.field(f.name).type
        if f.kind == "numerical" and (f.transform != "none" or not (
                pa.types.is_floating(t) or pa.types.is_integer(t))):
            return None
        if f.kind == "categorical" and not pa.types.is_integer(t):
            return None
    if meta.num_row_groups == 0:
        return None
    ranges: dict[str, tuple[int, int]] = {}
    nulls: dict[str, bool] = {}
    top = 0
    for f in schema.fields:
        if f.kind != "categorical":
            continue
        j = names.index(f.name)
        lo = hi = None
        has_null = False
        for g in range(meta.num_row_groups):
            col = meta.row_group(g).column(j)
            s = col.statistics
            if s is None or not s.has_null_count:
                return None
            has_null = has_null or s.null_count > 0
            if s.null_count == col.num_values:
                continue
            if not s.has_min_max:
                return None
            lo = s.min if lo is None else min(lo, s.min)
            hi = s.max if hi is None else max(hi, s.max)
        if lo is None or hi is None or hi - lo >= lut_range or hi >= 1 << 62 \
                or lo <= -(1 << 62):
            return None  # an all-null column's error, or a wide range, is the general pass's
        ranges[f.name] = (int(lo), int(hi))
        nulls[f.name] = has_null
        top = max(top, int(hi) - int(lo) + 1 + _P_FIRST)
    rows = getattr(arrow, "rows_cap", None)
    total = meta.num_rows if rows is None else min(rows, meta.num_rows)
    return Plan(Path(path), rows, total, ranges, nulls,
                pl.UInt16 if top <= 1 << 16 else pl.Int32,
                [meta.row_group(g).num_rows for g in range(meta.num_row_groups)])


def slices(p: Plan, rows: int | None = None, most: int | None = None) -> list[tuple[int, int]]:
    """(start, rows) of the pass's reads, in file order: whole row groups, consecutive ones
    joined until a read holds at least ``rows`` rows (``readers.CHUNK_ROWS``), and a row
    group of more than ``most`` rows (4 chunks) cut into reads of ``most``. A read that
    starts or ends inside a row group decodes that group again (a 4M-row file of 500k-row
    groups read in 262,144-row slices cost Polars 1.5 times the CPU of whole groups)."""
    rows = rows or readers.CHUNK_ROWS
    most = most or 4 * rows
    out: list[tuple[int, int]] = []
    begin = end = 0
    for size in p.groups:
        end = min(end + size, p.total)
        while end - begin > most:
            out.append((begin, most))
            begin += most
        if end - begin >= rows:
            out.append((begin, end - begin))
            begin = end
        if end == p.total:
            break
    if end > begin:
        out.append((begin, end - begin))
    return out


def batches(p: Plan, schema: Schema, extra: tuple[str, ...]) -> Any:
    """The encoded columns, a read of ``slices`` at a time, in file order: the label as read, each
    categorical field's provisional id, each numerical field as float64 and the ``extra``
    columns (as ``__extra_<name>``). Each read is one Polars query over its rows (decoded
    and cast on Polars' threads); the next is read on a background thread while the caller
    works, so at most two are held. (Polars' ``collect_batches`` over the whole file reads
    ahead of a slower consumer without bound: a 16M-row file's encoding peaked 630 MB above
    a 1M-row file's.)"""
    cols: list[pl.Expr] = [pl.col(schema.label)]
    for f in schema.fields:
        if f.kind == "categorical":
            lo = p.ranges[f.name][0]
            e = pl.col(f.name) - (lo - _P_FIRST)
            if p.nulls[f.name]:
                e = e.fill_null(_P_MISSING)
            cols.append(e.cast(p.id_dtype, wrap_numerical=True).alias(f.name))
        else:
            cols.append(pl.col(f.name).cast(pl.Float64).alias(f.name))
    cols += [pl.col(c).alias(f"__extra_{c}") for c in extra]
    lf = pl.scan_parquet(p.path).select(cols)

    def read(part: tuple[int, int]) -> pl.DataFrame:
        try:
            return lf.slice(*part).collect()
        except (pl.exceptions.ComputeError, OSError) as e:
            raise DataError(f"{p.path}: cannot read the Parquet file: {e}") from e

    yield from prefetch(map(read, slices(p)))


def labels(s: pl.Series, name: str) -> np.ndarray:
    """A batch's label as uint8 0/1; anything else is ``check_label``'s clear error."""
    if not s.null_count() and (s.dtype.is_integer() or s.dtype == pl.Boolean):
        x = s.to_numpy()
        if x.dtype == np.bool_ or (len(x) and x.min() >= 0 and x.max() <= 1):
            return x.astype(np.uint8)
    return check_label(pl.DataFrame({name: s}), name).astype(np.uint8)
