"""Files in the Criteo Kaggle and Avazu layouts, of any size, with planted signal.

``write_layout("criteo", path, rows, seed)`` writes the Criteo Kaggle layout: tab-separated,
no header, the label, 13 integer fields I1-I13 and 26 categorical fields C1-C26 written as
8-hex-digit hashes, with empty values at about Criteo's missing rates. ``"avazu"`` writes the
Avazu CSV layout (header ``id,click,hour,...``, hours ``YYMMDDHH`` in time order over ten
days, no missing values). A ``.gz`` suffix gzips the file (with a zero timestamp, so the
bytes depend on the rows and the seed only).

Values follow a power law over a population of values per field (Criteo's cardinalities), so
a few values are frequent and most are rare: at 10M rows the largest Criteo fields have over
a million distinct values. The click is drawn from a logistic model: per-value main effects
of a few fields (of the frequent values only, for the huge fields), low-rank crosses of a
few field pairs (dot products of per-value vectors, what an FM can learn) and effects of two
integer fields (one linear in the log, one non-monotone). Per-value effects come from a hash
of the field, the value and the seed, so no table of the population is ever held; the
intercept is set from a pilot sample to reach the layout's click rate. Rows are drawn and
written in chunks of ``CHUNK_ROWS`` (bounded memory); the same rows and seed give the same
bytes. The true click model, its click rate and the AUC of the true probabilities (the best
AUC any model can reach, measured on the first ``TRUTH_ROWS`` rows) go to
``<path>.truth.json``.
"""

from __future__ import annotations

import gzip
import json
import os
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv

CHUNK_ROWS = 200_000
TRUTH_ROWS = 1_000_000
LATENT_DIM = 4
_M64 = np.uint64(0xFFFFFFFFFFFFFFFF)
_HEX = np.frombuffer(b"0123456789abcdef", np.uint8)
_SHIFTS = np.arange(28, -1, -4, dtype=np.uint32)


@dataclass(frozen=True)
class Categorical:
    """A categorical column: ranks 0..values-1 drawn with frequency ~ 1/(rank+1)^zipf,
    written as 8 hex digits (a bijective hash of the rank) or as ``base + rank``."""

    name: str
    values: int
    zipf: float
    missing: float = 0.0
    render: str = "hex"
    base: int = 0


@dataclass(frozen=True)
class Integer:
    """An integer count: floor(exp(N(mu, sigma))) + shift, empty with rate ``missing``."""

    name: str
    mu: float
    sigma: float
    missing: float = 0.0
    shift: int = 0


@dataclass(frozen=True)
class Layout:
    name: str
    label: str
    header: bool
    sep: str
    categorical: tuple[Categorical, ...]
    integer: tuple[Integer, ...]
    # field -> (scale, head): a per-value effect of the ``head`` most frequent values
    main: dict[str, tuple[float, int]]
    # (field a, field b, scale): dot products of per-value latent vectors
    pairs: tuple[tuple[str, str, float], ...]
    linear: dict[str, float] = field(default_factory=dict)  # integer field -> scale
    bump: dict[str, float] = field(default_factory=dict)  # integer field -> scale
    hour_scale: float = 0.0  # per-hour-of-day effect (Avazu)
    click_rate: float = 0.25


# Criteo Kaggle: the population of each categorical field is its cardinality in the 45M-row
# training file; missing rates are close to that file's.
_CRITEO_CARDS = [1460, 583, 10_131_227, 2_202_608, 305, 24, 12_517, 633, 3, 93_145, 5_683,
                 8_351_593, 3_194, 27, 14_992, 5_461_306, 10, 5_652, 2_173, 4, 7_046_547, 18,
                 15, 286_181, 105, 142_572]
_CRITEO_CAT_MISSING = {3: 0.034, 4: 0.034, 6: 0.12, 12: 0.034, 16: 0.034, 19: 0.44, 20: 0.44,
                       21: 0.034, 22: 0.76, 24: 0.034, 25: 0.44, 26: 0.44}
