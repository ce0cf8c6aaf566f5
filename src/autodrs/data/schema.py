"""Schema: the fields of a table, their kinds, and the encoders fitted on the train split.

Categorical and sequence values are mapped to integer ids ordered by train frequency
(the most frequent value gets the smallest id), with three reserved ids:
``PAD`` (0, only used to pad sequences), ``OOV`` (1, values unseen in train or rarer
than ``min_count``) and ``MISSING`` (2). Fields with more distinct values than
``hash_threshold`` are hashed into that many buckets instead. Numerical fields are
optionally log-transformed and then standardised with the train mean and deviation;
missing numbers become 0 after standardisation (the train mean). Equal-frequency bucket
boundaries are kept for the ``bucket`` numerical encoder.
"""

from __future__ import annotations

import json
import zlib
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from autodrs.data.errors import DataError

PAD, OOV, MISSING = 0, 1, 2
FIRST_ID = 3
KINDS = ("categorical", "numerical", "sequence")
DEFAULT_SEP = "|"
N_BUCKETS = 16


@dataclass
class Field:
    name: str
    kind: str
    vocab: list[str] | None = None
    hash_buckets: int = 0
    min_count: int = 1
    transform: str = "none"  # numerical: "none" or "log"
    mean: float = 0.0
    std: float = 1.0
    boundaries: list[float] | None = None
    sep: str = DEFAULT_SEP
    max_len: int = 0
    hash: str = ""  # hashed vocabularies: the hash function (``HASH``)

    @property
    def vocab_size(self) -> int:
        """Rows an embedding table of this field needs (reserved ids included)."""
        if self.kind == "numerical":
            return 1
        if self.hash_buckets:
            return FIRST_ID + self.hash_buckets
        return FIRST_ID + len(self.vocab or [])

    @property
    def n_buckets(self) -> int:
        return len(self.boundaries or []) + 1


