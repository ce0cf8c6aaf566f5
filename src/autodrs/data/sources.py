"""Sources: read a table from a built-in name or a file into a Polars DataFrame.

Supported: CSV, TSV and Parquet files with a header; the Criteo Kaggle TSV layout (label,
I1-I13, C1-C26, no header); the Avazu CSV layout; MovieLens-100k, built in from the
files shipped in the ``recbole==1.2.1`` wheel or from a GroupLens ``ml-100k`` folder
(``u.data``, ``u.user``, ``u.item``); and the ``synthetic`` generator.
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import polars as pl

from autodrs.data.errors import DataError

TRUE_PROB = "_p_true"  # the synthetic generator's true click probability (never a feature)

CRITEO_NUM = [f"I{i}" for i in range(1, 14)]
CRITEO_CAT = [f"C{i}" for i in range(1, 27)]
AVAZU_COLUMNS = [
    "id", "click", "hour", "C1", "banner_pos", "site_id", "site_domain", "site_category",
    "app_id", "app_domain", "app_category", "device_id", "device_ip", "device_model",
    "device_type", "device_conn_type", "C14", "C15", "C16", "C17", "C18", "C19", "C20", "C21",
]
ML_GENRES = [
    "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime",
    "Documentary", "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery",
    "Romance", "Sci-Fi", "Thriller", "War", "Western",
]

BUILTINS = {
    "movielens-100k": "MovieLens-100k ratings (label: rating >= 4), 100,000 rows, 10 fields; "
                      "read from the recbole==1.2.1 wheel",
    "synthetic": "planted-structure CTR data with written truth; options: "
                 "synthetic?rows=200000&seed=0",
}


@dataclass
class Table:
    """A raw table plus what its source knows about it."""

    df: pl.DataFrame
    name: str
    label: str = "label"
    time: str | None = None
    group: str | None = None
    kinds: dict[str, str] = field(default_factory=dict)
    log_numerical: list[str] = field(default_factory=list)
    identity: str = ""
    truth: dict[str, Any] | None = None


def load_table(data: str, fmt: str | None = None, label: str | None = None) -> Table:
    """Read ``data`` (a built-in name or a path) into a ``Table``; ``label`` overrides the
    source's label column."""
    table = _load(data, fmt)
    if label:
        table.label = label
    if table.label not in table.df.columns:
        raise DataError(f"label column {table.label!r} not found; columns are {table.df.columns}")
    return table


def _load(data: str, fmt: str | None) -> Table:
    name, _, query = data.partition("?")
    opts = dict(parse_qsl(query))
    if name == "movielens-100k":
        return movielens_100k(_recbole_ml100k_dir())
    if name == "synthetic":
        from autodrs.data.synthetic import synthetic_table

        return synthetic_table(rows=int(opts.get("rows", 200_000)), seed=int(opts.get("seed", 0)))
    path = Path(name)
    if not path.exists():
        raise DataError(
            f"data {data!r} is neither a built-in dataset ({', '.join(BUILTINS)}) nor an "
            "existing file"
        )
    if path.is_dir():
        if (path / "u.data").exists():
            return movielens_100k(path)
        if (path / "ml-100k.inter").exists():
            return movielens_100k(path)
        raise DataError(f"{path} is a folder without a known dataset layout (u.data, ml-100k.inter)")
    if path.stat().st_size == 0:
        raise DataError(f"{path} is empty")
    fmt = fmt or _guess_format(path)
    identity = f"{path.resolve()}:{path.stat().st_size}:{path.stat().st_mtime_ns}:{fmt}"
    if fmt == "criteo":
        table = read_criteo(path)
    elif fmt == "avazu":
        table = read_avazu(path)
    elif fmt == "parquet":
        table = Table(df=_read(pl.read_parquet, path), name=path.name)
    elif fmt in ("csv", "tsv"):
        sep = "\t" if fmt == "tsv" else ","
        table = Table(df=_read(pl.read_csv, path, separator=sep, infer_schema_length=10_000),
                      name=path.name)
    else:
        raise DataError(f"unknown format {fmt!r}; use csv, tsv, parquet, criteo or avazu")
    table.identity = identity
    if table.df.height == 0:
        raise DataError(f"{path} has no data rows")
    return table


