"""AMEIR (Zhao, Xiao, Zhang, Bian, Yan; IJCAI 2021, "AMEIR: Automatic Behavior Modeling,
Interaction Exploration and MLP Investigation in the Recommender System"): one-shot random
search over the three stages of a recommender, by weight sharing.

The space: (1) behaviour modelling, ``slots`` (3) residual blocks over the history, each
one of ``identity`` (the slot is skipped), ``conv``, ``gru``, ``pool``, ``attention``
(``autodrs.nn.sequence``), with or without positional embeddings, read out by mean pooling
or DIN's target attention; (2) interaction exploration, which Hadamard pairs of the
non-sequential categorical fields feed the MLP; (3) MLP investigation, the width of each of
``mlp_layers`` (2) hidden layers among ``widths`` (64, 128, 256).

The algorithm, as the paper's: one supernet holds every candidate op of every slot, every
pair and the widest MLP (a narrower layer uses the leading units of the wide one), so every
candidate shares its weights. The search is progressive, one step per stage: the supernet
is trained with one path drawn uniformly at random per step (single-path, uniform
sampling) over that stage's choices, the other stages held at the best found so far (at
first: no pairs, the widest MLP); then ``candidates`` (20) random choices of the stage are
scored on the validation split with the shared weights and the best is kept. Step 1
trains ``search_epochs``, steps 2 and 3 go on from the weights before them for
``refine_epochs`` each; the search starts from the start spec's path where the space holds
it. The found model (``spec.sequence``, ``hadamard`` interactions, the FM term,
``spec.mlp``) is retrained from scratch as every spec is. On data without a sequence field
holding a categorical field's values, steps 2 and 3 run alone.

A stand-alone check (not the paper's) trains the found path, the start, the start's
behaviour with the found interactions and MLP, and the runners-up alone (``check`` of
them) and keeps the start unless another leads it on validation significantly (the lower
``check_confidence`` bound of a paired bootstrap of the AUC lead above 0), then the best.

Departures: the residual blocks start as the identity (``autodrs.nn.sequence``), which the
weight sharing needs on tables that start at N(0, 1e-4); interactions are pairs only (the
paper also grows higher orders); a pair's Hadamard product uses tables of its own in the
retrained model (``hadamard`` interactions), the main embeddings in the supernet.

Options: ``search_epochs`` (3; 1 with ``fast``), ``refine_epochs`` (1), ``candidates`` (20
per step; 2 with ``fast``; ``--trials`` caps it), ``check`` (3; 1 with ``fast``: off),
``check_epochs``, ``check_confidence`` (0.95; 0: the best on validation), ``check_resamples``
(200), ``slots`` (3), ``mlp_layers`` (2), ``widths`` (``64,128,256``).
"""

from __future__ import annotations

import json
import random
import time
from dataclasses import dataclass, field, replace
from itertools import combinations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from autodrs.data.dataset import Batch
from autodrs.data.schema import PAD, Schema
from autodrs.models.builder import LinearTerm
from autodrs.nn.embedding import FieldEmbedding
from autodrs.nn.init import EMBEDDING_STD
from autodrs.nn.sequence import SequenceLayer, TargetAttention, resolve_sequence, target_map
from autodrs.search.base import (
    Method,
    SearchContext,
    SearchError,
    StageResult,
    no_result,
    option,
    register_method,
)
from autodrs.spec import SEQUENCE_LAYERS, ArchSpec, Interaction, SequenceSpec, SpecError
from autodrs.train.metrics import auc
from autodrs.train.trainer import TimeLimit, Trainer, TrainHook

OPS = ("identity", *SEQUENCE_LAYERS)
READOUTS = ("mean", "attention")
DEFAULT_WIDTHS = (64, 128, 256)


