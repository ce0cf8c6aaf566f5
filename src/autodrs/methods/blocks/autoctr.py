"""AutoCTR (Song, Cheng, Zhou, Yang, Tian, Hu; KDD 2020, "Towards Automated Neural
Interaction Discovery for CTR Prediction"): evolutionary search over block DAGs.

An architecture is ``blocks`` blocks b0..b(n-1); each block has tokens ``type`` (mlp, fm,
dot, crossnet, attention), ``fields`` (a binary mask over the embedded fields it reads),
``inputs`` (a binary mask over the earlier blocks it reads; none for b0) and micro tokens
of its type (``width`` of an MLP, ``layers`` of a cross net, ``heads`` and ``layers`` of
self-attention). Blocks no later block reads are the outputs (``autodrs.models.dag``).
As in the official code (``nasrec/evolutionary_controller.py``):

- **mutation**: pick a block, pick one of its tokens (``inputs`` not for b0), resample it
  until it differs (categorical tokens uniformly, masks by Bernoulli(0.5) per bit), and
  redraw until the graph is valid;
- **parent selection**: the population ranked by validation logloss, score r = P for the
  best down to 1, drawn with probability ``C(r+c-1, c) / C(P+c, c+1)`` (the hockey-stick
  normalised rank distribution; P population, c candidate size);
- **learning-to-rank guide** (optional): ``mutants`` distinct, never-trained mutants of the
  parent are scored by a gradient-boosted regressor on architecture features (one-hot
  types, masks, micro tokens) fitted to the rank of every trained architecture's logloss;
  only the best-predicted mutant is trained (the paper uses a LightGBM lambdarank model);
- **survival** ('comb'): of the youngest 2P, keep the P with the lowest
  ``0.1 rank(logloss)/n + age/n + 0.1 rank(cost)/n`` (cost: the DAG's parameters);
- **low fidelity**: every candidate trains for a few epochs on a seeded subsample of the
  training rows, a child starting from its parent's weights where names and shapes match
  (warm start). Under a budget that affords ``FULL_FIDELITY_FITS`` (60) full fits of the
  first candidate (``fidelity=auto``, the default), every candidate instead trains as the
  final model will, from scratch: low fidelity favours the DAGs that learn fastest, not
  the best ones (on movielens-100k at 2 epochs the MLP-free DAGs led with validation
  logloss 0.553 against the DeepFM shape's 0.561, yet validated below it trained to the
  end, 0.7881 against 0.7914; the paper's low fidelity is a 100k-row subsample of Criteo,
  more rows than movielens-100k's whole training split);
- **final fit**: the best ``final_candidates`` architectures by validation logloss, and the
  seed backbones (below), are retrained from scratch on all training rows with
  ``final_seeds`` (2) shared seeds each, and the best by mean validation AUC is returned,
  so it never validates below the seed backbones (the paper retrains only the best; with
  ``final_candidates=1`` so does this). One fit each picked the luckiest initialisation:
  on movielens-100k at 20 minutes the returned DAG tested at 0.7858 where DeepFM reached
  0.7928. Under a budget the search keeps time back for this fit (a candidate stops where
  it begins; sized from the command's measured fit, at most half the stage), the seed
  backbones all train before that reserve may stop the search, and the fits run seed by
  seed, each fit of a round with an equal share of the time left, so one slow DAG cannot
  starve the others and a round that does not finish is dropped whole. The fits go
  through ``fit_spec``: the command's retrain of the returned spec at its seed is the
  final fit's own.

Three choices of this implementation: the initial population starts with the hand-crafted
DeepFM and IPNN shapes written as DAGs (``seed_backbones``; the paper warm-starts its
population from an earlier search), then random DAGs; those seeds are always among the
finalists, because low fidelity ranks them unfairly (on synthetic data at 200k rows the IPNN
shape validated 0.70-0.74 at low fidelity, below the warm-started leaders at 0.77-0.79,
although IPNN is the best backbone there at full fidelity); and the ranker is
scikit-learn's ``HistGradientBoostingRegressor`` on ranks (LightGBM's lambdarank is not a
dependency).
"""

