"""Redundant fields: two categorical fields whose encoded train ids are a near-bijection of
each other carry the same information, so a selection keeps only the better ranked one.

Purity of ``a -> b`` is the share of rows whose ``b`` id is the most common ``b`` id of
their ``a`` id; it is 1 when ``b`` is a function of ``a``. Rows whose ``a`` id is rarer
than ``min_count`` are left out, because a value seen once is trivially "pure" and would
make every high-cardinality pair look redundant. A pair is redundant when both directions
reach ``threshold``.
"""

from __future__ import annotations

from itertools import combinations

import numpy as np

from autodrs.data.dataset import EncodedData
from autodrs.data.schema import Schema

MIN_COUNT = 5
MAX_ROWS = 200_000


def purity(a: np.ndarray, b: np.ndarray, min_count: int = MIN_COUNT) -> float:
    """Share of rows (among those with an ``a`` id seen ``min_count`` times or more) whose
    ``b`` id is the modal ``b`` id of their ``a`` id."""
    a_ids, a_inverse, a_counts = np.unique(a, return_inverse=True, return_counts=True)
    common = a_counts[a_inverse] >= min_count
    if not common.any():
        return 0.0
    a, b = a[common], b[common]
    key = a.astype(np.int64) * (int(b.max()) + 1) + b
    pairs, pair_counts = np.unique(key, return_counts=True)
    pair_a = pairs // (int(b.max()) + 1)
    # pairs are sorted by key, hence grouped by a: the modal count of each a is a segment max
    starts = np.flatnonzero(np.r_[True, pair_a[1:] != pair_a[:-1]])
    modal = np.maximum.reduceat(pair_counts, starts)
    return float(modal.sum() / len(a))


def find_redundant(schema: Schema, data: EncodedData, fields: list[str],
                   threshold: float = 0.98) -> list[tuple[str, str]]:
    """Pairs of categorical ``fields`` whose train ids are a near-bijection of each other."""
    cat_index = {n: i for i, n in enumerate(schema.categorical)}
    names = [f for f in fields if f in cat_index]
    rows = min(len(data), MAX_ROWS)
    columns = {n: data.cat[:rows, cat_index[n]].numpy() for n in names}
    distinct = {n: len(np.unique(c)) for n, c in columns.items()}
    out = []
    for a, b in combinations(names, 2):
        # a bijection has as many distinct values on both sides: skip the obvious misses
        if min(distinct[a], distinct[b]) < threshold * max(distinct[a], distinct[b]):
            continue
        if (purity(columns[a], columns[b]) >= threshold
                and purity(columns[b], columns[a]) >= threshold):
            out.append((a, b))
    return out


def determined_pairs(schema: Schema, data: EncodedData, fields: list[str],
                     threshold: float = 0.98) -> set[tuple[str, str]]:
    """Ordered pairs ``(a, b)`` of categorical ``fields`` where ``b`` is (nearly) a function
    of ``a`` (purity of ``a -> b`` at least ``threshold``): a cross of ``a`` and ``b`` then
    holds no more than ``a`` alone (an item and its release year, a user and their age)."""
    cat_index = {n: i for i, n in enumerate(schema.categorical)}
    names = [f for f in fields if f in cat_index]
    rows = min(len(data), MAX_ROWS)
    columns = {n: data.cat[:rows, cat_index[n]].numpy() for n in names}
    return {(a, b) for a in names for b in names
            if a != b and purity(columns[a], columns[b]) >= threshold}


def redundant_copies(fields: list[str], pairs: list[tuple[str, str]]) -> dict[str, str]:
    """``{copy: representative}``: each group of mutually redundant fields is represented by
    its first field in ``fields`` order; the others are its copies."""
    parent = {f: f for f in fields}

    def root(f: str) -> str:
        while parent[f] != f:
            f = parent[f]
        return f

    position = {f: i for i, f in enumerate(fields)}
    for a, b in pairs:
        ra, rb = root(a), root(b)
        if ra != rb:
            lead, other = (ra, rb) if position[ra] < position[rb] else (rb, ra)
            parent[other] = lead
    return {f: root(f) for f in fields if root(f) != f}


def place_copies(ranking: list[str], copies: dict[str, str]) -> list[str]:
    """The ranking of the representatives with every copy right after its representative."""
    out: list[str] = []
    for f in ranking:
        out.append(f)
        out.extend(c for c, rep in copies.items() if rep == f)
    return out