@dataclass
class Architecture:
    """One path through the supernet."""

    layers: list[str] = field(default_factory=list)  # one op per slot
    readout: str = "mean"
    positional: bool = False
    pairs: list[int] = field(default_factory=list)  # indices of the kept pairs
    fm: bool = False  # the FM term over every field (an interaction choice)
    widths: list[int] = field(default_factory=list)

    def behaviour(self) -> str:
        """The behaviour block as text: ``conv>gru | attention (+pos)``."""
        ops = ">".join(op for op in self.layers if op != "identity") or "none"
        return f"{ops} | {self.readout}" + (" +pos" if self.positional else "")


class AmeirSupernet(nn.Module):
    """Every candidate of the three stages over shared weights; ``arch`` fixes the path
    (None: a uniformly drawn path per training step)."""

    def __init__(self, schema: Schema, spec: ArchSpec, history: str | None,
                 target: str | None, slots: int, pairs: list[tuple[str, str]],
                 widths: list[int], layers: int, seed: int) -> None:
        super().__init__()
        self.spec = spec  # the trainer reads the loss from it
        self.embedding = FieldEmbedding(schema, spec)
        self.linear = LinearTerm(schema, spec) if spec.linear else None
        self.bias = nn.Parameter(torch.zeros(()))
        names = self.embedding.names
        self.history, self.target = history, target
        self.readouts = READOUTS if target is not None else ("mean",)
        self.n_slots = slots if history is not None else 0
        if history is not None:
            table = self.embedding.sequences[history]
            dim = table.embedding_dim
            heads = 2 if dim % 2 == 0 else 1
            self.slot = names.index(history)
            self.position = nn.Embedding(schema.field(history).max_len, dim)
            nn.init.normal_(self.position.weight, std=EMBEDDING_STD)
            self.ops = nn.ModuleList(
                nn.ModuleDict({op: SequenceLayer(op, dim, heads, False)
                               for op in SEQUENCE_LAYERS}) for _ in range(slots))
            if target is not None:
                self.attend = TargetAttention(dim)
                self.column = schema.categorical.index(target)
                self.register_buffer("to_history", target_map(schema, history, target),
                                     persistent=False)
        self.pair_names = pairs
        index = {n: k for k, n in enumerate(names)}
        self.pair_index = [(index[a], index[b]) for a, b in pairs]
        self.pair_dim = spec.embed_dim
        self.widths = widths
        self.n_layers = layers
        # the FM term's identity needs every field (the behaviour vector too) at one dim
        self.fm_choice = len(set(self.embedding.dims)) == 1
        sizes = [sum(self.embedding.dims) + len(pairs) * self.pair_dim,
                 *[max(widths)] * layers]
        self.mlp = nn.ModuleList(nn.Linear(a, b) for a, b in zip(sizes[:-1], sizes[1:],
                                                                  strict=True))
        self.head = nn.Linear(sizes[-1], 1)
        for module in [*self.mlp, self.head]:
            nn.init.xavier_normal_(module.weight)
            nn.init.zeros_(module.bias)
        self.arch: Architecture | None = None  # a fixed path (evaluation)
        self.generator = random.Random(seed)
        # the step under way: which part a training step draws (the rest is ``base``); the
        # trainer validates ``base``
        self.base = Architecture(layers=["identity"] * self.n_slots, readout=self.readouts[-1],
                                 widths=[max(widths)] * layers)
        self.step = "behaviour" if self.n_slots else "interactions"

    def sample(self, step: str, rng: random.Random | None = None) -> Architecture:
        """``base`` with one part drawn uniformly: the ``behaviour`` block (each slot's op,
        the read-out, positions), the ``interactions`` (each pair, and the FM term, kept
        with probability 1/2) or the ``mlp`` (each layer's width)."""
        rng = rng or self.generator
        if step == "behaviour":
            return replace(self.base, layers=[rng.choice(OPS) for _ in range(self.n_slots)],
                           readout=rng.choice(self.readouts), positional=rng.random() < 0.5)
        if step == "interactions":
            return replace(self.base, pairs=[p for p in range(len(self.pair_names))
                                             if rng.random() < 0.5],
                           fm=self.fm_choice and rng.random() < 0.5)
        return replace(self.base, widths=[rng.choice(self.widths)
                                          for _ in range(self.n_layers)])

    def behaviour(self, batch: Batch, arch: Architecture) -> torch.Tensor:
        ids = batch.seq[str(self.history)]
        mask = ids != PAD
        weights = mask.unsqueeze(-1).to(torch.float32)
        x = self.embedding.sequences[str(self.history)](ids)
        if arch.positional:
            x = (x + self.position.weight[:x.shape[1]]) * weights
        for slot, op in enumerate(arch.layers):
            if op != "identity":
                x = self.ops[slot][op](x, mask)
        if arch.readout == "attention":
            table = self.embedding.sequences[str(self.history)]
            target = table(self.to_history[batch.cat[:, self.column]])
            return self.attend(x, mask, target)
        return x.sum(1) / weights.sum(1).clamp(min=1.0)

    def forward(self, batch: Batch) -> torch.Tensor:
        arch = self.arch or (self.sample(self.step) if self.training else self.base)
        embeddings = self.embedding(batch)
        if self.n_slots:
            embeddings[self.slot] = self.behaviour(batch, arch)
        parts = [torch.cat(embeddings, dim=1)]
        if self.pair_names:  # a dropped pair's inputs are zero: the MLP keeps its shape
            kept = set(arch.pairs)
            parts += [embeddings[a] * embeddings[b] if p in kept
                      else embeddings[a].new_zeros(len(batch), self.pair_dim)
                      for p, (a, b) in enumerate(self.pair_index)]
        x = torch.cat(parts, dim=1)
        for layer, width in zip(self.mlp, arch.widths, strict=True):
            x = torch.relu(F.linear(x, layer.weight[:width, :x.shape[1]], layer.bias[:width]))
        logit = F.linear(x, self.head.weight[:, :x.shape[1]], self.head.bias).squeeze(1)
        if arch.fm:  # 0.5 * ((sum e)^2 - sum e^2) over every field, the behaviour vector too
            stacked = torch.stack(embeddings, dim=1)
            logit = logit + 0.5 * (stacked.sum(1).pow(2) - stacked.pow(2).sum(1)).sum(1)
        return logit + (self.linear(batch) if self.linear is not None else self.bias)


