"""AutoCTR (Song, Cheng, Zhou, Yang, Tian, Hu; KDD 2020, "Towards Automated Neural
Interaction Discovery for CTR Prediction"): evolutionary search over block DAGs.

An architecture is up to ``blocks`` blocks b0..b(n-1); each block has tokens ``type``
(mlp, fm, dot, crossnet, attention), ``fields`` (a binary mask over the embedded fields it
reads), ``inputs`` (a binary mask over the earlier blocks it reads; none for b0) and micro
tokens of its type (``width`` of an MLP, ``layers`` of a cross net, ``heads`` and
``layers`` of self-attention); b0 also holds ``linear``, whether the model keeps the
first-order term. Blocks no later block reads are the outputs (``autodrs.models.dag``); an
output FM block is read out as the plain FM sum, as in FM and DeepFM. As in the official
code (``nasrec/evolutionary_controller.py``):

- **mutation**: pick a block, pick one of its tokens (``inputs`` not for b0), resample it
  until it differs (categorical tokens uniformly, masks by Bernoulli(0.5) per bit), and
  redraw until the graph is valid;
- **parent selection**: the population ranked (``rank_by``, below), score r = P for the
  best down to 1, drawn with probability ``C(r+c-1, c) / C(P+c, c+1)`` (the hockey-stick
  normalised rank distribution; P population, c candidate size);
- **learning-to-rank guide** (optional): ``mutants`` distinct, never-trained mutants of the
  parent are scored by a gradient-boosted regressor on architecture features (one-hot
  types, masks, micro tokens) fitted to the rank of every trained architecture; only the
  best-predicted mutant is trained (the paper uses a LightGBM lambdarank model);
- **survival** ('comb'): of the youngest 2P, keep the P with the lowest
  ``0.1 rank(score)/n + age/n + 0.1 rank(cost)/n`` (cost: the DAG's parameters);
- **low fidelity**: every candidate trains for a few epochs on a seeded subsample of the
  training rows, a child starting from its parent's weights where names and shapes match
  (warm start). Under a budget that affords ``FULL_FIDELITY_FITS`` (60) full fits of the
  first candidate (``fidelity=auto``, the default), every candidate instead trains as the
  final model will, from scratch.

Departures, each measured (docs/blocks.md, docs/benchmarks.md):

- **seeds**: the population starts with every default backbone the space can write
  (``SEED_BACKBONES``: DeepFM, FM, Wide&Deep, DCN-V2, IPNN) as DAGs that build the same
  model as the backbone (layers, first-order term, read-out, and the same initial weights
  at the same seed), then random DAGs (the paper warm-starts from an earlier search). Each
  seed is fitted in full at the command's seed first: that fit is its backbone's own, so
  the final choice is never worse than choosing among the backbones on validation;
- **ranking**: by low-fidelity validation AUC (``rank_by=auc``; the paper ranks by
  logloss, ``rank_by=logloss``). Neither ranks full fits well (Spearman 0.24-0.71 on a
  few DAGs, ``benchmarks/autoctr_fidelity.py``); AUC's top pick was the best full fit on
  synthetic where logloss's was the second, a small sample;
- **promotion** (successive halving's idea over two rungs): every ``promote_every``
  candidates the best one not yet fitted in full is fitted in full (``fit_spec``, the
  command's own retrain, at the command's seed), so low fidelity only proposes and full
  fits decide; as the search ends, the best not yet in full is promoted too;
- **final fit**: the best ``final_candidates`` in full are fitted again at the next
  ``final_seeds - 1`` seeds and the best mean validation AUC leads (one fit each picks
  the luckiest initialisation; a later round the budget cuts is dropped whole). An evolved
  leader is returned only when its lead over the best seed shape is beyond noise
  (``final_rule=paired``, the default): DeLong's test of the two AUCs on the same
  validation rows (predictions averaged over the shared seeds), one-sided at
  ``final_confidence`` (0.95) Bonferroni-corrected for the evolved DAGs fitted in full;
  otherwise the best seed shape is (at a low load on movielens-100k the largest of 8-23
  noisy validation means won by 0.0007-0.0018 and tested 0.0010-0.0054 below the best
  backbone). ``final_rule=mean`` returns the leader. Under a budget the time these fits
  still need is kept back from the search (at most half of the stage; a candidate stops
  where it begins), and when they end early the search resumes and the next final fit
  takes its new leader, so the budget is used;
- the ranker is scikit-learn's ``HistGradientBoostingRegressor`` on ranks (LightGBM's
  lambdarank is not a dependency).
"""

