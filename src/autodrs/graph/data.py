"""A user-item interaction graph from a log, with a leave-last-out split.

Each user's interactions are ordered by time (ties by row order); a user who interacted
with the same item more than once keeps only the earliest of those interactions (the graph
has one edge per pair, and a held-out item is never also a training edge). The user's last
interaction is their test item, the one before it their validation item, and the rest are
training edges. A user with fewer than three interactions has no held-out item: all of
theirs are training edges, and the user is not scored. The graph (adjacency and degrees) is
built from the training edges only, so no held-out edge shapes an embedding.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import polars as pl
import torch

from autodrs.data.errors import DataError

TRAIN, VALID, TEST = 0, 1, 2


@dataclass
class GraphData:
    """Users ``0..users-1`` and items ``0..items-1``; ``train`` is ``[E, 2]`` (user, item);
    ``valid`` and ``test`` are ``[U', 2]``, one held-out item per user that has one.
    ``log`` is the deduplicated log in (user, time) order with integer ``user`` and ``item``,
    ``time`` and ``part`` (``TRAIN``, ``VALID`` or ``TEST``), for the session task."""

    users: int
    items: int
    train: np.ndarray
    valid: np.ndarray
    test: np.ndarray
    user_ids: list[str]
    item_ids: list[str]
    log: pl.DataFrame

    def adjacency(self) -> torch.Tensor:
        """The training graph's symmetric-normalised bipartite adjacency
        ``D^-1/2 A D^-1/2`` over ``users + items`` nodes (LightGCN's propagation matrix),
        as a sparse CSR tensor."""
        return normalised(self.users, self.items, self.train, power=-0.5)

    def known(self) -> list[np.ndarray]:
        """Each user's training items, to leave out of the ranking."""
        order = np.argsort(self.train[:, 0], kind="stable")
        users, items = self.train[order, 0], self.train[order, 1]
        bounds = np.searchsorted(users, np.arange(self.users + 1))
        return [items[bounds[u]:bounds[u + 1]] for u in range(self.users)]


def normalised(users: int, items: int, edges: np.ndarray, power: float) -> torch.Tensor:
    """``D^p A D^p`` (``power=-0.5``) or ``D^-1 A`` (``power=-1``, row-normalised mean) of
    the bipartite graph of ``edges``, sparse CSR over ``users + items`` nodes."""
    n = users + items
    u = torch.as_tensor(edges[:, 0], dtype=torch.long)
    i = torch.as_tensor(edges[:, 1], dtype=torch.long) + users
    rows = torch.cat([u, i])
    cols = torch.cat([i, u])
    degree = torch.bincount(rows, minlength=n).float().clamp_min(1.0)
    if power == -1.0:
        values = 1.0 / degree[rows]
    else:
        values = degree[rows].pow(power) * degree[cols].pow(power)
    with warnings.catch_warnings():  # CSR support is flagged beta; products are all we use
        warnings.simplefilter("ignore", UserWarning)
        return torch.sparse_coo_tensor(torch.stack([rows, cols]), values, (n, n),
                                       check_invariants=False).coalesce().to_sparse_csr()


def from_log(df: pl.DataFrame, user: str, item: str, time: str) -> GraphData:
    """The leave-last-out graph of a log with ``user``, ``item`` and ``time`` columns."""
    for column in (user, item, time):
        if column not in df.columns:
            raise DataError(f"graph: no column {column!r} (columns: {', '.join(df.columns)})")
    if df.height == 0:
        raise DataError("graph: the log has no rows")
    for column in (user, item, time):
        if df[column].null_count():
            raise DataError(f"graph: the column {column!r} has missing values")
    if df[time].dtype == pl.String:  # a text file's column: numbers, else date-times
        df = df.with_columns(_parse_time(df[time]))
    log = (df.select(pl.col(user).cast(pl.String).alias("u"),
                     pl.col(item).cast(pl.String).alias("i"), pl.col(time).alias("t"))
           .with_row_index("row").sort(["u", "t", "row"])
           .unique(subset=["u", "i"], keep="first", maintain_order=True))
    user_ids = log["u"].unique(maintain_order=True).to_list()
    item_ids = sorted(log["i"].unique().to_list())
    u = log["u"].replace_strict(user_ids, list(range(len(user_ids))),
                                return_dtype=pl.Int64).to_numpy()
    i = log["i"].replace_strict(item_ids, list(range(len(item_ids))),
                                return_dtype=pl.Int64).to_numpy()
    n = len(u)
    last = np.ones(n, dtype=bool)
    last[:-1] = u[1:] != u[:-1]  # a user's last row (rows are in (user, time) order)
    count = np.bincount(u, minlength=len(user_ids))
    test = last & (count[u] >= 3)
    valid = np.zeros(n, dtype=bool)
    valid[:-1] = test[1:]  # the row before a test row: the same user's (they have >= 3)
    part = np.where(test, TEST, np.where(valid, VALID, TRAIN))
    edges = np.stack([u, i], 1)
    frame = pl.DataFrame({"user": u, "item": i, "time": log["t"], "part": part})
    return GraphData(users=len(user_ids), items=len(item_ids), train=edges[part == TRAIN],
                     valid=edges[valid], test=edges[test], user_ids=user_ids,
                     item_ids=item_ids, log=frame)


def _parse_time(column: pl.Series) -> pl.Series:
    for parse in (lambda c: c.cast(pl.Float64), lambda c: c.str.to_datetime()):
        try:
            return parse(column)
        except (pl.exceptions.InvalidOperationError, pl.exceptions.ComputeError):
            continue
    raise DataError(f"graph: the time column {column.name!r} holds neither numbers nor "
                    f"date-times (e.g. {column[0]!r})")


def movielens_graph() -> GraphData:
    """MovieLens-100k's ratings as implicit feedback (every rating an edge), leave-last-out
    by rating time."""
    from autodrs.data.sources import load_table

    table = load_table("movielens-100k")
    return from_log(table.df, "user_id", "item_id", "timestamp")