_CRITEO_INT = [  # (mu, sigma, missing, shift)
    (0.5, 1.2, 0.45, 0), (1.5, 1.8, 0.0, -3), (2.0, 1.3, 0.21, 0), (1.8, 1.0, 0.22, 0),
    (8.0, 1.8, 0.026, 0), (4.0, 1.8, 0.22, 0), (2.0, 1.5, 0.04, 0), (2.4, 1.0, 0.0005, 0),
    (4.0, 1.4, 0.04, 0), (0.3, 0.6, 0.45, 0), (1.0, 1.0, 0.04, 0), (0.2, 0.8, 0.76, 0),
    (2.0, 1.1, 0.22, 0),
]

CRITEO = Layout(
    name="criteo", label="label", header=False, sep="\t",
    categorical=tuple(
        Categorical(f"C{i}", card, 0.95 if card > 1_000_000 else 1.1,
                    _CRITEO_CAT_MISSING.get(i, 0.0))
        for i, card in enumerate(_CRITEO_CARDS, start=1)),
    integer=tuple(Integer(f"I{i}", mu, sigma, miss, shift)
                  for i, (mu, sigma, miss, shift) in enumerate(_CRITEO_INT, start=1)),
    main={"C1": (0.4, 1460), "C5": (0.5, 305), "C6": (0.4, 24), "C9": (0.3, 3),
          "C14": (0.4, 27), "C17": (0.4, 10), "C3": (0.5, 2000), "C10": (0.3, 5000)},
    pairs=(("C5", "C6", 0.6), ("C1", "C14", 0.5), ("C17", "C20", 0.5), ("C8", "C11", 0.4)),
    linear={"I1": 0.3, "I7": -0.25}, bump={"I5": 0.5}, click_rate=0.256,
)

AVAZU = Layout(
    name="avazu", label="click", header=True, sep=",",
    categorical=(
        Categorical("C1", 7, 1.5, render="int", base=1001),
        Categorical("banner_pos", 7, 2.0, render="int"),
        Categorical("site_id", 4_737, 1.1), Categorical("site_domain", 7_745, 1.1),
        Categorical("site_category", 26, 1.3), Categorical("app_id", 8_552, 1.2),
        Categorical("app_domain", 559, 1.3), Categorical("app_category", 36, 1.5),
        Categorical("device_id", 2_686_408, 1.0), Categorical("device_ip", 6_729_486, 0.95),
        Categorical("device_model", 8_251, 1.1),
        Categorical("device_type", 5, 2.0, render="int"),
        Categorical("device_conn_type", 4, 2.0, render="int"),
        Categorical("C14", 2_626, 1.1, render="int", base=375),
        Categorical("C15", 8, 2.0, render="int", base=120),
        Categorical("C16", 9, 2.0, render="int", base=20),
        Categorical("C17", 435, 1.1, render="int", base=112),
        Categorical("C18", 4, 1.5, render="int"),
        Categorical("C19", 68, 1.2, render="int", base=33),
        Categorical("C20", 172, 1.2, render="int", base=100_000),
        Categorical("C21", 60, 1.2, render="int", base=1),
    ),
    integer=(),
    main={"site_id": (0.4, 4_737), "app_id": (0.4, 8_552), "C14": (0.4, 2_626),
          "banner_pos": (0.3, 7), "device_conn_type": (0.3, 4), "device_ip": (0.4, 2000)},
    pairs=(("site_category", "device_type", 0.6), ("app_category", "C18", 0.5),
           ("C15", "C16", 0.5)),
    hour_scale=0.3, click_rate=0.17,
)

LAYOUTS = {"criteo": CRITEO, "avazu": AVAZU}
AVAZU_START_HOUR = 14102100  # 2014-10-21 00h, as in the Avazu training file
AVAZU_HOURS = 240


# ---------------------------------------------------------------- hashing
def _mix64(x: np.ndarray) -> np.ndarray:
    """SplitMix64's finaliser: a bijection of uint64 with good avalanche."""
    with np.errstate(over="ignore"):
        x = x.astype(np.uint64)
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return x ^ (x >> np.uint64(31))