from __future__ import annotations

import math
import random
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch

from autodrs.data.dataset import EncodedData
from autodrs.experiment import fit_spec
from autodrs.methods.blocks.common import dag_result
from autodrs.methods.interaction.common import embedded_names, option
from autodrs.models.backbones import backbone_spec
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
from autodrs.train.trainer import TrainConfig, Trainer

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
# the default backbones (autodrs.config.DEFAULT_BASELINES) AutoCTR's space can write as DAGs
SEED_BACKBONES = ("deepfm", "fm", "widedeep", "dcnv2", "ipnn")
# what the search ranks candidates by (parents, survival, the ranker, promotions)
DEFAULT_RANK_BY = "auc"
FIDELITIES = ("auto", "low", "full")
# fidelity=auto trains every candidate at full fidelity when the budget affords this many
# full fits of the first one: enough for the initial population and two of its size more
FULL_FIDELITY_FITS = 60
RANKER_MIN_HISTORY = 10
# how the final fit chooses (``final_rule``): ``paired`` returns an evolved DAG only when
# its validation lead over the best seed shape is beyond noise (``FullFits.paired_test``);
# ``mean``: the best mean validation AUC, whatever it is
FINAL_RULES = ("paired", "mean")
DEFAULT_FINAL_RULE = "paired"
# the one-sided confidence of that test, before its Bonferroni correction
DEFAULT_FINAL_CONFIDENCE = 0.95
MAX_REDRAWS = 200

Token = dict[str, Any]  # one block: type, fields (mask), inputs (mask), micro tokens


def base_dag_spec(spec: ArchSpec) -> ArchSpec:
    """``spec`` with its towers off, ready to take a DAG (fields, dims, linear term kept)."""
    return spec.copy(fm=False, pair_norm=False, inner=False, mlp=[], cross_layers=0,
                     attention_layers=0, dag=None)


def linear_term(arch: list[Token]) -> bool:
    """Whether the architecture has the first-order term (its global token, kept on the
    first block; an architecture without it has the term)."""
    return bool(arch[0].get("linear", True))