@dataclass
class Schema:
    fields: list[Field]
    label: str = "label"
    group: str | None = None
    time: str | None = None
    fitted: bool = False
    # several 0/1 label columns (multi-task data; ``label`` is then the first); None: one
    labels: list[str] | None = None

    # ------------------------------------------------------------ lookups
    @property
    def tasks(self) -> list[str]:
        """The label columns: one per task."""
        return list(self.labels) if self.labels else [self.label]

    @property
    def field_names(self) -> list[str]:
        return [f.name for f in self.fields]

    def field(self, name: str) -> Field:
        for f in self.fields:
            if f.name == name:
                return f
        raise DataError(f"unknown field {name!r}; schema has {self.field_names}")

    def names_of(self, kind: str) -> list[str]:
        return [f.name for f in self.fields if f.kind == kind]

    @property
    def categorical(self) -> list[str]:
        return self.names_of("categorical")

    @property
    def numerical(self) -> list[str]:
        return self.names_of("numerical")

    @property
    def sequence(self) -> list[str]:
        return self.names_of("sequence")

    # ------------------------------------------------------------ fitting
    def fit(
        self,
        df: pl.DataFrame,
        min_count: int = 1,
        hash_threshold: int = 1_000_000,
        max_seq_len: int = 32,
    ) -> Schema:
        """Fit the encoders on ``df`` (the train split only)."""
        check_table(df, self)
        for f in self.fields:
            col = df[f.name]
            if f.kind == "categorical":
                counts = _as_str(col).drop_nulls().value_counts(sort=True)
                fit_vocab(f, counts, min_count, hash_threshold)
            elif f.kind == "sequence":
                tokens = _seq_lists(col, f.sep)
                lengths = tokens.list.len().fill_null(0)
                f.max_len = seq_width(int(lengths.max() or 1), max_seq_len)
                counts = tokens.explode().drop_nulls().value_counts(sort=True)
                fit_vocab(f, counts, min_count, hash_threshold)
            else:
                finite = _numeric(col, f).drop_nulls().to_numpy().astype(np.float64)
                if finite.size == 0:
                    raise DataError(f"numerical field {f.name!r} has no values in train")
                fit_numerical(f, float(finite.mean()), float(finite.std()), finite)
        self.fitted = True
        return self

    # ------------------------------------------------------------ transform
    def transform(self, df: pl.DataFrame, require_label: bool = True) -> dict[str, np.ndarray]:
        """Encode ``df`` into arrays: ``cat`` [N, C] int64, ``num`` [N, K] float32,
        one ``seq:<name>`` [N, L] int64 per sequence field, ``label`` [N] float32 and
        ``group`` [N] int64 when a group column exists."""
        if not self.fitted:
            raise DataError("schema is not fitted; call fit() on the train split first")
        check_table(df, self, require_label=require_label)
        n = df.height
        out: dict[str, np.ndarray] = {}
        cats = [self._encode_categorical(df[f.name], f) for f in self.fields
                if f.kind == "categorical"]
        out["cat"] = np.stack(cats, axis=1) if cats else np.zeros((n, 0), np.int64)
        nums = [self._encode_numerical(df[f.name], f) for f in self.fields
                if f.kind == "numerical"]
        out["num"] = np.stack(nums, axis=1) if nums else np.zeros((n, 0), np.float32)
        for f in self.fields:
            if f.kind == "sequence":
                out[f"seq:{f.name}"] = self._encode_sequence(df[f.name], f)
        if self.labels and (require_label or all(t in df.columns for t in self.labels)):
            for t in self.labels:  # several tasks: label [N, T]
                if t not in df.columns:
                    raise DataError(f"label column {t!r} not found; columns are {df.columns}")
            out["label"] = np.stack([check_label(df, t) for t in self.labels], axis=1)
        elif require_label or self.label in df.columns:
            out["label"] = check_label(df, self.label)
        if self.group is not None and self.group in df.columns:
            g = _as_str(df[self.group]).fill_null("").cast(pl.Categorical).to_physical()
            out["group"] = g.to_numpy().astype(np.int64)
        return out

    def _encode_ids(self, values: pl.Series, f: Field) -> pl.Series:
        if f.hash_buckets:
            return hash_ids(values, f.hash_buckets)
        mapping = {v: i + FIRST_ID for i, v in enumerate(f.vocab or [])}
        return values.replace_strict(mapping, default=OOV, return_dtype=pl.Int64)

    def _encode_categorical(self, col: pl.Series, f: Field) -> np.ndarray:
        s = _as_str(col)
        ids = self._encode_ids(s, f)
        ids = pl.select(pl.when(s.is_null()).then(MISSING).otherwise(ids)).to_series()
        return ids.to_numpy().astype(np.int64)

    def _encode_sequence(self, col: pl.Series, f: Field) -> np.ndarray:
        lists = _seq_lists(col, f.sep)
        n = len(lists)
        out = np.zeros((n, f.max_len), np.int64)
        flat = lists.list.tail(f.max_len)  # a longer list keeps its last items
        lengths = flat.list.len().fill_null(0).to_numpy().astype(np.int64)
        tokens = flat.explode().drop_nulls()
        if len(tokens):
            ids = self._encode_ids(tokens, f).to_numpy()
            rows = np.repeat(np.arange(n), lengths)
            starts = np.cumsum(lengths) - lengths
            cols = np.arange(len(rows)) - np.repeat(starts, lengths)
            out[rows, cols] = ids
        out[lengths == 0, 0] = MISSING
        return out

    def _encode_numerical(self, col: pl.Series, f: Field) -> np.ndarray:
        values = _numeric(col, f).to_numpy().astype(np.float64)
        z = (values - f.mean) / f.std
        return np.nan_to_num(z, nan=0.0).astype(np.float32)

    # ------------------------------------------------------------ persistence
    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        if out["labels"] is None:  # single-label schema files stay as they were
            del out["labels"]
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Schema:
        data = dict(data)
        data["fields"] = [Field(**f) for f in data["fields"]]
        for f in data["fields"]:
            if f.hash_buckets and f.hash != HASH:
                raise DataError(
                    f"field {f.name!r} was hashed by {f.hash or 'an earlier autodrs (Polars hash)'}"
                    f", not {HASH}; retrain the model with this version")
        return cls(**data)

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict()))

    @classmethod
    def load(cls, path: str | Path) -> Schema:
        try:
            return cls.from_dict(json.loads(Path(path).read_text()))
        except (json.JSONDecodeError, TypeError, KeyError) as e:
            raise DataError(f"{path}: not a valid autodrs schema file ({e})") from e

    def fingerprint(self) -> str:
        declared = [(f.name, f.kind, f.transform, f.sep) for f in self.fields]
        text = json.dumps([declared, self.label, self.group, self.time])
        return f"{zlib.crc32(text.encode()):08x}"