def _salt(seed: int, *parts: str) -> np.uint64:
    """A 64-bit salt from the seed and names (stable across runs and platforms)."""
    h = np.uint64(seed % 2**64)
    for part in parts:
        for ch in part.encode():
            with np.errstate(over="ignore"):
                h = _mix64(np.array([h ^ np.uint64(ch)]))[0] + np.uint64(0x9E3779B97F4A7C15)
    return np.uint64(h)


def _uniform(ranks: np.ndarray, salt: np.uint64) -> np.ndarray:
    """A uniform number in [-sqrt(3), sqrt(3)) (unit variance) per rank and salt."""
    with np.errstate(over="ignore"):
        z = _mix64(ranks.astype(np.uint64) + salt)
    return ((z >> np.uint64(11)).astype(np.float64) * 2.0**-53 * 2 - 1) * np.sqrt(3.0)


def _hex_column(ranks: np.ndarray, valid: np.ndarray, salt: np.uint64) -> pa.Array:
    """8 lowercase hex digits per rank (a bijection of the low 32 bits), null where not
    ``valid``."""
    with np.errstate(over="ignore"):
        h = ((ranks.astype(np.uint64) + salt) & np.uint64(0xFFFFFFFF)).astype(np.uint32)
        h ^= h >> np.uint32(16)
        h *= np.uint32(0x7FEB352D)
        h ^= h >> np.uint32(15)
        h *= np.uint32(0x846CA68B)
        h ^= h >> np.uint32(16)
    chars = _HEX[(h[:, None] >> _SHIFTS) & np.uint32(0xF)]
    n = len(ranks)
    offsets = np.arange(0, 8 * n + 1, 8, dtype=np.int32)
    nulls = int(n - valid.sum())
    bitmap = pa.py_buffer(np.packbits(valid, bitorder="little")) if nulls else None
    return pa.StringArray.from_buffers(n, pa.py_buffer(offsets), pa.py_buffer(chars.tobytes()),
                                       bitmap, nulls)