def spec_of(base: ArchSpec, encoding: DagEncoding, arch: list[Token]) -> ArchSpec:
    """The candidate's spec: ``base`` with the architecture's DAG and first-order term."""
    return base.copy(dag=encoding.graph(arch).to_dict(), linear=linear_term(arch))


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
            # an output FM block is FM's own term, the plain sum (as in FM and DeepFM)
            readout = {"readout": "sum"} if tok["type"] == "fm" else {}
            nodes.append(Block(id=f"b{k}", type=tok["type"], inputs=inputs,
                               fields=fields if fields and len(fields) < len(self.names)
                               else None, **micro, **readout))
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
        return str(self.graph(arch).to_dict()) + f" linear={linear_term(arch)}"

    # ------------------------------------------------------------- sampling
    def random_block(self, k: int, rng: random.Random) -> Token:
        kind = rng.choice(self.types)
        tok: Token = {"type": kind,
                      "fields": tuple(rng.random() < 0.5 for _ in self.names),
                      "inputs": tuple(rng.random() < 0.5 for _ in range(k))}
        for kind_ in MICRO.values():
            for name, choices in kind_.items():
                tok.setdefault(name, rng.choice(choices))
        if k == 0:
            tok["linear"] = rng.random() < 0.5
        return tok

    def random_arch(self, rng: random.Random) -> list[Token]:
        for _ in range(MAX_REDRAWS):
            arch = [self.random_block(k, rng) for k in range(self.blocks)]
            if self.valid(arch):
                return arch
        raise SearchError("could not draw a valid block DAG; allow more block types or "
                          "fields")

    def backbone(self, name: str) -> list[Token] | None:
        """A default backbone (``SEED_BACKBONES``) written as a DAG that builds the same
        model: the same layers, first-order term, read-out and initial weights at the same
        seed (``autodrs.models.backbones``; test_autoctr_seed_dags_are_their_backbones).
        None when it needs more block slots or types than the encoding has:

        - ``fm``: an FM block (read out as the plain sum), with the first-order term;
        - ``widedeep``: MLP 256 over the embeddings, then MLP 128, with the first-order term;
        - ``deepfm``: an FM block beside that MLP tower, with the first-order term;
        - ``dcnv2``: that MLP tower beside a 3-layer cross net over the embeddings;
        - ``ipnn``: a dot block whose products feed the MLP tower with the embeddings."""
        if name not in SEED_BACKBONES:
            raise SearchError(f"unknown seed backbone {name!r}; use "
                              f"{', '.join(SEED_BACKBONES)}")
        every = tuple(True for _ in self.names)
        spec = backbone_spec(name)
        widths = list(spec.mlp)
        first = {"deepfm": "fm", "fm": "fm", "ipnn": "dot"}.get(name)
        arch: list[Token] = []

        def block(kind: str, fields: bool, inputs: list[int], **micro: int) -> None:
            k = len(arch)
            tok: Token = {"type": kind, "fields": every if fields else
                          tuple(False for _ in self.names),
                          "inputs": tuple(j in inputs for j in range(k)),
                          "width": MICRO["mlp"]["width"][0], "layers": 1, "heads": 1}
            arch.append(tok | micro)

        if first is not None:
            block(first, True, [])
        for w in widths:
            prev = len(arch) - 1
            if w == widths[0]:
                block("mlp", True, [0] if name == "ipnn" else [], width=w)
            else:
                block("mlp", False, [prev], width=w)
        if spec.cross_layers:
            block("crossnet", True, [], layers=spec.cross_layers)
        arch[0]["linear"] = bool(spec.linear)
        usable = (len(arch) <= self.blocks
                  and all(t["type"] in self.types for t in arch)
                  and all(t["width"] in MICRO["mlp"]["width"] for t in arch)
                  and all(t["layers"] in MICRO["crossnet"]["layers"] for t in arch
                          if t["type"] == "crossnet"))
        return arch if usable and self.valid(arch) else None

    def tokens_of(self, k: int, tok: Token) -> list[str]:
        names = ["type", "fields"] + (["inputs"] if k > 0 else ["linear"])
        return names + list(MICRO[tok["type"]])

    def mutate(self, arch: list[Token], rng: random.Random) -> list[Token]:
        """Pick a block and one of its tokens; resample the token until it differs and the
        graph is valid."""
        for _ in range(MAX_REDRAWS):
            k = rng.randrange(len(arch))
            name = rng.choice(self.tokens_of(k, arch[k]))
            old = arch[k][name] if name != "linear" else linear_term(arch)
            for _ in range(MAX_REDRAWS):
                if name == "linear":
                    new: Any = not old
                elif name == "type":
                    new = rng.choice(self.types)
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
        out: list[float] = [float(linear_term(arch))]
        width = len(AUTOCTR_TYPES) + len(self.names) + self.blocks + 3
        for tok in arch:
            out += [float(tok["type"] == t) for t in AUTOCTR_TYPES]
            out += [float(b) for b in tok["fields"]]
            out += [float(b) for b in tok["inputs"]] + [0.0] * (self.blocks - len(tok["inputs"]))
            out += [math.log2(tok["width"]) if tok["type"] == "mlp" else 0.0,
                    float(tok["layers"]) if tok["type"] in ("crossnet", "attention") else 0.0,
                    float(tok["heads"]) if tok["type"] == "attention" else 0.0]
        # an architecture with fewer blocks than slots (a seed backbone's) pads with zeros
        return out + [0.0] * (width * (self.blocks - len(arch)))


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
    by_auc: bool = False  # ranked by validation AUC rather than logloss (``rank_by``)

    @property
    def score(self) -> float:
        """What the search ranks candidates by, lower better: the validation logloss, or
        minus the validation AUC under ``rank_by=auc``."""
        return -self.auc if self.by_auc else self.logloss