class LastWeights(TrainHook):
    """Keeps the weights of the last epoch: the trainer restores those of the epoch its
    probe path validated best, but every path shares them and the search wants them fully
    trained."""

    def __init__(self) -> None:
        self.state: dict[str, torch.Tensor] | None = None

    def on_epoch_end(self, trainer: Trainer, model: nn.Module, epoch: int,
                     metrics: dict[str, float]) -> None:
        self.state = {k: v.detach().clone() for k, v in model.state_dict().items()}

    def restore(self, model: nn.Module) -> None:
        if self.state is not None:
            model.load_state_dict(self.state)


def candidate_pairs(schema: Schema, spec: ArchSpec) -> list[tuple[str, str]]:
    """The non-sequential categorical fields at the common dim, every pair of them."""
    fields = [n for n in spec.used_fields(schema) if schema.field(n).kind == "categorical"
              and spec.dim_of(n) == spec.embed_dim]
    return list(combinations(fields, 2))


def parse_widths(ctx: SearchContext) -> list[int]:
    raw = ctx.options.get("widths", DEFAULT_WIDTHS)
    values = [v for v in raw.split(",") if v.strip()] if isinstance(raw, str) else list(raw)
    try:
        widths = sorted({int(v) for v in values})
    except (TypeError, ValueError) as e:
        raise SearchError(f"option widths must be integers, got {raw!r}") from e
    if not widths or widths[0] < 1:
        raise SearchError(f"option widths must be positive integers, got {raw!r}")
    return widths


