"""Behaviour histories from a time-ordered log: strictly earlier items only (no leakage from
the same or a later time), most recent kept, row order unchanged; MovieLens's sequence task."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from autodrs.data.errors import DataError
from autodrs.data.sequence import add_histories


def brute_force(df: pl.DataFrame, max_len: int) -> list[list[str]]:
    """Each row's history by definition: the same user's strictly earlier rows, sorted by
    (time, row), the last ``max_len`` items."""
    rows = df.with_row_index("row").to_dicts()
    out = []
    for r in rows:
        earlier = sorted((o for o in rows if o["u"] == r["u"] and o["t"] < r["t"]),
                         key=lambda o: (o["t"], o["row"]))
        out.append([str(o["i"]) for o in earlier][-max_len:] if earlier else [])
    return out


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_histories_hold_only_strictly_earlier_items_of_the_same_user(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = 400
    df = pl.DataFrame({"u": rng.integers(0, 12, n).astype(str),
                       "i": rng.integers(0, 50, n),
                       "t": rng.integers(0, 30, n)})  # many ties within a user
    got = add_histories(df, "u", "i", "t", max_len=4)
    assert got.columns == ["u", "i", "t", "history"]
    assert got.drop("history").equals(df)  # rows and their order unchanged
    assert got["history"].to_list() == brute_force(df, 4)


def test_no_future_or_same_time_item_reaches_a_history() -> None:
    # each user rates item == time, so any leaked item would be >= the row's own time
    df = pl.DataFrame({"u": ["a"] * 6 + ["b"] * 3, "i": [5, 1, 3, 3, 9, 7, 2, 2, 4],
                       "t": [5, 1, 3, 3, 9, 7, 2, 2, 4]})
    got = add_histories(df, "u", "i", "t", max_len=10)
    for t, history in zip(got["t"], got["history"], strict=True):
        assert all(int(item) < t for item in history)
    assert got["history"].to_list()[4] == ["1", "3", "3", "5", "7"]
    assert got["history"].to_list()[6] == [] and got["history"].to_list()[7] == []


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"user": "who"}, "no column 'who'"),
    ({"max_len": 0}, "max_len must be at least 1"),
])
def test_bad_history_requests_are_named(kwargs: dict[str, object], message: str) -> None:
    df = pl.DataFrame({"u": ["a"], "i": [1], "t": [1]})
    args = {"user": "u", "item": "i", "time": "t", **kwargs}
    with pytest.raises(DataError, match=message):
        add_histories(df, **args)  # type: ignore[arg-type]


def test_missing_times_are_refused() -> None:
    df = pl.DataFrame({"u": ["a", "a"], "i": [1, 2], "t": [1, None]})
    with pytest.raises(DataError, match="missing values"):
        add_histories(df, "u", "i", "t")


def test_movielens_sequence_task_is_a_sequence_field_without_leakage() -> None:
    from autodrs.data.sources import load_table

    table = load_table("movielens-100k?history=5")
    assert table.kinds["history"] == "sequence"
    df = table.df
    assert df.height == 100_000
    lengths = df["history"].list.len()
    assert lengths.max() == 5 and lengths.min() == 0
    # every history item was rated by the same user strictly earlier
    rated = df.select("user_id", "item_id", "timestamp").group_by(
        ["user_id", "item_id"]).agg(pl.col("timestamp").min().alias("first"))
    seen = (df.select("user_id", "timestamp", "history").with_row_index("row")
            .explode("history").drop_nulls("history")
            .join(rated, left_on=["user_id", "history"], right_on=["user_id", "item_id"]))
    assert seen.height == int(lengths.sum())
    assert (seen["first"] < seen["timestamp"]).all()