class FullFits:
    """The full-fidelity fits of candidates (a seed backbone's, a promotion's, the final
    fit's): per candidate number its validation AUCs by round (round k at ``ctx.seed + k``,
    through ``fit_spec``, the command's own retrain), their seconds, and the candidates
    whose first fit the budget cut."""

    def __init__(self, is_seed: Callable[[int], bool] | None = None,
                 rule: str = "mean", confidence: float = DEFAULT_FINAL_CONFIDENCE,
                 keep_top: int = 3, predicting: bool = True) -> None:
        if rule not in FINAL_RULES:
            raise SearchError(f"unknown autoctr final_rule {rule!r}; choose from "
                              f"{', '.join(FINAL_RULES)}")
        if not 0.0 < confidence < 1.0:
            raise SearchError(f"final_confidence must be in (0, 1), got {confidence}")
        self.aucs: dict[int, list[float]] = {}
        self.times: list[float] = []
        self.cut: list[int] = []
        self.is_seed = is_seed or (lambda number: False)
        self.rule = rule
        self.confidence = confidence
        self.keep_top = keep_top
        self.predicting = predicting and rule == "paired"  # False: no seed to test against
        # under rule=paired: validation predictions (float32) by candidate and round, kept
        # for the seed shapes and the best ``keep_top`` only, and the validation labels
        self.preds: dict[int, list[np.ndarray]] = {}
        self.labels: np.ndarray | None = None
        self.decision: dict[str, Any] = {"rule": rule}

    def fit(self, ctx: SearchContext, cand: Candidate, k: int, reserve: float) -> bool:
        """Fit ``cand`` at seed ``ctx.seed + k`` (round k), stopping where ``reserve``
        seconds are left; False when the budget cut it (a first round's is then listed)."""
        config = replace(ctx.train, seed=ctx.seed + k, progress=False, checkpoint=None)
        start = time.perf_counter()
        try:
            # as the command's retrain fits (fit_spec): inside its shared_fits the retrain of
            # the one returned, at the command's seed, is this very fit
            out = fit_spec(ctx.dataset, cand.spec, config, [Deadline(ctx, reserve)])
        except BudgetExhausted:
            out = None
        if out is None or getattr(getattr(out, "fit", None), "stopped_by_hook", False):
            # a fit another hook ended early (the run's own deadline) is cut too: choosing
            # on it chose on a half-trained model (0.55 validation AUC at load 20)
            if k == 0:
                self.cut.append(cand.number)
            return False
        self.times.append(time.perf_counter() - start)
        self.aucs.setdefault(cand.number, []).append(float(out.metrics["valid"]["auc"]))
        if self.predicting:
            # one more pass over the validation rows (the fit's own scores are not kept)
            valid = ctx.dataset.valid
            if self.labels is None:
                self.labels = valid.label.numpy().astype(bool)
            self.preds.setdefault(cand.number, []).append(
                Trainer(config).predict(out.model, valid).astype(np.float32))
            keep = set(self.top(self.keep_top)) | {c for c in self.aucs if self.is_seed(c)}
            for c in [c for c in self.preds if c not in keep]:
                del self.preds[c]
        return True

    def count(self) -> int:
        return sum(len(v) for v in self.aucs.values())

    def seconds(self) -> float:
        """The median full fit's seconds (0 before the first)."""
        return float(np.median(self.times)) if self.times else 0.0

    def top(self, n: int) -> list[int]:
        """The ``n`` best by their first round's validation AUC."""
        return sorted(self.aucs, key=lambda c: (-self.aucs[c][0], c))[:n]

    def owed(self, n: int, seeds: int) -> list[tuple[int, int]]:
        """The (candidate, round) fits the final choice still needs: the later rounds of
        the ``n`` best."""
        return [(c, k) for c in self.top(n) for k in range(len(self.aucs[c]), seeds)]

    def choose(self, n: int, seeds: int) -> tuple[int, list[dict[str, Any]]]:
        """The final choice among the ``n`` best (see ``choose_among``)."""
        return self.choose_among(self.top(n), seeds)

    def choose_among(self, numbers: list[int], seeds: int
                     ) -> tuple[int, list[dict[str, Any]]]:
        """The best mean validation AUC over the first ``seeds`` rounds, or over the rounds
        that all of ``numbers`` finished when the budget cut a later one (leaving out the
        candidate whose later fit was cut returned a worse one): the leader. Under
        ``rule=paired`` an evolved leader is returned only when ``paired_test`` finds its
        lead over the best seed shape beyond noise; otherwise that seed shape is.
        ``decision`` records the test."""
        pool = list(numbers)
        rounds = min(seeds, *(len(self.aucs[c]) for c in pool))
        mean = {c: sum(self.aucs[c][:rounds]) / rounds for c in pool}
        leader = max(pool, key=lambda c: (mean[c], -c))
        results = [{"number": c, "valid_auc": round(mean[c], 6),
                    "valid_aucs": [round(a, 6) for a in self.aucs[c][:rounds]]}
                   for c in pool]
        self.decision = {"rule": self.rule, "leader": leader, "returned": leader}
        if self.rule == "paired":
            self.decision = self.paired_test(leader, pool, rounds)
        return self.decision["returned"], results

    def paired_test(self, leader: int, pool: list[int], rounds: int) -> dict[str, Any]:
        """Whether the evolved ``leader``'s validation lead over the best seed shape is beyond
        noise. The reference is the best seed shape among ``pool`` by mean validation AUC
        (else the best fitted in full, by the rounds it has). Both are scored on the same
        validation rows by their predictions averaged over the rounds both have (the same
        seeds); DeLong's test for two correlated AUCs gives the lead's standard error, and
        the leader is returned only when the lower bound ``lead - z se`` is above 0, with z
        the one-sided ``confidence`` quantile Bonferroni-corrected for the ``m`` evolved
        DAGs fitted in full (the leader is the largest of them: the winner's curse)."""
        out: dict[str, Any] = {"rule": "paired", "leader": leader, "returned": leader}
        if self.is_seed(leader):
            return out | {"why": "the leader is a seed shape"}
        seeds = [c for c in pool if self.is_seed(c)]
        if seeds:
            reference = max(seeds, key=lambda c: (sum(self.aucs[c][:rounds]) / rounds, -c))
        else:
            fitted = [c for c in self.aucs if self.is_seed(c)]
            if not fitted:
                return out | {"why": "no seed shape was fitted in full: nothing to test "
                                     "against"}
            reference = max(fitted, key=lambda c: (
                sum(self.aucs[c][:rounds]) / len(self.aucs[c][:rounds]), -c))
        common = min(rounds, len(self.preds.get(leader, [])),
                     len(self.preds.get(reference, [])))
        out["reference"] = reference
        if common < 1 or self.labels is None:
            return out | {"returned": reference,
                          "why": "no validation predictions to test on: the seed shape"}
        score = np.mean(self.preds[leader][:common], axis=0)
        base = np.mean(self.preds[reference][:common], axis=0)
        lead, se = delong_lead(self.labels, score, base)
        m = max(1, sum(1 for c in self.aucs if not self.is_seed(c)))
        z = statistics.NormalDist().inv_cdf(1.0 - (1.0 - self.confidence) / m)
        bound = lead - z * se
        clear = bound > 0.0
        return out | {
            "returned": leader if clear else reference, "rounds": common,
            "lead": round(lead, 6), "se": round(se, 6), "comparisons": m,
            "confidence": self.confidence, "z": round(z, 4), "lower_bound": round(bound, 6),
            "why": ("the evolved leader's lead is beyond noise" if clear else
                    "the evolved leader's lead is within noise: the best seed shape")}