# ---------------------------------------------------------------- the generator
class LayoutGenerator:
    """Rows of one layout from one seed; ``chunk(i, n, first_row)`` draws chunk ``i``."""

    def __init__(self, layout: Layout, seed: int = 0) -> None:
        self.layout = layout
        self.seed = seed
        self.cats = {c.name: c for c in layout.categorical}
        self.ints = {c.name: c for c in layout.integer}
        for name in [*layout.main, *(a for a, _, _ in layout.pairs),
                     *(b for _, b, _ in layout.pairs)]:
            if name not in self.cats:
                raise ValueError(f"layout {layout.name}: signal field {name!r} is not a "
                                 "categorical column")
        self.bias = 0.0
        self.bias = self._calibrate()

    # -------------------------------------------------------- drawing
    def _draw(self, rng: np.random.Generator, n: int, first_row: int,
              rows: int) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], np.ndarray]:
        """Ranks (-1 where missing) of the categorical columns, integer values (NaN where
        missing), and hour indexes (Avazu)."""
        ranks = {}
        for c in self.layout.categorical:
            u = rng.random(n)
            ranks[c.name] = _power_law_rank(u, c.values, c.zipf)
            if c.missing:
                ranks[c.name][rng.random(n) < c.missing] = -1
        ints = {}
        for c in self.layout.integer:
            x = np.floor(np.exp(c.mu + c.sigma * rng.standard_normal(n))) + c.shift
            if c.missing:
                x[rng.random(n) < c.missing] = np.nan
            ints[c.name] = x
        hours = (np.arange(first_row, first_row + n) * AVAZU_HOURS // max(rows, 1)
                 ).astype(np.int64)
        return ranks, ints, hours

    def _logit(self, ranks: dict[str, np.ndarray], ints: dict[str, np.ndarray],
               hours: np.ndarray) -> np.ndarray:
        lay = self.layout
        n = len(hours)
        logit = np.full(n, self.bias)
        for name, (scale, head) in lay.main.items():
            r = ranks[name]
            on = (r >= 0) & (r < head)
            logit[on] += scale * _uniform(r[on], _salt(self.seed, "main", name))
        for a, b, scale in lay.pairs:
            ra, rb = ranks[a], ranks[b]
            on = (ra >= 0) & (rb >= 0)
            dot = np.zeros(int(on.sum()))
            for k in range(LATENT_DIM):
                dot += (_uniform(ra[on], _salt(self.seed, "pair", a, b, "a", str(k)))
                        * _uniform(rb[on], _salt(self.seed, "pair", a, b, "b", str(k))))
            logit[on] += scale * dot / np.sqrt(LATENT_DIM)
        for name, scale in lay.linear.items():
            logit += scale * np.nan_to_num(self._z(name, ints[name]))
        for name, scale in lay.bump.items():
            z = self._z(name, ints[name])
            logit += np.nan_to_num(scale * (np.cos(1.5 * z) - 0.5))
        if lay.hour_scale:
            logit += lay.hour_scale * _uniform(hours % 24, _salt(self.seed, "hour"))
        return logit

    def _z(self, name: str, x: np.ndarray) -> np.ndarray:
        """An integer field on a unit scale: its log as drawn, centred (NaN stays NaN)."""
        c = self.ints[name]
        return (np.log(np.maximum(x - c.shift, 0) + 1) - c.mu) / c.sigma

    def _calibrate(self) -> float:
        """The intercept that gives the layout's click rate on a pilot sample."""
        rng = np.random.default_rng([self.seed, 2])
        ranks, ints, hours = self._draw(rng, 50_000, 0, 50_000)
        base = self._logit(ranks, ints, hours)
        lo, hi = -10.0, 10.0
        for _ in range(50):
            mid = (lo + hi) / 2
            rate = float(np.mean(1 / (1 + np.exp(-(base + mid)))))
            lo, hi = (mid, hi) if rate < self.layout.click_rate else (lo, mid)
        return (lo + hi) / 2

    def chunk(self, index: int, n: int, first_row: int,
              rows: int) -> tuple[pa.Table, np.ndarray]:
        """Chunk ``index`` (rows ``first_row`` .. of ``rows``) as an Arrow table in the
        layout's column order, and the true click probabilities."""
        lay = self.layout
        rng = np.random.default_rng([self.seed, 1, index])
        ranks, ints, hours = self._draw(rng, n, first_row, rows)
        p = 1 / (1 + np.exp(-self._logit(ranks, ints, hours)))
        label = (rng.random(n) < p).astype(np.int8)
        cols: dict[str, pa.Array] = {}
        if lay.name == "avazu":
            ids = _mix64(np.arange(first_row, first_row + n, dtype=np.uint64)
                         + _salt(self.seed, "id"))
            cols["id"] = pa.array(ids.astype(str))
            cols[lay.label] = pa.array(label)
            day, hour = np.divmod(hours, 24)
            cols["hour"] = pa.array(AVAZU_START_HOUR + day * 100 + hour)
        else:
            cols[lay.label] = pa.array(label)
            for c in lay.integer:
                x = ints[c.name]
                cols[c.name] = pa.array(np.nan_to_num(x).astype(np.int64), mask=np.isnan(x))
        for c in lay.categorical:
            r = ranks[c.name]
            valid = r >= 0
            if c.render == "hex":
                cols[c.name] = _hex_column(np.maximum(r, 0), valid,
                                           _salt(self.seed, "value", c.name))
            else:
                cols[c.name] = pa.array(c.base + np.maximum(r, 0), mask=~valid)
        return pa.table(cols), p

    def truth(self) -> dict[str, Any]:
        lay = self.layout
        return {
            "layout": lay.name, "seed": self.seed, "label": lay.label,
            "intercept": self.bias,
            "main_effects": {k: {"scale": s, "head_values": h} for k, (s, h) in lay.main.items()},
            "pairs": [[a, b] for a, b, _ in lay.pairs],
            "pair_scales": [s for _, _, s in lay.pairs],
            "linear": dict(lay.linear), "nonmonotone": dict(lay.bump),
            "hour_of_day_scale": lay.hour_scale,
            "noise_fields": sorted(
                {c.name for c in lay.categorical} - set(lay.main)
                - {a for a, _, _ in lay.pairs} - {b for _, b, _ in lay.pairs}
                | {c.name for c in lay.integer} - set(lay.linear) - set(lay.bump)),
            "columns": {"categorical": [asdict(c) for c in lay.categorical],
                        "integer": [asdict(c) for c in lay.integer]},
        }


