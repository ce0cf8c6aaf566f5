"""Source and target domains of the built-in data, for transfer learning (AutoFT).

``movielens-100k?domain=source`` / ``?domain=target`` split MovieLens-100k by the users'
age group: the target domain is the ratings of users aged ``age`` (45 by default) or older
(205 users, 18,414 ratings), the source domain those of younger users (738 users, 81,586
ratings). Every user is in exactly one domain, so no rating (row) is in both; the items and
the other fields' values are shared, which is what a pre-trained model can transfer. The
target is small on purpose: about 15k training rows, where fine-tuning every parameter of a
model pre-trained on 65k rows can over-fit.

``synthetic?domain=...`` is the planted counterpart (``autodrs.data.synthetic``): some
fields' effects change between the domains and the others do not, and the truth says which.
"""

from __future__ import annotations

from dataclasses import replace

import polars as pl

from autodrs.data.errors import DataError
from autodrs.data.sources import Table

DOMAINS = ("source", "target")
TARGET_AGE = 45  # movielens-100k: users this old or older form the target domain


def check_domain(domain: str) -> str:
    if domain not in DOMAINS:
        raise DataError(f"domain={domain!r}: choose source or target")
    return domain


def age_domain(table: Table, domain: str, age: int = TARGET_AGE) -> Table:
    """The ratings of one domain of MovieLens: ``target`` keeps users aged ``age`` or
    older, ``source`` the younger ones (a user's age is the same on each of their rows)."""
    check_domain(domain)
    if not 1 <= age <= 100:
        raise DataError(f"age={age}: the target domain's lowest age must be 1..100")
    older = pl.col("age").cast(pl.Int64) >= age
    df = table.df.filter(older if domain == "target" else ~older)
    if df.height == 0:
        raise DataError(f"domain={domain} with age={age} has no ratings")
    tag = f"domain={domain}" + ("" if age == TARGET_AGE else f"&age={age}")
    joiner = "&" if "?" in table.name else "?"
    return replace(table, df=df, name=f"{table.name}{joiner}{tag}",
                   identity=f"{table.identity}:{tag}")