@register_method
class AMEIR(Method):
    name = "ameir"
    component = "sequence"
    strategies = ("random",)

    def search(self, ctx: SearchContext) -> StageResult:
        strategy = self.resolve_strategy(ctx)
        t0 = time.monotonic()
        schema = ctx.dataset.schema
        slots = option(ctx, "slots", 3, int)
        layers = option(ctx, "mlp_layers", 2, int)
        epochs = option(ctx, "search_epochs", 1 if ctx.fast else 3, int)
        refine = option(ctx, "refine_epochs", 1, int)
        count = option(ctx, "candidates", 2 if ctx.fast else 20, int)
        check = option(ctx, "check", 1 if ctx.fast else 3, int)
        check_epochs = option(ctx, "check_epochs", ctx.train.epochs, int)
        confidence = option(ctx, "check_confidence", 0.95, float)
        resamples = option(ctx, "check_resamples", 200, int)
        widths = parse_widths(ctx)
        if min(slots, layers, epochs, refine, count, check, check_epochs) < 1:
            raise SearchError("ameir's slots, mlp_layers, search_epochs, refine_epochs, "
                              f"candidates, check and check_epochs must be >= 1, got {slots}, "
                              f"{layers}, {epochs}, {refine}, {count}, {check}, {check_epochs}")
        if not 0 <= confidence < 1 or resamples < 10:
            raise SearchError("ameir's check_confidence must be in [0, 1) and "
                              f"check_resamples >= 10, got {confidence}, {resamples}")
        if ctx.trials is not None:
            count = min(count, max(1, ctx.trials))
        base = ctx.spec.copy(sequence=None, interactions=None, fm=False, inner=False,
                             cross_layers=0, attention_layers=0, dag=None, pair_norm=False,
                             controller=None)
        history, target = self._sequence(schema, base)
        pairs = candidate_pairs(schema, base)
        torch.manual_seed(ctx.seed)
        supernet = AmeirSupernet(schema, base.copy(mlp=[max(widths)] * layers), history,
                                 target, slots, pairs, widths, layers, ctx.seed)
        # the first steps hold the FM term as the start spec has it, and the search starts
        # from the start's path where the space holds it (so step 1 scores its behaviour)
        supernet.base.fm = bool(ctx.spec.fm) and supernet.fm_choice
        start = self._start(ctx.spec, supernet, widths, layers)
        if start is not None:
            supernet.base = replace(start, layers=list(start.layers), widths=list(start.widths))
        config = replace(ctx.train, seed=ctx.seed, epochs=epochs, patience=epochs,
                         checkpoint=None)
        evaluator = Trainer(replace(config, progress=False))
        rng = random.Random(ctx.seed + 1)
        scores: dict[str, float] = {}
        steps: dict[str, int] = {}
        runners_up: list[tuple[str, Architecture]] = []  # each step's second best
        trained = 0
        for step in ("behaviour", "interactions", "mlp"):
            if step == "behaviour" and not supernet.n_slots:
                continue
            if step == "interactions" and not pairs:
                continue
            # train the supernet (inherited from the step before) drawing this step's part
            supernet.step, supernet.arch = step, None
            last = LastWeights()
            fit = Trainer(replace(config, epochs=epochs if not trained else refine),
                          [last, TimeLimit(ctx.remaining)]).fit(
                supernet, ctx.dataset.train, ctx.dataset.valid)
            last.restore(supernet)
            trained += len(fit.history)
            if not trained:
                return no_result(self.name, strategy, ctx.spec, "the budget ran out while "
                                 "the supernet trained", time.monotonic() - t0)
            supernet.eval()
            # score this step's candidates with the shared weights; keep the best
            drawn = [supernet.base] + [supernet.sample(step, rng) for _ in range(count - 1)]
            seen: dict[str, Architecture] = {}
            for arch in drawn:
                key = _describe(step, arch, pairs)
                if key in seen:
                    continue
                if seen and ctx.out_of_budget():
                    break
                seen[key] = arch
                supernet.arch = arch
                scores[key] = float(evaluator.evaluate(supernet, ctx.dataset.valid)["auc"])
                supernet.arch = None
            order = sorted(seen, key=lambda k: -scores[k])
            supernet.base = seen[order[0]]
            if len(order) > 1:
                runners_up.append((step, seen[order[1]]))
            steps[step] = len(seen)
        found = supernet.base
        spec = self._derive(ctx.spec, found, history, target, pairs, supernet.n_slots,
                            schema)
        spec.validate(schema)
        # the stand-alone check: the shared-weight ranking favours candidates that learn
        # fast; a few full architectures are trained alone, the best on validation is kept
        pool = [("found: " + _full(found, pairs), found, spec)]
        if start is not None:
            pool.append(("start: " + _full(start, pairs), start, ctx.spec.copy()))
            # the start's behaviour block with the interactions and MLP found after it
            mixed = _compose(found, start, "behaviour")
            pool.append(("start's behaviour: " + _full(mixed, pairs), mixed,
                         self._derive(ctx.spec, mixed, history, target, pairs,
                                      supernet.n_slots, schema)))
        for step, arch in runners_up:
            composed = _compose(found, arch, step)
            pool.append((f"{step} runner-up: " + _full(composed, pairs), composed,
                         self._derive(ctx.spec, composed, history, target, pairs,
                                      supernet.n_slots, schema)))
        checked: dict[str, float] = {}
        bounds: dict[str, float] = {}
        best = found
        if check > 1:
            from autodrs.experiment import fit_spec  # the experiment module imports methods

            fit_config = replace(ctx.train, seed=ctx.seed, epochs=check_epochs,
                                 checkpoint=None, progress=False)
            keys: set[str] = set()
            fits: list[tuple[str, Architecture, ArchSpec, np.ndarray]] = []
            for name, arch, candidate in pool:
                if len(checked) >= check or (checked and ctx.out_of_budget()):
                    break
                key = _spec_key(candidate)
                if key in keys:
                    continue
                keys.add(key)
                outcome = fit_spec(ctx.dataset, candidate, fit_config)
                checked[name] = float(outcome.fit.valid["auc"])
                fits.append((name, arch, candidate,
                             Trainer(fit_config).predict(outcome.model, ctx.dataset.valid)))
            labels = ctx.dataset.valid.label.numpy()
            starts = [f for f in fits if f[0].startswith("start: ")]
            if starts and confidence > 0:
                bounds = {name: round(lead_bound(labels, starts[0][3], scores_, resamples,
                                                 confidence, ctx.seed), 6)
                          for name, _, _, scores_ in fits if name != starts[0][0]}
            kept = keep(checked, bounds, starts[0][0] if starts and confidence > 0 else None)
            _, best, spec, _ = next(f for f in fits if f[0] == kept)
        seconds = time.monotonic() - t0
        spec.record(self.name, strategy, ["sequence", "interactions", "mlp", "fm"], seconds)
        ranking = sorted(scores, key=lambda k: -scores[k])
        return StageResult(
            method=self.name, strategy=strategy, spec=spec, ranking=ranking,
            scores={k: round(v, 6) for k, v in scores.items()}, seconds=seconds,
            extra={"architecture": {
                "behaviour": best.behaviour() if supernet.n_slots else None,
                "interactions": [list(pairs[p]) for p in best.pairs], "fm": best.fm,
                "mlp": best.widths},
                "candidates": steps, "supernet_epochs": trained,
                "check": {k: round(v, 6) for k, v in checked.items()},
                "check_bounds": bounds,
                "check_epochs": check_epochs if checked else 0})

    @staticmethod
    def _sequence(schema: Schema, spec: ArchSpec) -> tuple[str | None, str | None]:
        """The sequence field and its target, or (None, None) when the data has none."""
        try:
            history, target = resolve_sequence(
                schema, spec.copy(sequence=SequenceSpec(readout="mean")))
        except SpecError:
            return None, None
        return history, target

    @staticmethod
    def _derive(spec: ArchSpec, arch: Architecture, history: str | None, target: str | None,
                pairs: list[tuple[str, str]], slots: int, schema: Schema) -> ArchSpec:
        sequence = None  # the history mean-pooled with no blocks: the flat model's
        plain = not any(op != "identity" for op in arch.layers) and arch.readout == "mean"
        if slots and not (plain and not arch.positional):
            sequence = SequenceSpec(
                history=history, target=target,
                layers=[op for op in arch.layers if op != "identity"], readout=arch.readout,
                positional=arch.positional, heads=2 if spec.dim_of(str(history)) % 2 == 0
                else 1)
        interactions = None  # the FM term, if on, over every pair of fields
        if arch.pairs:
            interactions = [Interaction(list(pairs[p]), function="hadamard")
                            for p in arch.pairs]
            if arch.fm:  # a listed pair is modelled by the FM; list them all
                fields = spec.used_fields(schema)
                interactions += [Interaction(list(f)) for f in combinations(fields, 2)]
        return spec.copy(
            sequence=sequence, fm=arch.fm, inner=False, cross_layers=0, attention_layers=0,
            dag=None, pair_norm=False, controller=None, mlp=list(arch.widths),
            interactions=interactions)

    @staticmethod
    def _start(spec: ArchSpec, supernet: AmeirSupernet, widths: list[int],
               layers: int) -> Architecture | None:
        """The spec the search starts from as a path of the space (the history mean-pooled,
        no blocks, no pairs, its FM term and MLP), or None when the space cannot hold it."""
        if (spec.sequence is not None or spec.interactions or spec.inner or spec.cross_layers
                or spec.attention_layers or spec.dag is not None or spec.controller is not None
                or (spec.fm and not supernet.fm_choice) or len(spec.mlp) != layers
                or any(w not in widths for w in spec.mlp)):
            return None
        return Architecture(layers=["identity"] * supernet.n_slots, readout="mean",
                            fm=bool(spec.fm), widths=list(spec.mlp))