def _guess_format(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix in (".parquet", ".pq"):
        return "parquet"
    with path.open("r", errors="replace") as fh:
        first = fh.readline().rstrip("\n")
    if suffix in (".txt", ".tsv") and "criteo" in path.name.lower():
        return "criteo"
    if first.split(",")[:3] == ["id", "click", "hour"]:
        return "avazu"
    if suffix == ".tsv" or ("\t" in first and "," not in first):
        return "tsv"
    return "csv"


def _read(reader: Any, path: Path, **kwargs: Any) -> pl.DataFrame:
    try:
        return reader(path, **kwargs)
    except pl.exceptions.NoDataError as e:
        raise DataError(f"{path} is empty") from e
    except (pl.exceptions.ComputeError, pl.exceptions.ShapeError, OSError) as e:
        raise DataError(f"{path}: cannot read the file: {str(e).splitlines()[0]}") from e


def _check_field_counts(path: Path, sep: str, expected: int, skip_header: bool) -> pl.DataFrame:
    """Read ``path`` as raw lines and fail on the first line whose field count is wrong."""
    lines = pl.read_csv(
        path, separator="\x01", has_header=False, new_columns=["line"], quote_char=None,
        schema_overrides={"line": pl.String}, truncate_ragged_lines=True,
    )["line"]
    counts = lines.str.count_matches(sep, literal=True).fill_null(0) + 1
    bad = (counts != expected).arg_true()
    first_data = 1 if skip_header else 0
    bad = bad.filter(bad >= first_data)
    if len(bad):
        row = int(bad[0])
        raise DataError(
            f"{path}: malformed row at line {row + 1}: expected {expected} fields separated "
            f"by {sep!r}, found {int(counts[row])}"
        )
    return lines


def read_criteo(path: Path) -> Table:
    """Criteo Kaggle layout: label, 13 integer features, 26 hashed categoricals, no header."""
    _check_field_counts(path, "\t", 40, skip_header=False)
    columns = ["label", *CRITEO_NUM, *CRITEO_CAT]
    df = _read(
        pl.read_csv, path, separator="\t", has_header=False, new_columns=columns,
        schema_overrides={**{c: pl.String for c in columns}}, quote_char=None,
    )
    df = _cast_or_line(df, path, "label", pl.Int64)
    for c in CRITEO_NUM:
        df = _cast_or_line(df, path, c, pl.Float64)
    kinds = {c: "numerical" for c in CRITEO_NUM} | {c: "categorical" for c in CRITEO_CAT}
    return Table(df=df, name=path.name, kinds=kinds, log_numerical=list(CRITEO_NUM))


def read_avazu(path: Path) -> Table:
    """Avazu layout: id, click, hour (YYMMDDHH), then categorical columns; ``hour`` is
    split into hour of day and weekday, ``id`` is dropped."""
    with path.open() as fh:
        header = fh.readline().rstrip("\n").split(",")
    _check_field_counts(path, ",", len(header), skip_header=True)
    df = _read(pl.read_csv, path, infer_schema_length=0)
    if "click" not in df.columns or "hour" not in df.columns:
        raise DataError(f"{path}: not the Avazu layout (needs columns 'click' and 'hour')")
    df = _cast_or_line(df, path, "click", pl.Int64, header=True)
    # polars needs minutes beside hours in a format string
    ts = (df["hour"] + "00").str.strptime(pl.Datetime, "%y%m%d%H%M", strict=False)
    if ts.null_count():
        row = int(ts.is_null().arg_true()[0])
        raise DataError(f"{path}: malformed row at line {row + 2}: bad hour {df['hour'][row]!r}")
    df = df.with_columns(
        ts.dt.hour().cast(pl.String).alias("hour_of_day"),
        ts.dt.weekday().cast(pl.String).alias("weekday"),
        ts.dt.epoch("s").alias("_time"),
    ).drop([c for c in ("id", "hour") if c in df.columns])
    df = df.rename({"click": "label"})
    kinds = {c: "categorical" for c in df.columns if c not in ("label", "_time")}
    return Table(df=df, name=path.name, kinds=kinds, time="_time")


def _cast_or_line(df: pl.DataFrame, path: Path, col: str, dtype: Any,
                  header: bool = False) -> pl.DataFrame:
    cast = df[col].cast(dtype, strict=False)
    bad = (cast.is_null() & df[col].is_not_null() & (df[col] != "")).arg_true()
    if len(bad):
        row = int(bad[0])
        raise DataError(
            f"{path}: malformed row at line {row + 1 + int(header)}: column {col} has "
            f"{df[col][row]!r}, expected a number"
        )
    return df.with_columns(cast.alias(col))


# ---------------------------------------------------------------- MovieLens-100k
def _recbole_ml100k_dir() -> Path:
    env = os.environ.get("AUTODRS_ML100K")
    if env:
        return Path(env)
    spec = importlib.util.find_spec("recbole")  # locates the package without importing it
    if spec is None or not spec.submodule_search_locations:
        raise DataError(
            "movielens-100k needs the data files of the recbole wheel: "
            "pip install --no-deps recbole==1.2.1 (or set AUTODRS_ML100K to a folder)"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / "dataset_example" / "ml-100k"
    if not path.exists():
        raise DataError(f"MovieLens-100k files not found under {path}")
    return path


def movielens_100k(folder: Path) -> Table:
    """One row per rating; label = rating >= 4; user, item, demographic, release year,
    genres (sequence) and hour / weekday of the rating time."""
    if (folder / "ml-100k.inter").exists():
        inter = pl.read_csv(folder / "ml-100k.inter", separator="\t",
                            schema_overrides={"user_id:token": pl.String,
                                              "item_id:token": pl.String})
        inter.columns = ["user_id", "item_id", "rating", "timestamp"]
        users = pl.read_csv(folder / "ml-100k.user", separator="\t", infer_schema_length=0)
        users.columns = ["user_id", "age", "gender", "occupation", "zip_code"]
        items = pl.read_csv(folder / "ml-100k.item", separator="\t", infer_schema_length=0,
                            quote_char=None)
        items.columns = ["item_id", "title", "release_year", "genres"]
        items = items.select(
            "item_id", "release_year",
            pl.col("genres").str.split(" ").alias("genres"),
        )
    else:
        inter = pl.read_csv(folder / "u.data", separator="\t", has_header=False,
                            new_columns=["user_id", "item_id", "rating", "timestamp"],
                            schema_overrides={"user_id": pl.String, "item_id": pl.String})
        users = pl.read_csv(folder / "u.user", separator="|", has_header=False,
                            new_columns=["user_id", "age", "gender", "occupation", "zip_code"],
                            infer_schema_length=0)
        raw = pl.read_csv(folder / "u.item", separator="|", has_header=False,
                          infer_schema_length=0, encoding="utf8-lossy", quote_char=None,
                          new_columns=["item_id", "title", "release_date", "video_date", "url",
                                       *ML_GENRES])
        flags = pl.concat_list([
            pl.when(pl.col(g) == "1").then(pl.lit(g)).otherwise(None) for g in ML_GENRES
        ]).list.drop_nulls()
        items = raw.select(
            "item_id",
            pl.col("release_date").str.slice(-4).alias("release_year"),
            flags.alias("genres"),
        )
    df = (
        inter.join(users, on="user_id", how="left")
        .join(items, on="item_id", how="left")
    )
    ts = pl.from_epoch(pl.col("timestamp").cast(pl.Int64), time_unit="s")
    df = df.with_columns(
        (pl.col("rating") >= 4).cast(pl.Int8).alias("label"),
        ts.dt.hour().cast(pl.String).alias("hour"),
        ts.dt.weekday().cast(pl.String).alias("weekday"),
        pl.col("timestamp").cast(pl.Int64),
    ).select(
        "user_id", "item_id", "age", "gender", "occupation", "zip_code", "release_year",
        "genres", "hour", "weekday", "label", "timestamp",
    )
    kinds = {c: "categorical" for c in ("user_id", "item_id", "age", "gender", "occupation",
                                        "zip_code", "release_year", "hour", "weekday")}
    kinds["genres"] = "sequence"
    return Table(df=df, name="movielens-100k", time="timestamp", kinds=kinds,
                 identity=f"movielens-100k:{folder}:{_mtime(folder)}")


def _mtime(folder: Path) -> int:
    return max((p.stat().st_mtime_ns for p in folder.iterdir()), default=0)


def utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")
