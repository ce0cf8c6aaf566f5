"""Behaviour sequences from a time-ordered log: each row gains the user's previous items.

A row's history holds the items of the same user's rows with a strictly earlier time, most
recent last, at most ``max_len`` of them. Rows at the same time as the row itself are not in
its history (their order within one timestamp is unknown), so no row ever sees its own
item or a later one: the history is what was known before the interaction. The history is
a list column, which autodrs reads as a sequence field; the row order is kept.
"""

from __future__ import annotations

import numpy as np
import polars as pl

from autodrs.data.errors import DataError


def add_histories(df: pl.DataFrame, user: str, item: str, time: str, max_len: int = 20,
                  name: str = "history") -> pl.DataFrame:
    """``df`` with a list column ``name``: each row's user's last ``max_len`` items before
    the row's time (strictly earlier), oldest first."""
    for column in (user, item, time):
        if column not in df.columns:
            raise DataError(f"history: no column {column!r} (columns: "
                            f"{', '.join(df.columns)})")
    if max_len < 1:
        raise DataError(f"history: max_len must be at least 1, got {max_len}")
    if name in df.columns:
        raise DataError(f"history: the table already has a column {name!r}")
    if df[time].null_count():
        raise DataError(f"history: the time column {time!r} has missing values")
    n = df.height
    order = (df.select(pl.col(user).rank("dense").alias("u"), pl.col(time).alias("t"))
             .with_row_index("row").sort(["u", "t", "row"]))
    users = order["u"].to_numpy()
    times = order["t"].to_numpy()
    rows = order["row"].to_numpy()
    position = np.arange(n)
    # the first sorted position of each user, and of each (user, time) run: a row's history
    # ends before the first row of its user at its time
    new_user = np.ones(n, dtype=bool)
    new_user[1:] = users[1:] != users[:-1]
    new_time = new_user.copy()
    new_time[1:] |= times[1:] != times[:-1]
    user_start = np.maximum.accumulate(np.where(new_user, position, 0))
    end = np.maximum.accumulate(np.where(new_time, position, 0))
    start = np.maximum(user_start, end - max_len)
    lengths = end - start
    # gather every history's items (in sorted order) in one flat index
    offsets = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    flat = np.repeat(start - offsets[:-1], lengths) + np.arange(offsets[-1])
    items_sorted = df[item].cast(pl.String).gather(rows)
    values = items_sorted.gather(flat) if len(flat) else items_sorted.clear()
    # back to the table's row order
    back = np.empty(n, dtype=np.int64)
    back[rows] = position
    histories = _split(values, offsets, name)
    return df.with_columns(histories.gather(back))


def _split(values: pl.Series, offsets: np.ndarray, name: str) -> pl.Series:
    """A list column whose row ``i`` is ``values[offsets[i]:offsets[i + 1]]``."""
    import pyarrow as pa

    array = pa.LargeListArray.from_arrays(pa.array(offsets, pa.int64()), values.to_arrow())
    return pl.Series(name, array).cast(pl.List(pl.String))
