"""Synthetic CTR data with planted structure and written truth.

The click logit is a sum of per-value main effects of the *relevant* categorical fields,
dot products of per-value latent vectors for the *planted pairs*, and a non-monotone
function (a cosine bump) of one numerical field. *Noise* fields (categorical and
numerical) have no effect; a *redundant* field is a relabelled copy of a relevant one.
Values follow Zipf-like frequencies, so rare values are many and seldom seen, as in real
logs. With ``personas=P`` (2..4) a categorical ``user_group`` field (P values, uniform) is
added and each group has two planted pairs of its own on top of the shared ones (the
truth's ``personas``), for personalised interaction selection (BP-FIS); without it the
rows are those of the plain generator, unchanged. With ``domain=target`` the planted
effects (main effects and pair latent vectors) of the ``TRANSFER_CHANGED`` fields are drawn
anew and the rows come from a random stream of their own, while every other parameter is the
source's; ``domain=source`` is the plain generator. The truth's ``transfer`` names the
changed and unchanged fields, so a transfer method's choice of what to fine-tune can be
checked. The true click probability is kept beside the rows, so the Bayes-optimal AUC of any
split can be measured. Generation is chunked: any row count in bounded memory.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from autodrs.data.errors import DataError
from autodrs.data.readers import Source
from autodrs.data.sources import TRUE_PROB, Table

CHUNK_ROWS = 500_000


@dataclass
class SyntheticConfig:
    relevant: dict[str, int] = field(default_factory=lambda: {
        "r0": 1000, "r1": 500, "r2": 200, "r3": 100, "r4": 50, "r5": 20})
    noise: dict[str, int] = field(default_factory=lambda: {
        "n0": 2000, "n1": 300, "n2": 50, "n3": 10})
    redundant: dict[str, str] = field(default_factory=lambda: {"r0_copy": "r0"})
    pairs: list[tuple[str, str]] = field(default_factory=lambda: [
        ("r0", "r1"), ("r0", "r2"), ("r1", "r3"), ("r2", "r4"), ("r3", "r5")])
    zipf: float = 1.1
    main_scale: float = 0.5
    pair_scale: float = 0.7
    latent_dim: int = 4
    bump: float = 1.2
    bias: float = -0.2


PERSONA_FIELD = "user_group"
# each user group's own planted pairs (none of them a shared pair)
PERSONA_PAIRS = [[("r1", "r2"), ("r4", "r5")], [("r0", "r3"), ("r2", "r5")],
                 [("r1", "r4"), ("r0", "r5")], [("r2", "r3"), ("r1", "r5")]]
PERSONA_SCALE = 1.0
# the fields whose planted effects differ between the source and the target domain
TRANSFER_CHANGED = ["r1", "r2", "r4"]
TARGET_ROWS = 20_000  # the target domain's default size: small, so transfer matters


def default_rows(domain: str | None) -> int:
    """The rows ``synthetic`` draws when none are asked for: fewer in the target domain."""
    return TARGET_ROWS if domain == "target" else 200_000


class SyntheticGenerator:
    """Draws the planted parameters once from ``seed``; ``chunk(i, n)`` draws rows.

    ``personas`` > 0 adds the user groups of the module docstring; their parameters and
    rows come from random streams of their own, so the other columns stay as without."""

    def __init__(self, seed: int = 0, config: SyntheticConfig | None = None,
                 personas: int = 0, domain: str | None = None) -> None:
        self.cfg = config or SyntheticConfig()
        self.seed = seed
        if domain is not None and domain not in ("source", "target"):
            raise DataError(f"synthetic domain={domain!r}: choose source or target")
        self.domain = domain
        if personas and not 2 <= personas <= len(PERSONA_PAIRS):
            raise DataError(f"synthetic personas must be 0 or 2..{len(PERSONA_PAIRS)}, got "
                            f"{personas}")
        self.personas = personas
        prng = np.random.default_rng([seed, 2])
        self.persona_latent = [
            {pair: (prng.normal(0, 1, (self.cfg.relevant[pair[0]], self.cfg.latent_dim)),
                    prng.normal(0, 1, (self.cfg.relevant[pair[1]], self.cfg.latent_dim)))
             for pair in PERSONA_PAIRS[p]}
            for p in range(personas)]
        rng = np.random.default_rng([seed, 0])
        cards = {**self.cfg.relevant, **self.cfg.noise}
        self.probs = {}
        for name, card in cards.items():
            w = 1.0 / np.arange(1, card + 1) ** self.cfg.zipf
            self.probs[name] = w / w.sum()
        self.main = {f: rng.normal(0, self.cfg.main_scale, c) for f, c in self.cfg.relevant.items()}
        k = self.cfg.latent_dim
        self.latent = {
            pair: (rng.normal(0, 1, (self.cfg.relevant[pair[0]], k)),
                   rng.normal(0, 1, (self.cfg.relevant[pair[1]], k)))
            for pair in self.cfg.pairs
        }
        self.relabel = {copy: rng.permutation(self.cfg.relevant[src])
                        for copy, src in self.cfg.redundant.items()}
        if domain == "target":
            self._shift_domain()

    def _shift_domain(self) -> None:
        """The target domain: the changed fields' main effects and latent vectors drawn
        anew (their own random stream), everything else as in the source."""
        trng = np.random.default_rng([self.seed, 4])
        for f in TRANSFER_CHANGED:
            self.main[f] = trng.normal(0, self.cfg.main_scale, self.cfg.relevant[f])
        for (a, b), (ua, ub) in list(self.latent.items()):
            self.latent[(a, b)] = (
                trng.normal(0, 1, ua.shape) if a in TRANSFER_CHANGED else ua,
                trng.normal(0, 1, ub.shape) if b in TRANSFER_CHANGED else ub)

    def chunk(self, index: int, n: int) -> pl.DataFrame:
        # the target domain's rows come from a stream of their own (no row shared)
        rng = np.random.default_rng([self.seed, 5 if self.domain == "target" else 1, index])
        cols: dict[str, Any] = {}
        ids = {}
        for name, p in self.probs.items():
            ids[name] = rng.choice(len(p), size=n, p=p)
            cols[name] = ids[name]
        for copy, src in self.cfg.redundant.items():
            cols[copy] = self.relabel[copy][ids[src]]
        num0 = rng.uniform(-3, 3, n)
        cols["num0"] = num0
        cols["num_noise"] = rng.normal(0, 1, n)
        logit = np.full(n, self.cfg.bias)
        for f, w in self.main.items():
            logit += w[ids[f]]
        k = self.cfg.latent_dim
        for (a, b), (ua, ub) in self.latent.items():
            logit += self.cfg.pair_scale * (ua[ids[a]] * ub[ids[b]]).sum(1) / np.sqrt(k)
        logit += self.cfg.bump * (np.cos(1.5 * num0) - 0.2)
        if self.personas:
            group = np.random.default_rng([self.seed, 3, index]).integers(0, self.personas, n)
            cols[PERSONA_FIELD] = group
            for p, latent in enumerate(self.persona_latent):
                rows = group == p
                for (a, b), (ua, ub) in latent.items():
                    product = (ua[ids[a][rows]] * ub[ids[b][rows]]).sum(1)
                    logit[rows] += PERSONA_SCALE * product / np.sqrt(k)
        p = 1.0 / (1.0 + np.exp(-logit))
        cols["label"] = (rng.random(n) < p).astype(np.int8)
        cols[TRUE_PROB] = p
        return pl.DataFrame(cols)

    def frame(self, rows: int) -> pl.DataFrame:
        return pl.concat([self.chunk(i, n) for i, n in enumerate(_chunks(rows))])

    def truth(self, rows: int) -> dict[str, Any]:
        cfg = self.cfg
        truth = {
            "rows": rows,
            "seed": self.seed,
            "relevant": [*cfg.relevant, "num0"],
            "noise": [*cfg.noise, "num_noise"],
            "redundant": dict(cfg.redundant),
            "pairs": [list(p) for p in cfg.pairs],
            "pair_function": "product",
            "nonmonotone": "num0",
            "config": asdict(cfg),
        }
        if self.personas:
            truth["relevant"].append(PERSONA_FIELD)
            truth["personas"] = {"field": PERSONA_FIELD, "pairs": {
                str(p): [list(pair) for pair in PERSONA_PAIRS[p]] for p in range(self.personas)}}
        if self.domain is not None:
            categorical = [*cfg.relevant, *cfg.noise, *cfg.redundant]
            truth["transfer"] = {
                "domain": self.domain, "changed": list(TRANSFER_CHANGED),
                "unchanged": [f for f in categorical if f not in TRANSFER_CHANGED],
                "what": "main effects and pair latent vectors drawn anew in the target"}
        return json.loads(json.dumps(truth))  # plain JSON types, as written to disk

    def kinds(self) -> dict[str, str]:
        kinds = {name: "categorical" for name in [*self.cfg.relevant, *self.cfg.noise,
                                                   *self.cfg.redundant]}
        if self.personas:
            kinds[PERSONA_FIELD] = "categorical"
        return kinds | {"num0": "numerical", "num_noise": "numerical"}


def _chunks(rows: int) -> list[int]:
    full, rest = divmod(rows, CHUNK_ROWS)
    return [CHUNK_ROWS] * full + ([rest] if rest else [])


def synthetic_table(rows: int = 200_000, seed: int = 0) -> Table:
    if rows < 100:
        raise ValueError(f"synthetic needs at least 100 rows, got {rows}")
    gen = SyntheticGenerator(seed)
    return Table(df=gen.frame(rows), name=f"synthetic?rows={rows}&seed={seed}",
                 kinds=gen.kinds(), identity=f"synthetic:{rows}:{seed}:v1",
                 truth=gen.truth(rows))


def synthetic_source(rows: int = 200_000, seed: int = 0, personas: int = 0,
                     domain: str | None = None) -> Source:
    """The synthetic rows generated chunk by chunk as they are read (any size)."""
    if rows < 100:
        raise DataError(f"synthetic needs at least 100 rows, got {rows}")
    gen = SyntheticGenerator(seed, personas=personas, domain=domain)

    def chunks() -> Iterator[pl.DataFrame]:
        for i, n in enumerate(_chunks(rows)):
            yield gen.chunk(i, n)

    name, identity = f"synthetic?rows={rows}&seed={seed}", f"synthetic:{rows}:{seed}:v1"
    if personas:
        name, identity = f"{name}&personas={personas}", f"{identity}:personas{personas}"
    if domain is not None:
        name, identity = f"{name}&domain={domain}", f"{identity}:domain={domain}"
    return Source(name=name, chunks=chunks, kinds=gen.kinds(), identity=identity,
                  truth=gen.truth(rows))


def write_synthetic(path: str | Path, rows: int, seed: int = 0) -> dict[str, Any]:
    """Write ``rows`` rows to a Parquet file chunk by chunk (bounded memory) and the truth
    to ``<path>.truth.json``; returns the truth."""
    import pyarrow.parquet as pq

    path = Path(path)
    gen = SyntheticGenerator(seed)
    writer = None
    try:
        for i, n in enumerate(_chunks(rows)):
            table = gen.chunk(i, n).to_arrow()
            if writer is None:
                writer = pq.ParquetWriter(path, table.schema)
            writer.write_table(table)
    finally:
        if writer is not None:
            writer.close()
    truth = gen.truth(rows)
    Path(f"{path}.truth.json").write_text(json.dumps(truth, indent=2))
    return truth


def oracle_spec(truth: dict[str, Any], embed_dim: int = 16) -> Any:
    """The structure the data was generated with: only the relevant fields, a first-order
    term, an FM over only the planted pairs, and the non-monotone numerical field
    bucketised. Trained with the same trainer, it shows what a structure search can reach
    with the data at hand."""
    from autodrs.spec import ArchSpec, Interaction

    return ArchSpec(
        fields=list(truth["relevant"]), embed_dim=embed_dim, linear=True, fm=True,
        interactions=[Interaction(list(p)) for p in truth["pairs"]],
        numerical={truth["nonmonotone"]: "bucket"},
        provenance=[{"method": "oracle", "note": "planted structure"}],
    )