# ---------------------------------------------------------------- inference
def infer_schema(
    df: pl.DataFrame,
    label: str = "label",
    categorical: list[str] | None = None,
    numerical: list[str] | None = None,
    sequence: list[str] | None = None,
    group: str | None = None,
    time: str | None = None,
    drop: list[str] | None = None,
    log_numerical: list[str] | None = None,
) -> Schema:
    """Infer field kinds from dtypes, with the user's lists taking precedence.

    Strings, booleans and integers are categorical (ids are integers in CTR data);
    floats are numerical; lists are sequences.
    """
    if df.height == 0:
        raise DataError("the table has no rows")
    if label not in df.columns:
        raise DataError(f"label column {label!r} not found; columns are {df.columns}")
    overrides = {}
    for kind, names in (("categorical", categorical), ("numerical", numerical),
                        ("sequence", sequence)):
        for name in names or []:
            if name not in df.columns:
                raise DataError(f"declared {kind} field {name!r} is not a column of the table")
            overrides[name] = kind
    skip = {label, *(drop or [])}
    for extra in (group, time):
        if extra is not None:
            if extra not in df.columns:
                raise DataError(f"column {extra!r} not found; columns are {df.columns}")
            skip.add(extra)
    out = []
    for name in df.columns:
        if name in skip and name not in overrides:
            continue
        kind = overrides.get(name) or _infer_kind(df[name])
        f = Field(name=name, kind=kind)
        if kind == "numerical" and name in (log_numerical or []):
            f.transform = "log"
        out.append(f)
    if not out:
        raise DataError("the table has no feature columns besides the label")
    return Schema(fields=out, label=label, group=group, time=time)


def _infer_kind(col: pl.Series) -> str:
    if isinstance(col.dtype, pl.List):
        return "sequence"
    if col.dtype.is_float():
        return "numerical"
    return "categorical"


# ---------------------------------------------------------------- checks
def check_table(df: pl.DataFrame, schema: Schema, require_label: bool = True) -> None:
    if df.height == 0:
        raise DataError("the table has no rows")
    missing = [f.name for f in schema.fields if f.name not in df.columns]
    if missing:
        raise DataError(f"columns missing from the table: {', '.join(missing)}")
    if require_label and schema.label not in df.columns:
        raise DataError(f"label column {schema.label!r} not found; columns are {df.columns}")
    if not schema.fitted:
        for f in schema.fields:
            if df[f.name].null_count() == df.height:
                raise DataError(f"column {f.name!r} is entirely null")


def check_label(df: pl.DataFrame, label: str) -> np.ndarray:
    col = df[label]
    if col.null_count():
        raise DataError(f"label column {label!r} has {col.null_count()} missing values")
    if col.dtype == pl.Boolean:
        col = col.cast(pl.Int8)
    if not col.dtype.is_numeric():
        try:
            col = col.cast(pl.Float64)
        except Exception as e:
            raise DataError(f"label column {label!r} is not numeric 0/1 ({col.dtype})") from e
    values = col.cast(pl.Float64).to_numpy()
    if np.isnan(values).any():
        raise DataError(f"label column {label!r} contains NaN")
    bad = ~np.isin(values, (0.0, 1.0))
    if bad.any():
        examples = sorted({float(v) for v in values[bad][:5]})
        raise DataError(f"label column {label!r} is not binary 0/1: found values like {examples}")
    return values.astype(np.float32)


# ---------------------------------------------------------------- helpers
def _as_str(col: pl.Series) -> pl.Series:
    return col if col.dtype == pl.String else col.cast(pl.String)


def _seq_lists(col: pl.Series, sep: str) -> pl.Series:
    if isinstance(col.dtype, pl.List):
        return col.cast(pl.List(pl.String))
    return _as_str(col).str.split(sep).list.eval(
        pl.element().str.strip_chars().filter(pl.element() != "")
    )


