"""Sources: read a table from a built-in name or a file into a Polars DataFrame.

Supported: CSV, TSV and Parquet files with a header; the Criteo Kaggle TSV layout (label,
I1-I13, C1-C26, no header); the Avazu CSV layout; MovieLens-100k, built in from the
files shipped in the ``recbole==1.2.1`` wheel or from a GroupLens ``ml-100k`` folder
(``u.data``, ``u.user``, ``u.item``); and the ``synthetic`` generator.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import polars as pl

from autodrs.data.errors import DataError
from autodrs.data.readers import (
    Source,
    cast_or_line,
    frame_chunks,
    open_text,
    parquet_arrow,
    parquet_chunks,
    read_header,
    text_chunks,
)

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

# the labels ``movielens-100k?tasks=...`` can give, each a 0/1 function of the rating:
# ``like`` is the single-task label (rating >= 4)
ML_TASKS = {"like": pl.col("rating") >= 4, "love": pl.col("rating") == 5,
            "dislike": pl.col("rating") <= 2}

BUILTINS = {
    "movielens-100k": "MovieLens-100k ratings (label: rating >= 4), 100,000 rows, 10 fields; "
                      "read from the recbole==1.2.1 wheel; movielens-100k?history=20 adds each "
                      "rating's 20 earlier items as a sequence field; "
                      "movielens-100k?tasks=like,love gives two labels (rating >= 4, "
                      "rating 5)",
    "synthetic": "planted-structure CTR data with written truth; options: "
                 "synthetic?rows=200000&seed=0; ?domain=source or ?domain=target on either "
                 "built-in gives a transfer split (docs/transfer.md)",
}


@dataclass
class Table:
    """A raw table in memory plus what its source knows about it."""

    df: pl.DataFrame
    name: str
    label: str = "label"
    time: str | None = None
    group: str | None = None
    kinds: dict[str, str] = field(default_factory=dict)
    log_numerical: list[str] = field(default_factory=list)
    identity: str = ""
    truth: dict[str, Any] | None = None
    labels: list[str] | None = None  # several label columns (``label`` is the first)

    def source(self) -> Source:
        return Source(name=self.name, chunks=frame_chunks(self.df), label=self.label,
                      time=self.time, group=self.group, kinds=dict(self.kinds),
                      log_numerical=list(self.log_numerical), identity=self.identity,
                      truth=self.truth, labels=self.labels)


def load_table(data: str, fmt: str | None = None, label: str | None = None,
               rows: int | None = None, labels: list[str] | None = None) -> Table:
    """Read ``data`` (a built-in name or a path) into memory; ``label`` overrides the
    source's label column (``labels``: its label columns, one per task). For data larger
    than memory use ``open_source``."""
    src = open_source(data, fmt=fmt, label=label, labels=labels).capped(rows)
    chunks = [c for c in src.chunks() if c.height]
    if not chunks:
        raise DataError(f"{data} has no data rows")
    df = pl.concat(chunks, how="vertical_relaxed") if len(chunks) > 1 else chunks[0]
    for name in src.labels or [src.label]:
        if name not in df.columns:
            raise DataError(f"label column {name!r} not found; columns are {df.columns}")
    return Table(df=df, name=src.name, label=src.label, time=src.time, group=src.group,
                 kinds=src.kinds, log_numerical=src.log_numerical, identity=src.identity,
                 truth=src.truth, labels=src.labels)


def open_source(data: str, fmt: str | None = None, label: str | None = None,
                labels: list[str] | None = None) -> Source:
    """A streaming ``Source`` for ``data``; ``label`` overrides the source's label column,
    ``labels`` (two or more, one per task) its label columns."""
    src = _open(data, fmt)
    if label:
        src.label = label
        src.labels = None
    if labels:
        names = [n.strip() for n in labels if n.strip()]
        if len(set(names)) != len(names):
            raise DataError(f"--labels names a column twice: {','.join(names)}")
        if label and names[0] != label:
            raise DataError(f"give --label or --labels, not both (got {label!r} and "
                            f"{','.join(names)})")
        src.label = names[0]
        src.labels = names if len(names) > 1 else None
    for name in src.labels or []:  # every label is a column, not a feature
        src.kinds.pop(name, None)
    return src


def _open(data: str, fmt: str | None) -> Source:
    name, _, query = data.partition("?")
    opts = dict(parse_qsl(query))
    if name == "movielens-100k":
        # tasks=: several labels from the rating
        table = movielens_100k(_recbole_ml100k_dir(), tasks=opts.get("tasks"))
        if "history" in opts:  # the sequence task: each rating's earlier items
            table = with_history(table, _int_option(opts, "history", 20))
        if "domain" in opts:  # transfer: users by age group (autodrs.data.domains)
            from autodrs.data.domains import TARGET_AGE, age_domain

            table = age_domain(table, opts["domain"], _int_option(opts, "age", TARGET_AGE))
        return table.source()
    if name == "synthetic":
        from autodrs.data.synthetic import default_rows, synthetic_source

        return synthetic_source(rows=_int_option(opts, "rows", default_rows(opts.get("domain"))),
                                seed=_int_option(opts, "seed", 0),
                                personas=_int_option(opts, "personas", 0),
                                domain=opts.get("domain"))
    path = Path(name)
    if not path.exists():
        raise DataError(
            f"data {data!r} is neither a built-in dataset ({', '.join(BUILTINS)}) nor an "
            "existing file"
        )
    if path.is_dir():
        if (path / "u.data").exists() or (path / "ml-100k.inter").exists():
            return movielens_100k(path).source()
        raise DataError(f"{path} is a folder without a known dataset layout (u.data, ml-100k.inter)")
    if path.stat().st_size == 0:
        raise DataError(f"{path} is empty")
    fmt = fmt or _guess_format(path)
    identity = f"{path.resolve()}:{path.stat().st_size}:{path.stat().st_mtime_ns}:{fmt}"
    if fmt == "criteo":
        src = criteo_source(path)
    elif fmt == "avazu":
        src = avazu_source(path)
    elif fmt == "parquet":
        src = Source(name=path.name, chunks=parquet_chunks(path), arrow=parquet_arrow(path))
    elif fmt in ("csv", "tsv"):
        sep = "\t" if fmt == "tsv" else ","
        src = Source(name=path.name, chunks=text_chunks(path, sep, read_header(path, sep), True),
                     text_columns=True)
    else:
        raise DataError(f"unknown format {fmt!r}; use csv, tsv, parquet, criteo or avazu")
    src.identity = identity
    return src


def _int_option(opts: dict[str, str], key: str, default: int) -> int:
    try:
        return int(opts.get(key, default))
    except ValueError as e:
        raise DataError(f"option {key}={opts[key]!r} is not an integer") from e


def _guess_format(path: Path) -> str:
    stem = path.name[:-3] if path.suffix == ".gz" else path.name
    suffix = Path(stem).suffix.lower()
    if suffix in (".parquet", ".pq"):
        return "parquet"
    with open_text(path) as fh:
        first = fh.readline().rstrip("\n")
    if suffix in (".txt", ".tsv") and "criteo" in stem.lower():
        return "criteo"
    if first.split(",")[:3] == ["id", "click", "hour"]:
        return "avazu"
    if suffix == ".tsv" or ("\t" in first and "," not in first):
        return "tsv"
    return "csv"


def criteo_source(path: Path) -> Source:
    """Criteo Kaggle layout: label, 13 integer features, 26 hashed categoricals, no header;
    the integer features are log-transformed numbers."""
    columns = ["label", *CRITEO_NUM, *CRITEO_CAT]
    raw = text_chunks(path, "\t", columns, header=False, quote=False)

    def chunks() -> Iterator[pl.DataFrame]:
        line = 1
        for df in raw():
            df = cast_or_line(df, path, "label", pl.Int64, line)
            for c in CRITEO_NUM:
                df = cast_or_line(df, path, c, pl.Float64, line)
            line += df.height
            yield df

    kinds = {c: "numerical" for c in CRITEO_NUM} | {c: "categorical" for c in CRITEO_CAT}
    return Source(name=path.name, chunks=chunks, kinds=kinds, log_numerical=list(CRITEO_NUM))


def avazu_source(path: Path) -> Source:
    """Avazu layout: id, click, hour (YYMMDDHH), then categorical columns; ``hour`` is
    split into hour of day and weekday, ``id`` is dropped."""
    header = read_header(path, ",")
    if "click" not in header or "hour" not in header:
        raise DataError(f"{path}: not the Avazu layout (needs columns 'click' and 'hour')")
    raw = text_chunks(path, ",", header, header=True)

    def chunks() -> Iterator[pl.DataFrame]:
        line = 2
        for df in raw():
            df = cast_or_line(df, path, "click", pl.Int64, line)
            # polars needs minutes beside hours in a format string
            ts = (df["hour"] + "00").str.strptime(pl.Datetime, "%y%m%d%H%M", strict=False)
            if ts.null_count():
                row = int(ts.is_null().arg_true()[0])
                raise DataError(f"{path}: malformed row at line {line + row}: bad hour "
                                f"{df['hour'][row]!r}")
            line += df.height
            yield df.with_columns(
                ts.dt.hour().cast(pl.String).alias("hour_of_day"),
                ts.dt.weekday().cast(pl.String).alias("weekday"),
                ts.dt.epoch("s").alias("_time"),
            ).drop([c for c in ("id", "hour") if c in df.columns]).rename({"click": "label"})

    kinds = {c: "categorical" for c in [*header, "hour_of_day", "weekday"]
             if c not in ("id", "hour", "click")}
    return Source(name=path.name, chunks=chunks, kinds=kinds, time="_time")


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


def movielens_100k(folder: Path, tasks: str | None = None) -> Table:
    """One row per rating; label = rating >= 4; user, item, demographic, release year,
    genres (sequence) and hour / weekday of the rating time. ``tasks`` (``like,love``)
    replaces the label by one 0/1 column per named task (``ML_TASKS``)."""
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
    )
    names = ml_tasks(tasks) if tasks is not None else ["label"]
    df = df.with_columns(*(ML_TASKS[t].cast(pl.Int8).alias(t) for t in names
                           if t != "label")).select(
        "user_id", "item_id", "age", "gender", "occupation", "zip_code", "release_year",
        "genres", "hour", "weekday", *names, "timestamp",
    )
    kinds = {c: "categorical" for c in ("user_id", "item_id", "age", "gender", "occupation",
                                        "zip_code", "release_year", "hour", "weekday")}
    kinds["genres"] = "sequence"
    if tasks is not None:
        joined = ",".join(names)
        return Table(df=df, name=f"movielens-100k?tasks={joined}", time="timestamp",
                     kinds=kinds, identity=f"movielens-100k:{folder}:{_mtime(folder)}:"
                     f"tasks={joined}", label=names[0],
                     labels=names if len(names) > 1 else None)
    return Table(df=df, name="movielens-100k", time="timestamp", kinds=kinds,
                 identity=f"movielens-100k:{folder}:{_mtime(folder)}")


def with_history(table: Table, max_len: int) -> Table:
    """MovieLens with a ``history`` sequence field: the user's last ``max_len`` rated items
    strictly before each rating (``autodrs.data.sequence``); grouped by user, so the
    metrics carry group AUC."""
    from autodrs.data.sequence import add_histories

    df = add_histories(table.df, "user_id", "item_id", "timestamp", max_len=max_len)
    kinds = {**table.kinds, "history": "sequence"}
    labels = table.labels or [table.label]
    return Table(df=df.select(*[c for c in df.columns if c not in (*labels, "timestamp")],
                              *labels, "timestamp"),
                 name=f"{table.name}?history={max_len}", time=table.time, kinds=kinds,
                 group=table.group or "user_id",  # group AUC per user
                 identity=f"{table.identity}:history={max_len}", label=table.label,
                 labels=table.labels)


def ml_tasks(tasks: str) -> list[str]:
    """The task names of ``movielens-100k?tasks=...``, checked."""
    names = [t.strip() for t in tasks.split(",") if t.strip()]
    unknown = [t for t in names if t not in ML_TASKS]
    if unknown or not names:
        raise DataError(f"movielens-100k?tasks={tasks!r}: unknown task "
                        f"{(unknown or [''])[0]!r}; choose from {', '.join(ML_TASKS)}")
    if len(set(names)) != len(names):
        raise DataError(f"movielens-100k?tasks={tasks!r} names a task twice")
    return names


def _mtime(folder: Path) -> int:
    return max((p.stat().st_mtime_ns for p in folder.iterdir()), default=0)


def utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")