def delong_lead(labels: np.ndarray, scores: np.ndarray, base: np.ndarray
                ) -> tuple[float, float]:
    """The validation AUC lead of ``scores`` over ``base`` on the same rows and its standard
    error, by DeLong's method for two correlated ROC curves (DeLong, DeLong and
    Clarke-Pearson 1988) through midranks: per positive, the share of negatives scored
    below it (ties half), per negative the share of positives above; the lead's variance is
    that of the two models' differences of these over the positives and the negatives."""
    from scipy.stats import rankdata

    y = np.asarray(labels).astype(bool)
    pos, neg = int(y.sum()), int((~y).sum())
    if pos < 2 or neg < 2:
        raise SearchError("the paired test needs at least two rows of each class")
    v10, v01 = [], []
    for s in (scores, base):
        s = np.asarray(s, np.float64)
        ranks = rankdata(s)
        v10.append((ranks[y] - rankdata(s[y])) / neg)
        v01.append(1.0 - (ranks[~y] - rankdata(s[~y])) / pos)
    d10, d01 = v10[0] - v10[1], v01[0] - v01[1]
    lead = float(d10.mean())
    var = float(d10.var(ddof=1)) / pos + float(d01.var(ddof=1)) / neg
    return lead, math.sqrt(max(var, 0.0))


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
    by_loss = {c: r for r, c in enumerate(sorted(young, key=lambda c: history[c].score))}
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
        order = np.argsort([c.score for c in history], kind="stable")
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
    ``rank_by`` (``auc`` or ``logloss``), ``fidelity`` (``auto``, ``low`` or ``full``; see
    :meth:`fidelity`), ``subsample`` (train rows per low-fidelity candidate, 0.5),
    ``epochs`` (per low-fidelity candidate, 2), ``warm_start`` (children start from the
    parent's weights; on at low fidelity, off at full), ``seed_backbones`` (the five of
    ``SEED_BACKBONES``; empty for a purely random start), ``promote_every`` (10),
    ``final_candidates`` (3), ``final_seeds`` (fits per finalist, 2), ``final_rule``
    (``paired``: an evolved DAG only when its lead over the best seed shape is beyond
    noise; ``mean``: the best mean), ``final_confidence`` (0.95). When no candidate
    finishes inside the budget the stage reports that it found nothing. The search stops
    at ``trials`` candidates, when the wall-time budget is spent, or after 40 candidates
    when neither is given.
    """

    name = "autoctr"
    component = "blocks"
    strategies = ("evolution", "random")
    # its choice is a full fit at the command's seed (or the start, when the budget cut
    # every full fit): the command's retrain reuses it
    fits_its_choice = True

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
        raw_seeds = ctx.options.get("seed_backbones", "" if ctx.fast else ",".join(SEED_BACKBONES))
        named = [(n, encoding.backbone(n)) for n in (
            m.strip() for m in (raw_seeds.split(",") if isinstance(raw_seeds, str)
                                else raw_seeds)) if n]
        seeds = [a for _, a in named if a is not None]
        seed_names = {encoding.key(a): n for n, a in named if a is not None}
        # the seed backbone the command started from (its towers match the start spec)
        start = next((n for n in seed_names.values() if all(
            getattr(backbone_spec(n), k) == getattr(ctx.spec, k) for k in
            ("linear", "fm", "inner", "mlp", "cross_layers", "attention_layers"))), None)
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
        by_auc = str(ctx.options.get("rank_by", DEFAULT_RANK_BY)) == "auc"
        if str(ctx.options.get("rank_by", DEFAULT_RANK_BY)) not in ("auc", "logloss"):
            raise SearchError(f"autoctr rank_by must be auc or logloss, got "
                              f"{ctx.options.get('rank_by')!r}")
        promote_every = option(ctx, "promote_every", 2 if ctx.fast else 10, int)
        if promote_every < 1:
            raise SearchError(f"promote_every must be >= 1, got {promote_every}")
        rng = random.Random(ctx.seed)
        ranker = MutantRanker(ctx.seed)
        history: list[Candidate] = []
        population: list[int] = []
        seen: set[str] = set()
        seeded: dict[int, str] = {}  # the trained seed backbones: number -> key
        fits = FullFits(lambda number: number in seeded,
                        option(ctx, "final_rule", DEFAULT_FINAL_RULE, str),
                        option(ctx, "final_confidence", DEFAULT_FINAL_CONFIDENCE), finalists,
                        predicting=bool(seed_keys))
        stopped = False

        def evaluate(arch: list[Token], parent: Candidate | None,
                     reserve: float) -> Candidate | None:
            spec = spec_of(base, encoding, arch)
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
            cand = Candidate(len(history), arch, spec,
                float(fit.valid["logloss"]), float(fit.valid["auc"]), int(dag_params),
                time.perf_counter() - start, parent.number if parent is not None else None,
                {k: v.detach().clone() for k, v in model.state_dict().items()}, by_auc)
            history.append(cand)
            key = encoding.key(arch)
            seen.add(key)
            if key in seed_keys:
                seeded[cand.number] = key
            return cand

        def per_fit() -> float:
            """One full fit's expected seconds (0 before anything trained)."""
            if fits.times:
                return fits.seconds()
            return self.final_fit_seconds(fid, history, retrain) if history else 0.0

        def unpromoted(n: int) -> list[Candidate]:
            """The best ``n`` candidates by the search's ranking not yet fitted in full."""
            done = set(fits.aucs) | set(fits.cut)
            return sorted((c for c in history if c.number not in done),
                          key=lambda c: (c.score, c.number))[:n]

        def first_or_evaluate(arch: list[Token], parent: Candidate | None, reserve: float,
                              left: float | None) -> Candidate | None:
            """``evaluate``; the first candidate is the fidelity probe: at full fidelity it
            may take 1 / FULL_FIDELITY_FITS of the budget; cut there, full fits are too dear
            and the search goes on at low fidelity."""
            nonlocal probing, fid
            if not probing:
                return evaluate(arch, parent, reserve)
            probing = False
            assert ctx.budget_seconds is not None and left is not None
            cand = evaluate(arch, parent, left - ctx.budget_seconds / FULL_FIDELITY_FITS)
            if cand is None:
                fid = self.fidelity(ctx, "low")
                cand = evaluate(arch, parent, reserve)
            return cand

        # the command's measured fit of its start model on these rows, when it made one
        retrain = option(ctx, "retrain_seconds", None)
        since_promotion = 0
        while True:
            left = ctx.remaining()
            top = [history[n] for n in fits.top(finalists)]
            # the final fit: the best `finalists` in full, each to `final_seeds` fits, and
            # the best candidates not yet in full, enough to fill the finalists (at least
            # one); the time it needs is kept back (a candidate stops where it begins), at
            # most half of the stage
            leaders = unpromoted(max(finalists - len(top), 1))
            need = len(fits.owed(finalists, final_seeds)) + final_seeds * len(leaders)
            reserve = need * per_fit()
            if ctx.budget_seconds is not None:
                reserve = min(reserve, ctx.budget_seconds / 2)
            spare = None if left is None else left - reserve
            searching = limit is None or len(history) < limit
            # 1. the seed backbones: each trains as a candidate, then in full at ctx.seed
            #    (the same fit as its backbone's), before the search or a reserve stops it
            if seeds and strategy == "evolution":
                cand = first_or_evaluate(seeds.pop(0), None, 0.0, left)
                if cand is None:
                    stopped = True
                    break
                population.append(cand.number)
                continue
            pending = [history[n] for n in seeded if n not in fits.aucs and n not in fits.cut]
            if pending:
                # one at a time, each with all the time left: the start model's shape first,
                # then by the search's ranking (equal shares of the time left cut every one
                # of them at load 20, where one full fit took 300 s of a 570 s stage)
                first = min(pending, key=lambda c: (seed_names[seeded[c.number]] != start,
                                                    c.score, c.number))
                fits.fit(ctx, first, 0, 0.0)
                continue
            # 2. the search: a new candidate, and every `promote_every` candidates the best
            #    one not yet in full is fitted in full (promoted), while the time left
            #    exceeds the reserve by one full fit
            if searching and (spare is None or spare > per_fit()):
                if since_promotion >= promote_every and leaders:
                    fits.fit(ctx, leaders[0], 0, reserve)
                    since_promotion = 0
                    continue
                parent = None
                if strategy == "random" or len(population) < population_size:
                    arch = self.fresh(encoding, rng, seen)
                else:
                    ranked = sorted(population, key=lambda c: (history[c].score, c))
                    parent = history[hockey_stick_pick(ranked, candidate_size, rng)]
                    arch = self.child(encoding, parent, rng, seen, history,
                                      ranker if use_ranker and len(history)
                                      >= RANKER_MIN_HISTORY else None, n_mutants)
                cand = first_or_evaluate(arch, parent, reserve, left)
                if cand is None:
                    stopped = True
                    continue  # the reserve began: the final fit
                since_promotion += 1
                population.append(cand.number)
                if strategy == "evolution" and len(population) > population_size:
                    population = survivors(history, population, population_size)
                alive = set(population)
                for c in history:
                    if c.number not in alive:
                        c.state = None  # only the population's weights can be inherited
                continue
            # 3. the final fit (fits already made are not repeated); when it ends with time
            #    to spare (early stopping ended its fits sooner than expected), the search
            #    resumes, and the next final fit takes its new leader
            if not (leaders or fits.owed(finalists, final_seeds)):
                break
            before = fits.count()
            for i, cand in enumerate(leaders):
                # the leaders first (their first seed), each keeping the time of the fits
                # owed after it
                keep = (len(fits.owed(finalists, final_seeds)) + len(leaders) - i - 1) \
                    * per_fit()
                fits.fit(ctx, cand, 0, keep if ctx.budget_seconds is None
                         else min(keep, ctx.budget_seconds / 2))
            top = [history[n] for n in fits.top(finalists)]
            if top:
                self.final_fit(ctx, top, top[0], final_seeds, fits)
            if fits.count() == before or not searching:
                break
        stopped = stopped or (ctx.remaining() is not None
                              and (limit is None or len(history) < limit))
        if not history:
            return no_result(self.name, strategy, ctx.spec, "no candidate finished training: "
                             "the budget ran out inside the first one",
                             time.perf_counter() - t0,
                             extra={"candidates": 0, "stopped_by_budget": True})
        ordered = sorted(history, key=lambda c: (c.score, c.number))
        # with nothing fitted in full (no budget), the start model's shape (the command's
        # start) when it trained, else the best by the search's ranking
        best = next((history[n] for n, k in seeded.items() if seed_names[k] == start),
                    ordered[0])
        final: list[dict[str, Any]] = []
        if fits.aucs:
            number, final = fits.choose(finalists, final_seeds)
            best = history[number]
        labels = [f"#{c.number}: {summary(c.spec)}" for c in ordered[:10]]
        trials = [{"number": c.number, "values": [c.auc], "state": "COMPLETE",
                   "valid": {"auc": c.auc, "logloss": c.logloss}, "parent": c.parent,
                   "dag": summary(c.spec), "linear": c.spec.linear,
                   "full_valid_aucs": [round(a, 6) for a in fits.aucs.get(c.number, [])],
                   "dag_params": c.cost, "seconds": round(c.seconds, 3)} for c in history]
        extra = {"candidates": len(history), "best_number": best.number,
                 "fidelity": fid.name, "rank_by": "auc" if by_auc else "logloss",
                 "seed_numbers": [c.number for c in history
                                  if encoding.key(c.arch) in seed_keys],
                 "seed_names": {str(c.number): seed_names[encoding.key(c.arch)]
                                for c in history if encoding.key(c.arch) in seed_keys},
                 "valid_logloss": best.logloss, "valid_auc": best.auc,
                 "stopped_by_budget": stopped, "ranker": use_ranker,
                 "promoted": [n for n in fits.aucs if n not in seeded],
                 "full_fits": fits.count(),
                 "final_leaders": finalists,
                 "final_fit": final, "final_cut": list(fits.cut),
                 # how the final fit chose: the leader, and under final_rule=paired the
                 # test of its lead over the best seed shape
                 "final_rule": fits.decision if final else {"rule": fits.rule}}
        if not fits.aucs and ctx.budget_seconds is not None:
            # the budget cut every full fit: the start model goes on (low fidelity only
            # proposes; the command's retrain of it is its baseline's fit when that trained)
            return no_result(self.name, strategy, ctx.spec, "the budget cut every full fit: "
                             "the start model goes on", time.perf_counter() - t0,
                             trials=trials, extra=extra | {"best_number": None})
        return dag_result(
            self.name, strategy, best.spec.copy(provenance=list(ctx.spec.provenance)), labels,
            {lab: c.auc for lab, c in zip(labels, ordered, strict=False)},
            time.perf_counter() - t0, trials=trials, extra=extra)

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
                  seeds: int = 1, fits: FullFits | None = None
                  ) -> tuple[Candidate, list[dict[str, Any]], list[int]]:
        """Fit the finalists from scratch at full fidelity (all training rows, the command's
        epochs and early stopping, as AutoCTR's final fit), each with the same ``seeds``
        seeds (``ctx.seed``, ``ctx.seed + 1``, ...), and keep the one with the best mean
        validation AUC: a single fit each picks the luckiest initialisation (a winner's
        curse), and the shared seeds make the comparison paired; under ``fits``' rule
        ``paired`` an evolved leader only when its lead over the best seed shape is beyond
        noise (``FullFits.choose_among``). Fits already in ``fits`` (a promotion's, or an
        earlier call's) are not repeated.

        The fits run in rounds, one seed each. Under a budget each fit of a round gets an
        equal share of the time left (it stops where the round's later fits' shares begin),
        so one slow DAG cannot starve the others. A finalist cut short in the first round
        does not count (its number is listed in the third value); a later round that does
        not finish is dropped whole, and the finalists are compared on the rounds all of
        them finished (on a loaded machine, splitting the time into every fit of every seed
        cut all of them short, and the search returned a DAG never fitted in full)."""
        if seeds < 1:
            raise SearchError(f"final_seeds must be >= 1, got {seeds}")
        fits = fits if fits is not None else FullFits()
        alive = [c for c in finalists if c.number not in fits.cut]
        for k in range(seeds):
            todo = [c for c in alive if len(fits.aucs.get(c.number, [])) == k]
            for i, cand in enumerate(todo):
                left = ctx.remaining()
                after = len(todo) - i - 1  # fits of this round still to run after this one
                reserve = 0.0 if left is None else left * after / (after + 1)
                if not fits.fit(ctx, cand, k, reserve) and k > 0:
                    break  # a later round that does not fit is dropped whole
            alive = [c for c in alive if c.number in fits.aucs]
            if any(len(fits.aucs[c.number]) <= k for c in alive):
                break
        if not alive:
            return best, [], list(fits.cut)
        number, results = fits.choose_among([c.number for c in alive], seeds)
        return next(c for c in alive if c.number == number), results, list(fits.cut)

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