from __future__ import annotations

import math
import random
import time
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch

from autodrs.data.dataset import EncodedData
from autodrs.experiment import fit_spec
from autodrs.methods.blocks.common import dag_result
from autodrs.methods.interaction.common import embedded_names, option
from autodrs.models.dag import EMBEDDINGS, Block, BlockGraph
from autodrs.search.base import (
    Method,
    SearchContext,
    SearchError,
    StageResult,
    no_result,
    register_method,
)
from autodrs.search.estimation import (
    BudgetExhausted,
    Deadline,
    low_fidelity,
    subsample,
    train_candidate,
)
from autodrs.spec import ArchSpec, SpecError
from autodrs.train.trainer import TrainConfig

MICRO: dict[str, dict[str, tuple[int, ...]]] = {
    "mlp": {"width": (32, 64, 128, 256, 512)},
    "crossnet": {"layers": (1, 2, 3)},
    "attention": {"heads": (1, 2), "layers": (1, 2)},
    "fm": {},
    "dot": {},
}
# AutoCTR's block types: those with micro tokens above (the DAG builder has more, e.g. the
# gin and sketch blocks of other methods, which AutoCTR's space does not draw)
AUTOCTR_TYPES = ("mlp", "fm", "dot", "crossnet", "attention")
DEFAULT_CANDIDATES = 40
FIDELITIES = ("auto", "low", "full")
# fidelity=auto trains every candidate at full fidelity when the budget affords this many
# full fits of the first one: enough for the initial population and two of its size more
FULL_FIDELITY_FITS = 60
RANKER_MIN_HISTORY = 10
MAX_REDRAWS = 200

Token = dict[str, Any]  # one block: type, fields (mask), inputs (mask), micro tokens


def base_dag_spec(spec: ArchSpec) -> ArchSpec:
    """``spec`` with its towers off, ready to take a DAG (fields, dims, linear term kept)."""
    return spec.copy(fm=False, pair_norm=False, inner=False, mlp=[], cross_layers=0,
                     attention_layers=0, dag=None)