def _numeric(col: pl.Series, f: Field) -> pl.Series:
    try:
        values = col.cast(pl.Float64)
    except Exception as e:
        raise DataError(f"numerical field {f.name!r} has non-numeric values") from e
    values = values.fill_nan(None)
    if f.transform == "log":
        values = values.clip(lower_bound=0.0).log1p()
    return values


HASH = "fnv1a64-splitmix64"  # the hash of hashed vocabularies, recorded in every schema
_FNV_OFFSET = np.uint64(0xCBF29CE484222325)
_FNV_PRIME = np.uint64(0x100000001B3)


def fnv1a64(values: pl.Series) -> np.ndarray:
    """FNV-1a 64 of each value's UTF-8 bytes (nulls hash as the empty text), as uint64:
    ``h = 0xcbf29ce484222325``, then for each byte ``h = (h ^ byte) * 0x100000001b3``
    modulo 2**64. Vectorised over the values, one step per byte position."""
    import pyarrow as pa
    import pyarrow.compute as pc

    arr = pc.cast(_as_str(values).rechunk().to_arrow(), pa.large_string())
    if arr.null_count:
        arr = pc.fill_null(arr, "")
    n = len(arr)
    offsets = np.frombuffer(arr.buffers()[1], np.int64)[arr.offset:arr.offset + n + 1]
    data = arr.buffers()[2]
    data = np.frombuffer(data, np.uint8) if data is not None else np.zeros(0, np.uint8)
    starts, lengths = offsets[:-1], np.diff(offsets)
    h = np.full(n, _FNV_OFFSET, np.uint64)
    longest_first = np.argsort(-lengths, kind="stable")
    negative = -lengths[longest_first]  # ascending
    with np.errstate(over="ignore"):
        for pos in range(int(lengths.max()) if n else 0):
            rows = longest_first[:np.searchsorted(negative, -pos, side="left")]  # longer
            h[rows] = (h[rows] ^ data[starts[rows] + pos].astype(np.uint64)) * _FNV_PRIME
    return h


def mix64(h: np.ndarray) -> np.ndarray:
    """The SplitMix64 finaliser (uint64 in, uint64 out): spreads every input bit over
    the low bits a bucket count keeps."""
    with np.errstate(over="ignore"):
        z = h.astype(np.uint64)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


def hash_ids(values: pl.Series, buckets: int) -> pl.Series:
    """Ids of a hashed vocabulary (``HASH``): ``3 + mix64(fnv1a64(text)) % buckets``, the
    text being the value as the schema spells it (integers in decimal). Defined here rather
    than taken from a library, so it never changes with a library version and any server
    can reproduce it (docs/data.md)."""
    ids = mix64(fnv1a64(values)) % np.uint64(buckets) + np.uint64(FIRST_ID)
    return pl.Series(values.name, ids.astype(np.int64))


def seq_width(longest: int, max_seq_len: int) -> int:
    """The padded width of a sequence field: its longest train list, capped."""
    return int(max(1, min(max_seq_len, longest)))


def fit_numerical(f: Field, mean: float, std: float, sample: np.ndarray) -> None:
    """Standardise with the train ``mean`` and ``std``; bucket boundaries at equal-frequency
    quantiles of the standardised ``sample`` (all train values, or a uniform sample)."""
    f.mean = mean
    f.std = std or 1.0
    z = (sample - f.mean) / f.std
    qs = np.unique(np.quantile(z, np.linspace(0, 1, N_BUCKETS + 1)[1:-1]))
    f.boundaries = [float(q) for q in qs]


def fit_vocab(f: Field, counts: pl.DataFrame, min_count: int, hash_threshold: int) -> None:
    """Set a field's vocabulary from (value, train count) rows: values at least ``min_count``
    times in train, most frequent first (ties by value); hashed above ``hash_threshold``."""
    value_col, count_col = counts.columns
    counts = counts.sort([count_col, value_col], descending=[True, False])
    kept = counts.filter(pl.col(count_col) >= min_count)
    f.min_count = min_count
    if kept.height > hash_threshold:
        f.hash_buckets = hash_threshold
        f.hash = HASH
        f.vocab = None
    else:
        f.vocab = [str(v) for v in kept[value_col].to_list()]
        f.hash_buckets = 0
        f.hash = ""