def _power_law_rank(u: np.ndarray, values: int, a: float) -> np.ndarray:
    """Ranks in [0, values) with P(rank) ~ 1/(rank+1)^a: the inverse CDF of the continuous
    power law on [1, values + 1), floored (no table of the population is built)."""
    top = float(values + 1)
    if abs(a - 1.0) < 1e-9:
        x = top ** u
    else:
        e = 1.0 - a
        x = ((top ** e - 1.0) * u + 1.0) ** (1.0 / e)
    return np.minimum(np.floor(x).astype(np.int64) - 1, values - 1)


# ---------------------------------------------------------------- writing
def write_layout(fmt: str, path: str | Path, rows: int, seed: int = 0) -> dict[str, Any]:
    """Write ``rows`` rows in layout ``fmt`` (``criteo`` or ``avazu``) to ``path`` chunk by
    chunk, gzip'd when it ends in ``.gz``, and the truth to ``<path>.truth.json``; returns
    the truth. The file appears complete or not at all (written beside it, then renamed)."""
    if fmt not in LAYOUTS:
        raise ValueError(f"unknown layout {fmt!r}; use {' or '.join(LAYOUTS)}")
    if rows < 1:
        raise ValueError(f"--rows must be at least 1, got {rows}")
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"--out {path} is a folder; give a file name")
    path.parent.mkdir(parents=True, exist_ok=True)
    gen = LayoutGenerator(LAYOUTS[fmt], seed)
    lay = gen.layout
    options = pacsv.WriteOptions(include_header=False, delimiter=lay.sep, quoting_style="none")
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    tmp = Path(tmp_name)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp's 0600 would outlive the rename
    probs, labels = [], []
    positives = 0
    try:
        with os.fdopen(fd, "wb") as raw:
            sink: BinaryIO = (gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0,
                                            compresslevel=6)  # type: ignore[assignment]
                              if path.suffix == ".gz" else raw)
            with sink:
                first = 0
                for index, n in enumerate(_chunk_sizes(rows)):
                    table, p = gen.chunk(index, n, first, rows)
                    if index == 0 and lay.header:
                        sink.write((lay.sep.join(table.column_names) + "\n").encode())
                    buf = pa.BufferOutputStream()
                    pacsv.write_csv(table, buf, options)
                    sink.write(buf.getvalue().to_pybytes())
                    label = table.column(lay.label).to_numpy()
                    positives += int(label.sum())
                    if first < TRUTH_ROWS:
                        probs.append(p[:TRUTH_ROWS - first])
                        labels.append(label[:TRUTH_ROWS - first])
                    first += n
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    truth = gen.truth() | {"rows": rows, "click_rate": positives / rows}
    truth |= _bayes_auc(np.concatenate(labels), np.concatenate(probs))
    Path(f"{path}.truth.json").write_text(json.dumps(truth, indent=2))
    return truth


def _bayes_auc(label: np.ndarray, p: np.ndarray) -> dict[str, Any]:
    if label.min() == label.max():
        return {}
    from sklearn.metrics import roc_auc_score

    return {"bayes_auc": float(roc_auc_score(label, p)), "bayes_auc_rows": int(len(label))}


def _chunk_sizes(rows: int) -> list[int]:
    full, rest = divmod(rows, CHUNK_ROWS)
    return [CHUNK_ROWS] * full + ([rest] if rest else [])