class DagEncoding:
    """Architectures as token lists over fixed block slots, their graphs and features."""

    def __init__(self, names: list[str], blocks: int, types: tuple[str, ...]) -> None:
        if blocks < 1:
            raise SearchError(f"autoctr needs blocks >= 1, got {blocks}")
        bad = [t for t in types if t not in AUTOCTR_TYPES]
        if bad or not types:
            raise SearchError(f"block types must be among {', '.join(AUTOCTR_TYPES)}; got "
                              f"{list(types)}")
        self.names = names
        self.blocks = blocks
        self.types = types

    # ------------------------------------------------------------- graphs
    def graph(self, arch: list[Token]) -> BlockGraph:
        nodes = []
        for k, tok in enumerate(arch):
            fields = [n for n, bit in zip(self.names, tok["fields"], strict=True) if bit]
            inputs = ([EMBEDDINGS] if fields else []) + [
                f"b{j}" for j, bit in enumerate(tok["inputs"]) if bit]
            micro = {name: tok[name] for name in MICRO[tok["type"]]}
            nodes.append(Block(id=f"b{k}", type=tok["type"], inputs=inputs,
                               fields=fields if fields and len(fields) < len(self.names)
                               else None, **micro))
        read = {s for n in nodes for s in n.sources()}
        return BlockGraph(nodes, [n.id for n in nodes if n.id not in read])

    def valid(self, arch: list[Token]) -> bool:
        try:
            self.graph(arch).validate(self.names)
        except SpecError:
            return False
        return True

    def key(self, arch: list[Token]) -> str:
        """A canonical text of the architecture (what makes two candidates the same)."""
        return str(self.graph(arch).to_dict())

    # ------------------------------------------------------------- sampling
    def random_block(self, k: int, rng: random.Random) -> Token:
        kind = rng.choice(self.types)
        tok: Token = {"type": kind,
                      "fields": tuple(rng.random() < 0.5 for _ in self.names),
                      "inputs": tuple(rng.random() < 0.5 for _ in range(k))}
        for kind_ in MICRO.values():
            for name, choices in kind_.items():
                tok.setdefault(name, rng.choice(choices))
        return tok

    def random_arch(self, rng: random.Random) -> list[Token]:
        for _ in range(MAX_REDRAWS):
            arch = [self.random_block(k, rng) for k in range(self.blocks)]
            if self.valid(arch):
                return arch
        raise SearchError("could not draw a valid block DAG; allow more block types or "
                          "fields")

    def backbone(self, name: str) -> list[Token] | None:
        """A hand-crafted backbone in this encoding (None when it does not fit the slots or
        block types): ``deepfm``, an FM block beside an MLP tower (256, then halving widths);
        ``ipnn``, a dot block whose products feed the MLP tower with the embeddings."""
        first = {"deepfm": "fm", "ipnn": "dot"}.get(name)
        if first is None:
            raise SearchError(f"unknown seed backbone {name!r}; use deepfm or ipnn")
        if self.blocks < 3 or first not in self.types or "mlp" not in self.types:
            return None
        widths = MICRO["mlp"]["width"]
        every = tuple(True for _ in self.names)
        arch: list[Token] = []
        for k in range(self.blocks):
            tok: Token = {"type": "mlp", "fields": tuple(False for _ in self.names),
                          "inputs": tuple(j == k - 1 for j in range(k)), "width": widths[0],
                          "layers": 1, "heads": 1}
            if k == 0:
                tok |= {"type": first, "fields": every}
            elif k == 1:
                tok |= {"fields": every, "inputs": (name == "ipnn",), "width": 256}
            else:
                tok["width"] = max(widths[0], 256 >> (k - 1))
            arch.append(tok)
        if name == "deepfm":
            # the FM block is an output beside the tower, not read by it
            arch[1]["inputs"] = (False,)
        return arch if self.valid(arch) else None

    def tokens_of(self, k: int, tok: Token) -> list[str]:
        names = ["type", "fields"] + (["inputs"] if k > 0 else [])
        return names + list(MICRO[tok["type"]])

    def mutate(self, arch: list[Token], rng: random.Random) -> list[Token]:
        """Pick a block and one of its tokens; resample the token until it differs and the
        graph is valid."""
        for _ in range(MAX_REDRAWS):
            k = rng.randrange(self.blocks)
            name = rng.choice(self.tokens_of(k, arch[k]))
            old = arch[k][name]
            for _ in range(MAX_REDRAWS):
                if name == "type":
                    new: Any = rng.choice(self.types)
                elif name in ("fields", "inputs"):
                    new = tuple(rng.random() < 0.5 for _ in old)
                else:
                    new = rng.choice(next(m[name] for m in MICRO.values() if name in m))
                if new != old:
                    break
            else:
                continue  # a token with a single value cannot change; pick another
            child = [dict(t) for t in arch]
            child[k][name] = new
            if self.valid(child):
                return child
        raise SearchError("could not mutate the block DAG into a valid one")

    # ------------------------------------------------------------- features
    def features(self, arch: list[Token]) -> list[float]:
        """The architecture vector of the ranking model: per block slot, one-hot type,
        field mask, input mask (padded to the slot count) and micro tokens (log2 width)."""
        out: list[float] = []
        for tok in arch:
            out += [float(tok["type"] == t) for t in AUTOCTR_TYPES]
            out += [float(b) for b in tok["fields"]]
            out += [float(b) for b in tok["inputs"]] + [0.0] * (self.blocks - len(tok["inputs"]))
            out += [math.log2(tok["width"]) if tok["type"] == "mlp" else 0.0,
                    float(tok["layers"]) if tok["type"] in ("crossnet", "attention") else 0.0,
                    float(tok["heads"]) if tok["type"] == "attention" else 0.0]
        return out