def _describe(step: str, arch: Architecture, pairs: list[tuple[str, str]]) -> str:
    """A candidate of ``step`` as the text its score is listed under."""
    if step == "behaviour":
        return f"behaviour: {arch.behaviour()}"
    if step == "interactions":
        names = ", ".join("*".join(pairs[p]) for p in arch.pairs) or "none"
        return f"interactions: {names}" + (" +FM" if arch.fm else "")
    return f"mlp: {arch.widths}"


def _full(arch: Architecture, pairs: list[tuple[str, str]]) -> str:
    """A whole path, shortly: ``conv | attention; 12 pairs +FM; mlp [128, 64]``."""
    return (f"{arch.behaviour()}; {len(arch.pairs)} pairs" + (" +FM" if arch.fm else "")
            + f"; mlp {arch.widths}")


def _compose(found: Architecture, other: Architecture, step: str) -> Architecture:
    """``found`` with ``step``'s part taken from ``other``."""
    if step == "behaviour":
        return replace(found, layers=list(other.layers), readout=other.readout,
                       positional=other.positional)
    if step == "interactions":
        return replace(found, pairs=list(other.pairs), fm=other.fm)
    return replace(found, widths=list(other.widths))


def _spec_key(spec: ArchSpec) -> str:
    """What tells two candidate specs apart (not their provenance)."""
    data = spec.to_dict()
    data.pop("provenance", None)
    return json.dumps(data, sort_keys=True, default=str)



def lead_bound(labels: np.ndarray, base: np.ndarray, scores: np.ndarray, resamples: int,
               confidence: float, seed: int) -> float:
    """The lower ``confidence`` bound (one-sided) of the validation AUC lead of ``scores``
    over ``base``, by a paired bootstrap over the rows: each resample draws the rows with
    replacement and scores both on the same rows, so what the two share cancels."""
    rng = np.random.default_rng(seed)
    leads = np.empty(resamples)
    for r in range(resamples):
        rows = rng.integers(0, len(labels), len(labels))
        y = labels[rows]
        leads[r] = auc(y, scores[rows]) - auc(y, base[rows])
    return float(np.quantile(leads, 1.0 - confidence))


def keep(checked: dict[str, float], bounds: dict[str, float], start: str | None) -> str:
    """The checked architecture to keep: the best on validation AUC, except that with the
    ``start`` among them, another is kept only when its lead over the start is significant
    (its lower bound in ``bounds`` above 0); otherwise the start."""
    eligible = [k for k in checked if start is None or k == start or bounds.get(k, 0.0) > 0]
    return max(eligible, key=lambda k: checked[k])