@dataclass
class Fidelity:
    """How the candidates train: config, training rows, warm start from the parent, and how
    many times longer a full-fidelity fit takes (rows x epochs)."""

    name: str
    config: TrainConfig
    rows: EncodedData
    warm: bool
    scale: float


@dataclass
class Candidate:
    """A trained architecture: its tokens, validation metrics, cost and (while alive in
    the population) weights."""

    number: int
    arch: list[Token]
    spec: ArchSpec
    logloss: float
    auc: float
    cost: int
    seconds: float
    parent: int | None = None
    state: dict[str, torch.Tensor] | None = field(default=None, repr=False)


def hockey_stick_pick(ranked: list[int], candidates: int, rng: random.Random) -> int:
    """Pick from ``ranked`` (best first): score r = P for the best down to 1, drawn with
    probability ``C(r + c - 1, c) / C(P + c, c + 1)`` (these sum to one by the hockey-stick
    identity)."""
    size = len(ranked)
    weights = [math.comb(r + candidates - 1, candidates) for r in range(size, 0, -1)]
    return rng.choices(ranked, weights=weights, k=1)[0]


def survivors(history: list[Candidate], population: list[int], size: int) -> list[int]:
    """AutoCTR's 'comb' survival: of the youngest ``2 size`` members, keep the ``size`` with
    the lowest ``0.1 rank(logloss)/n + age/n + 0.1 rank(cost)/n``."""
    young = sorted(population, reverse=True)[: 2 * size]
    if len(young) <= size:
        return sorted(young)
    n = len(young)
    by_loss = {c: r for r, c in enumerate(sorted(young, key=lambda c: history[c].logloss))}
    by_cost = {c: r for r, c in enumerate(sorted(young, key=lambda c: history[c].cost))}
    by_age = {c: r for r, c in enumerate(young)}  # 0 for the newest
    score = {c: 0.1 * by_loss[c] / n + by_age[c] / n + 0.1 * by_cost[c] / n for c in young}
    return sorted(sorted(young, key=lambda c: (score[c], c))[:size])


class MutantRanker:
    """The learning-to-rank guide: a gradient-boosted regressor from architecture features
    to the rank of the validation logloss among trained architectures (0 = best)."""

    def __init__(self, seed: int) -> None:
        self.seed = seed

    def best(self, encoding: DagEncoding, history: list[Candidate],
             mutants: list[list[Token]]) -> int:
        from sklearn.ensemble import HistGradientBoostingRegressor

        x = np.array([encoding.features(c.arch) for c in history])
        order = np.argsort([c.logloss for c in history], kind="stable")
        rank = np.empty(len(history))
        rank[order] = np.arange(len(history))
        model = HistGradientBoostingRegressor(max_depth=3, learning_rate=0.05, max_iter=200,
                                              min_samples_leaf=2, random_state=self.seed)
        model.fit(x, rank)
        predicted = model.predict(np.array([encoding.features(m) for m in mutants]))
        return int(np.argmin(predicted))


def summary(spec: ArchSpec) -> str:
    """One line per architecture: its blocks' labels, in order."""
    assert spec.dag is not None
    return " | ".join(n.default_label() for n in BlockGraph.from_dict(spec.dag).nodes)


@register_method
class AutoCTR(Method):
    """AutoCTR: evolution over block DAGs (``random``: the same space sampled at random).

    Options: ``blocks`` (block slots, 4; the paper uses 7), ``block_types``
    (comma-separated, default all five), ``population`` (P, 20), ``candidate_size`` (c, 10),
    ``ranker`` (the learning-to-rank guide, on), ``mutants`` (mutants the guide ranks, 50),
    ``fidelity`` (``auto``, ``low`` or ``full``; see :meth:`fidelity`), ``subsample``
    (train rows per low-fidelity candidate, 0.5), ``epochs`` (per low-fidelity candidate,
    2), ``warm_start`` (children start from the parent's weights; on at low fidelity, off
    at full), ``seed_backbones``
    (deepfm,ipnn; empty for a purely random start), ``final_candidates`` (3),
    ``final_seeds`` (fits per finalist, 2). When no candidate finishes inside the budget
    the stage reports that it found nothing. The search
    stops at ``trials`` candidates, when the wall-time budget left is only enough for the
    final fit, or after 40 candidates when neither is given.
    """

    name = "autoctr"
    component = "blocks"
    strategies = ("evolution", "random")

    def search(self, ctx: SearchContext) -> StageResult:
        strategy = self.resolve_strategy(ctx)
        t0 = time.perf_counter()
        schema = ctx.dataset.schema
        base = base_dag_spec(ctx.spec)
        names = embedded_names(schema, base)
        raw_types = ctx.options.get("block_types", AUTOCTR_TYPES)
        types = tuple(t.strip() for t in (raw_types.split(",") if isinstance(raw_types, str)
                                          else raw_types) if t.strip())
        encoding = DagEncoding(names, option(ctx, "blocks", 2 if ctx.fast else 4, int), types)
        population_size = option(ctx, "population", 2 if ctx.fast else 20, int)
        candidate_size = option(ctx, "candidate_size", 10, int)
        use_ranker = bool(ctx.options.get("ranker", True))
        n_mutants = option(ctx, "mutants", 50, int)
        if population_size < 1 or candidate_size < 0 or n_mutants < 1:
            raise SearchError("autoctr needs population >= 1, candidate_size >= 0 and "
                              "mutants >= 1")
        raw_seeds = ctx.options.get("seed_backbones", "" if ctx.fast else "deepfm,ipnn")
        seeds = [a for a in (encoding.backbone(n.strip()) for n in (
            raw_seeds.split(",") if isinstance(raw_seeds, str) else raw_seeds) if n.strip())
            if a is not None]
        # the seeds start the population only under evolution, and then join the final fit
        seed_keys = {encoding.key(a) for a in seeds} if strategy == "evolution" else set()
        finalists = option(ctx, "final_candidates", 1 if ctx.fast else 3, int)
        final_seeds = option(ctx, "final_seeds", 1 if ctx.fast else 2, int)
        if finalists < 1 or final_seeds < 1:
            raise SearchError(f"final_candidates and final_seeds must be >= 1, got "
                              f"{finalists} and {final_seeds}")
        mode = str(ctx.options.get("fidelity", "auto"))
        if mode not in FIDELITIES:
            raise SearchError(f"unknown autoctr fidelity {mode!r}; choose from "
                              f"{', '.join(FIDELITIES)}")
        # auto: probe the first candidate at full fidelity, and go on at full fidelity only
        # if the budget affords FULL_FIDELITY_FITS such fits (without a budget there is
        # nothing to size them against)
        probing = mode == "auto" and ctx.budget_seconds is not None
        fid = self.fidelity(ctx, "full" if probing else
                            ("low" if mode == "auto" else mode))
        limit = ctx.trials if ctx.trials is not None else (
            None if ctx.budget_seconds is not None else (3 if ctx.fast else DEFAULT_CANDIDATES))
        rng = random.Random(ctx.seed)
        ranker = MutantRanker(ctx.seed)
        history: list[Candidate] = []
        population: list[int] = []
        seen: set[str] = set()
        seeded: dict[int, str] = {}  # the trained seed backbones: number -> key
        stopped = False

        def evaluate(arch: list[Token], parent: Candidate | None,
                     reserve: float) -> Candidate | None:
            spec = base.copy(dag=encoding.graph(arch).to_dict())
            start = time.perf_counter()
            try:
                # a candidate slower than the others stops where the final fit's time begins
                model, fit = train_candidate(ctx.dataset, spec, fid.config, fid.rows,
                                             ctx.dataset.valid, [Deadline(ctx, reserve)],
                                             parent.state if parent is not None and fid.warm
                                             else None)
            except BudgetExhausted:
                return None
            dag_params = sum(p.numel() for p in model.dag.parameters())  # type: ignore[union-attr]
            cand = Candidate(len(history), arch, spec, float(fit.valid["logloss"]),
                             float(fit.valid["auc"]), int(dag_params),
                             time.perf_counter() - start,
                             parent.number if parent is not None else None,
                             {k: v.detach().clone() for k, v in model.state_dict().items()})
            history.append(cand)
            key = encoding.key(arch)
            seen.add(key)
            if key in seed_keys:
                seeded[cand.number] = key
            return cand

        def final_count(leaders: int) -> int:
            """The finalists the final fit will train: the best ``leaders`` by validation
            logloss and the seed backbones, a leader that is a seed counted once."""
            top = {c.number for c in sorted(history, key=lambda c: (c.logloss, c.number))
                   [:leaders]}
            return len(top | set(seeded)) + len(seed_keys - set(seeded.values()))

        # the command's measured fit of its start model on these rows, when it made one
        retrain = option(ctx, "retrain_seconds", None)
        n_leaders = finalists  # the searched finalists the final fit can afford
        while limit is None or len(history) < limit:
            left = ctx.remaining()
            # a budget keeps room to retrain the finalists at full fidelity (see
            # final_fit_seconds); it keeps at most half of the stage, by fitting fewer
            # searched finalists (never fewer seed backbones), so that a slow final fit on
            # a loaded machine does not leave the search a single candidate
            reserve = 0.0
            if history and finalists > 1:
                per_fit = self.final_fit_seconds(fid, history, retrain)
                n_leaders = finalists
                while (ctx.budget_seconds is not None and n_leaders > 1
                       and final_count(n_leaders) * final_seeds * per_fit
                       > ctx.budget_seconds / 2):
                    n_leaders -= 1
                reserve = final_count(n_leaders) * final_seeds * per_fit
            # the seed backbones all train before the reserve may stop the search: they
            # join the final fit whatever their rank (so it never returns below them), and
            # a low-fidelity candidate costs a small part of a final fit
            seeding = bool(seeds) and strategy == "evolution"
            if left is not None and left <= reserve and not seeding:
                stopped = True
                break
            parent: Candidate | None = None
            if seeding:
                arch = seeds.pop(0)
            elif strategy == "random" or len(population) < population_size:
                arch = self.fresh(encoding, rng, seen)
            else:
                ranked = sorted(population, key=lambda c: (history[c].logloss, c))
                parent = history[hockey_stick_pick(ranked, candidate_size, rng)]
                arch = self.child(encoding, parent, rng, seen, history,
                                  ranker if use_ranker and len(history) >= RANKER_MIN_HISTORY
                                  else None, n_mutants)
            if probing:
                # the probe may take 1 / FULL_FIDELITY_FITS of the budget; cut there, full
                # fits are too dear and it is dropped: the search runs at low fidelity
                probing = False
                assert ctx.budget_seconds is not None and left is not None
                cand = evaluate(arch, parent, left - ctx.budget_seconds / FULL_FIDELITY_FITS)
                if cand is None:
                    fid = self.fidelity(ctx, "low")
                    cand = evaluate(arch, parent, reserve)
            else:
                cand = evaluate(arch, parent, 0.0 if seeding else reserve)
            if cand is None:
                stopped = True
                break
            population.append(cand.number)
            if strategy == "evolution" and len(population) > population_size:
                population = survivors(history, population, population_size)
            alive = set(population)
            for c in history:
                if c.number not in alive:
                    c.state = None  # only the population's weights can be inherited
        if not history:
            return no_result(self.name, strategy, ctx.spec, "no candidate finished training: "
                             "the budget ran out inside the first one",
                             time.perf_counter() - t0,
                             extra={"candidates": 0, "stopped_by_budget": True})
        ordered = sorted(history, key=lambda c: (c.logloss, c.number))
        best = ordered[0]
        final: list[dict[str, Any]] = []
        final_cut: list[int] = []
        if finalists > 1:
            # the seed backbones join the finalists: they trained from scratch at low
            # fidelity, while the leaders are warm-started descendants that trained longer
            # (inherited weights), so low fidelity alone ranks the seeds unfairly low
            chosen = ordered[:n_leaders]
            leaders = {c.number for c in chosen}
            chosen += [c for c in history if encoding.key(c.arch) in seed_keys
                       and c.number not in leaders]
            best, final, final_cut = self.final_fit(ctx, chosen, best, final_seeds)
        labels = [f"#{c.number}: {summary(c.spec)}" for c in ordered[:10]]
        return dag_result(
            self.name, strategy, best.spec, labels,
            {lab: c.auc for lab, c in zip(labels, ordered, strict=False)},
            time.perf_counter() - t0,
            trials=[{"number": c.number, "values": [c.auc], "state": "COMPLETE",
                     "valid": {"auc": c.auc, "logloss": c.logloss}, "parent": c.parent,
                     "dag": summary(c.spec),
                     "dag_params": c.cost, "seconds": round(c.seconds, 3)} for c in history],
            extra={"candidates": len(history), "best_number": best.number,
                   "fidelity": fid.name,
                   "seed_numbers": [c.number for c in history
                                    if encoding.key(c.arch) in seed_keys],
                   "valid_logloss": best.logloss, "valid_auc": best.auc,
                   "stopped_by_budget": stopped, "ranker": use_ranker,
                   "final_leaders": n_leaders if finalists > 1 else 0,
                   "final_fit": final, "final_cut": final_cut})

    @staticmethod
    def final_fit_seconds(fid: Fidelity, history: list[Candidate],
                          retrain: float | None) -> float:
        """What one fit of the final fit (all training rows, the command's epochs, early
        stopping) is expected to take. At full fidelity the candidates are such fits: their
        median. At low fidelity, the command's measured fit of its start model on these rows
        (``retrain_seconds``), times how much dearer the median candidate is than the first
        (the start's shape when the seeds are on; at least 1); without it, the median
        candidate scaled to every row and every epoch of the command: an upper bound, as
        early stopping ends most fits far sooner (at the 50-epoch cap, 50 times a
        2-epoch, half-row candidate: on movielens-100k at 20 minutes that reserve exceeded
        the stage and the search stopped after its first candidate, the DeepFM seed)."""
        median = float(np.median([c.seconds for c in history]))
        if fid.name == "full":
            return median
        if retrain:
            return float(retrain) * max(1.0, median / max(history[0].seconds, 1e-9))
        return fid.scale * median

    @staticmethod
    def fidelity(ctx: SearchContext, name: str) -> Fidelity:
        """How candidates train. ``low``: ``epochs`` (2) epochs on a ``subsample`` (0.5) of
        the training rows, warm-started from the parent (``warm_start``, on); ``full``: the
        command's epochs on every row, from scratch unless ``warm_start`` is set. Both stop
        after one epoch without improvement."""
        full = name == "full"
        epochs = ctx.train.epochs if full else option(ctx, "epochs", 1 if ctx.fast else 2, int)
        config = replace(low_fidelity(ctx.train, epochs), seed=ctx.seed)
        rows = subsample(ctx.dataset.train, None if full else option(ctx, "subsample", 0.5),
                         ctx.seed)
        asked = ctx.options.get("warm_start")  # None (not given): the fidelity's default
        warm = (not full) if asked is None else bool(asked)
        # how much longer a full fit takes than a candidate's (rows x epochs)
        scale = len(ctx.dataset.train) * ctx.train.epochs / (len(rows) * config.epochs)
        return Fidelity(name, config, rows, warm, scale)

    @staticmethod
    def final_fit(ctx: SearchContext, finalists: list[Candidate], best: Candidate,
                  seeds: int = 1) -> tuple[Candidate, list[dict[str, Any]], list[int]]:
        """Retrain the finalists from scratch at full fidelity (all training rows, the
        command's epochs and early stopping, as AutoCTR's final fit), each with the same
        ``seeds`` seeds (``ctx.seed``, ``ctx.seed + 1``, ...), and keep the one with the best
        mean validation AUC: a single fit each picks the luckiest initialisation (a winner's
        curse), and the shared seeds make the comparison paired. The seed backbones are
        among the finalists, so the one kept never validates below them.

        The fits run in rounds, one seed each: every finalist at ``ctx.seed``, then every
        finalist at ``ctx.seed + 1``, ... Under a budget each fit of a round gets an equal
        share of the time left (it stops where the round's later fits' shares begin), so
        one slow DAG cannot starve the others. A finalist cut short in the first round does
        not count (its number is listed in the third value); a later round that does not
        finish is dropped whole, and the finalists are compared on the rounds all of them
        finished (on a loaded machine, splitting the time into every fit of every seed cut
        all of them short, and the search returned a DAG never fitted in full)."""
        if seeds < 1:
            raise SearchError(f"final_seeds must be >= 1, got {seeds}")
        aucs: dict[int, list[float]] = {c.number: [] for c in finalists}
        cut: list[int] = []
        alive = list(finalists)
        for k in range(seeds):
            done: dict[int, float] = {}
            for i, cand in enumerate(alive):
                left = ctx.remaining()
                after = len(alive) - i - 1  # fits of this round still to run after this one
                reserve = 0.0 if left is None else left * after / (after + 1)
                config = replace(ctx.train, seed=ctx.seed + k, progress=False,
                                 checkpoint=None)
                try:
                    # as the command's retrain fits (fit_spec): inside its shared_fits the
                    # retrain of the one returned, at the command's seed, is this very fit,
                    # not a second one that the budget left after the search may cut short
                    out = fit_spec(ctx.dataset, cand.spec, config, [Deadline(ctx, reserve)])
                except BudgetExhausted:
                    if k == 0:
                        cut.append(cand.number)
                        continue
                    break  # a later round that does not fit is dropped whole
                done[cand.number] = float(out.metrics["valid"]["auc"])
            if k == 0:
                alive = [c for c in alive if c.number in done]
            elif len(done) < len(alive):
                break
            for c in alive:
                aucs[c.number].append(done[c.number])
        results: list[dict[str, Any]] = []
        chosen, chosen_auc = best, -1.0
        for cand in alive:
            auc = sum(aucs[cand.number]) / len(aucs[cand.number])
            results.append({"number": cand.number, "valid_auc": round(auc, 6),
                            "valid_aucs": [round(a, 6) for a in aucs[cand.number]]})
            if auc > chosen_auc:
                chosen, chosen_auc = cand, auc
        return chosen, results, cut

    @staticmethod
    def fresh(encoding: DagEncoding, rng: random.Random, seen: set[str]) -> list[Token]:
        for _ in range(MAX_REDRAWS):
            arch = encoding.random_arch(rng)
            if encoding.key(arch) not in seen:
                return arch
        return arch

    @staticmethod
    def child(encoding: DagEncoding, parent: Candidate, rng: random.Random, seen: set[str],
              history: list[Candidate], ranker: MutantRanker | None,
              n_mutants: int) -> list[Token]:
        """One never-trained mutant of ``parent`` (the ranker's pick of ``n_mutants``)."""
        mutants: list[list[Token]] = []
        keys: set[str] = set()
        wanted = n_mutants if ranker is not None else 1
        for _ in range(MAX_REDRAWS * wanted):
            arch = encoding.mutate(parent.arch, rng)
            key = encoding.key(arch)
            if key in seen or key in keys:
                continue
            mutants.append(arch)
            keys.add(key)
            if len(mutants) >= wanted:
                break
        if not mutants:
            return encoding.mutate(parent.arch, rng)
        if ranker is None or len(mutants) == 1:
            return mutants[0]
        return mutants[ranker.best(encoding, history, mutants)]
