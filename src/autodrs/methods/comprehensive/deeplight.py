"""DeepLight (Deng, Pan, Zhou, Kong, Flores, Lin; WSDM 2021, "Deep Lightweight Feature
Interactions for Accelerating CTR Predictions in Ad Serving"): the MLP, the field-pair
weight matrix R and the embeddings of a DeepFwFM pruned together to a target sparsity
while it trains.

The input spec becomes a DeepFwFM: an FM term over every pair of its embedded fields, each
pair with a trainable weight ``R_ij`` (kept pairs keep theirs), next to its first-order term
and MLP. After ``warm`` (1) dense epochs, every ``every`` (10) steps the target of the
moment is ``S_t = S (1 - 0.01^(t / T))`` over the ``T`` remaining steps (DeepLight's damping
``S (1 - 0.99^(t / 100))`` reaches 0.9 S after 23,000 steps; here the same curve is
stretched over the run, so short searches reach their target), and at each event:

- **MLP**: in each hidden layer, the fraction ``S_t`` of neurons with the smallest norm of
  incoming weights is zeroed (structured, so the derived ``spec.mlp`` is narrower and a
  dense kernel gets faster; DeepLight zeroes single weights, which speeds up only sparse
  kernels);
- **R**: the pairs with the smallest ``|R_ij|``, fraction ``S_t * emb_corr`` (1.0), are zeroed;
- **embeddings**: one global magnitude threshold over the entries of every plain
  categorical field's table zeroes the fraction ``S_t * emb_r`` (0.444) of them.

As in DeepLight there is no persistent mask: pruned weights may regrow and are zeroed again
at the next event; the last epoch's weights are pruned once more at exactly ``S``. The
derived spec holds the surviving MLP widths, the kept pairs with their learned ``R_ij``
as pair weights, and the kept embedding entries as per-value masks (``spec.pruning``,
stored sparse).

One run per target of ``sparsities`` (0.5, 0.8, 0.9), all from the same warm weights, and
one dense run give validation AUC against sparsity; each point also carries the forward
latency of its derived model per batch of ``latency_rows`` (1,024) validation rows against
the dense DeepFwFM's, measured in turn in the same loop (fastest of 30), and of the derived
model with dense tables (``structured_latency_ms``: the narrower MLP and fewer pairs
alone; a sparse table saves memory but its lookup costs more than a dense one's). The chosen target is the largest
whose validation AUC is within ``tolerance`` (0.002) of the dense run's (option
``sparsity`` fixes it instead); every point carries its derived spec, so another level can
be taken from ``result.json``.

Options: ``search_epochs`` (the run's epochs, at least ``warm`` + 1), ``warm`` (1),
``sparsities`` (``0.5,0.8,0.9``), ``sparsity`` (unset), ``emb_r`` (0.444), ``emb_corr``
(1.0), ``every`` (10), ``tolerance`` (0.002), ``latency_rows`` (1024).
"""

from __future__ import annotations

import copy
import time
from dataclasses import replace
from itertools import combinations
from typing import Any

import torch

from autodrs.data.schema import Schema
from autodrs.methods.comprehensive.common import (
    KeepLast,
    choose_level,
    hidden_layers,
    latency,
    live_widths,
    magnitude_threshold,
    prune_neurons,
)
from autodrs.models.builder import CTRModel, build_model, count_bytes, count_parameters
from autodrs.nn.pruned import encode_mask
from autodrs.search.base import (
    Method,
    SearchContext,
    SearchError,
    StageResult,
    option,
    register_method,
)
from autodrs.spec import ArchSpec, Interaction, cross_name
from autodrs.train.trainer import TimeLimit, Trainer, TrainHook, shuffled_batch_count


def is_pair(i: Interaction) -> bool:
    """A plain FM pair (the ones ``R`` weighs)."""
    return i.function == "product" and len(i.fields) == 2 and i.users is None


def fwfm_spec(spec: ArchSpec, schema: Schema) -> ArchSpec:
    """``spec`` as a DeepFwFM: an FM term whose pairs (every pair of its embedded fields,
    or its own kept pairs) each carry a trainable weight."""
    out = spec.copy(fm=True)
    if out.interactions is None:
        names = spec.used_fields(schema) + [cross_name(c) for c in spec.crosses]
        out.interactions = [Interaction([a, b], weight=1.0) for a, b in combinations(names, 2)]
    else:
        out.interactions = [replace(i, weight=1.0) if is_pair(i) and i.weight is None else i
                            for i in out.interactions]
    if not any(is_pair(i) for i in out.interactions):
        raise SearchError("DeepLight needs a spec with two or more embedded fields (its "
                          "field-pair matrix)")
    return out.validate(schema)


def embedding_rows(model: CTRModel, spec: ArchSpec, schema: Schema
                   ) -> list[tuple[str, torch.Tensor]]:
    """(field, its rows of a shared table) for every plain categorical field: the tables
    DeepLight prunes (crosses, vocabulary-limited and already pruned fields are left)."""
    emb = model.embedding
    out = []
    for group, slots in enumerate(emb._group_slots):
        weight = emb.tables[group].weight
        offsets = getattr(emb, f"offsets_{emb.group_dims[group]}").tolist()
        for (name, src), start in zip(slots, offsets, strict=True):
            if src < 0 or name in spec.vocab_limits:
                continue
            out.append((name, weight[start:start + schema.field(name).vocab_size]))
    return out


class DeepLightPruning(TrainHook):
    """DeepLight's pruning events (see the module); ``prune(s)`` applies one at sparsity s."""

    def __init__(self, model: CTRModel, spec: ArchSpec, schema: Schema, target: float,
                 emb_r: float, emb_corr: float, every: int, ramp: int) -> None:
        self.model = model
        self.target, self.emb_r, self.emb_corr = target, emb_r, emb_corr
        self.every, self.ramp = every, max(1, ramp)
        self.rows = embedding_rows(model, spec, schema)
        self.t = 0

    @torch.no_grad()
    def prune(self, s: float) -> None:
        prune_neurons(self.model, s)
        r = self.model.fm.weight if self.model.fm is not None else None
        if r is not None and s * self.emb_corr > 0:
            r[r.abs() <= magnitude_threshold(r, s * self.emb_corr)] = 0.0
        if self.rows and s * self.emb_r > 0:
            values = torch.cat([w.reshape(-1) for _, w in self.rows])
            threshold = magnitude_threshold(values, s * self.emb_r)
            for _, w in self.rows:
                w[w.abs() <= threshold] = 0.0

    def on_step(self, trainer: Trainer, model: Any, step: int, batch: Any,
                loss: torch.Tensor) -> None:
        self.t += 1
        if self.t % self.every == 0:
            self.prune(self.target * (1 - 0.01 ** min(1.0, self.t / self.ramp)))


def derived_spec(model: CTRModel, spec: ArchSpec, schema: Schema,
                 rows: list[tuple[str, torch.Tensor]]) -> ArchSpec:
    """The spec of the pruned model: surviving MLP widths, kept pairs with their ``R``, kept
    embedding entries as per-value masks."""
    out = spec.copy()
    if out.mlp:
        out.mlp = live_widths(model)
    pairs = [i for i in spec.interactions or [] if is_pair(i)]
    others = [i for i in spec.interactions or [] if not is_pair(i)]
    weights = model.fm.weight.detach().tolist() if model.fm is not None else []
    kept = [replace(i, weight=float(w)) for i, w in zip(pairs, weights, strict=True) if w != 0]
    if kept:
        out.interactions = kept + others
    else:
        out.fm = False
        out.interactions = others or None
    pruning = dict(out.pruning)
    for name, w in rows:
        mask = (w.detach() != 0)
        if not bool(mask.all()):
            pruning[name] = encode_mask(mask)
    out.pruning = pruning
    return out.validate(schema)


def parse_levels(ctx: SearchContext) -> list[float]:
    fixed = ctx.options.get("sparsity")
    raw = fixed if fixed is not None else ctx.options.get("sparsities", "0.5,0.8,0.9")
    items = raw.split(",") if isinstance(raw, str) else (raw if isinstance(raw, list | tuple)
                                                          else [raw])
    try:
        levels = sorted({float(x) for x in items})
    except (TypeError, ValueError) as e:
        raise SearchError(f"option sparsities/sparsity: {e}") from e
    if not levels or not all(0 < s < 1 for s in levels):
        raise SearchError(f"sparsities must lie in (0, 1), got {raw!r}")
    return levels


@register_method
class DeepLight(Method):
    name = "deeplight"
    component = "comprehensive"
    strategies = ("gradient",)
    decides = ("fm", "interactions", "mlp", "pruning")

    def search(self, ctx: SearchContext) -> StageResult:
        strategy = self.resolve_strategy(ctx)
        t0 = time.perf_counter()
        schema, ds = ctx.dataset.schema, ctx.dataset
        levels = parse_levels(ctx)
        warm = option(ctx, "warm", 1, int)
        epochs = option(ctx, "search_epochs", max(ctx.train.epochs, warm + 1), int)
        if ctx.fast:  # one pruned run, one epoch after the warm ones
            levels, epochs = levels[-1:], warm + 1
        emb_r = option(ctx, "emb_r", 0.444)
        emb_corr = option(ctx, "emb_corr", 1.0)
        every = option(ctx, "every", 10, int)
        tolerance = option(ctx, "tolerance", 0.002)
        rows = option(ctx, "latency_rows", 1024, int)
        if warm < 0 or epochs <= warm or every < 1 or rows < 1:
            raise SearchError(f"DeepLight needs warm >= 0, search_epochs > warm, every >= 1 "
                              f"and latency_rows >= 1; got {warm}, {epochs}, {every}, {rows}")
        if not 0 <= emb_r <= 1 or not 0 <= emb_corr <= 1 or tolerance < 0:
            raise SearchError(f"emb_r and emb_corr must lie in [0, 1] and tolerance >= 0; got "
                              f"{emb_r}, {emb_corr}, {tolerance}")
        dense_spec = fwfm_spec(ctx.spec, schema)
        config = replace(ctx.train, seed=ctx.seed)
        torch.manual_seed(ctx.seed)
        dense = build_model(schema, dense_spec)
        try:
            hidden_layers(dense)
        except ValueError as e:  # a deep head whose MLP cannot be pruned alone
            raise SearchError(f"DeepLight: {e}") from e
        hooks = [TimeLimit(ctx.remaining)]
        if warm:
            keep = KeepLast()
            Trainer(replace(config, epochs=warm), [keep, *hooks]).fit(dense, ds.train,
                                                                       ds.valid)
            assert keep.state is not None
            dense.load_state_dict(keep.state)
        warm_state = copy.deepcopy(dense.state_dict())
        rest = replace(config, epochs=epochs - warm, patience=epochs)
        ramp = shuffled_batch_count(len(ds.train), config.batch_size) * (epochs - warm)
        fit = Trainer(rest, hooks).fit(dense, ds.train, ds.valid)
        batch = ds.valid.batch(slice(0, min(rows, len(ds.valid))))
        points: list[dict[str, Any]] = [{
            "sparsity": 0.0, "valid_auc": fit.valid["auc"],
            "valid_logloss": fit.valid["logloss"], "mlp": list(dense_spec.mlp),
            "pairs": sum(is_pair(i) for i in dense_spec.interactions or []),
            "embedding_kept": 1.0, "params": count_parameters(dense)["total"],
            "embedding_bytes": count_bytes(dense)["embedding"]}]
        specs: dict[float, ArchSpec] = {}
        for s in levels:
            if ctx.out_of_budget():
                break
            torch.manual_seed(ctx.seed)
            model = build_model(schema, dense_spec)
            model.load_state_dict(warm_state)
            pruning = DeepLightPruning(model, dense_spec, schema, s, emb_r, emb_corr, every,
                                       ramp)
            keep = KeepLast()
            Trainer(rest, [pruning, keep, *hooks]).fit(model, ds.train, ds.valid)
            assert keep.state is not None
            model.load_state_dict(keep.state)
            pruning.prune(s)
            metrics = Trainer(config).evaluate(model, ds.valid)
            spec = derived_spec(model, dense_spec, schema, pruning.rows)
            specs[s] = spec
            torch.manual_seed(ctx.seed)
            built = build_model(schema, spec)
            kept = [float((w != 0).float().mean()) for _, w in pruning.rows]
            entries = sum(w.numel() for _, w in pruning.rows)
            overall = (sum(int((w != 0).sum()) for _, w in pruning.rows) / entries
                       if entries else 1.0)
            # the structured part alone (dense tables): sparse tables trade lookup time for
            # memory, so the two effects are reported apart
            torch.manual_seed(ctx.seed)
            structured = build_model(schema, spec.copy(pruning=dict(dense_spec.pruning)))
            times = latency({"dense": build_model(schema, dense_spec), "pruned": built,
                             "structured": structured}, batch)
            points.append({
                "sparsity": s, "valid_auc": metrics["auc"], "valid_logloss": metrics["logloss"],
                "mlp": list(spec.mlp),
                "pairs": sum(is_pair(i) for i in spec.interactions or []),
                "embedding_kept": round(overall, 4),
                "embedding_kept_by_field": {n: round(k, 4) for (n, _), k in
                                            zip(pruning.rows, kept, strict=True)},
                "params": count_parameters(built)["total"],
                "embedding_bytes": count_bytes(built)["embedding"],
                "latency_ms": times["pruned"], "dense_latency_ms": times["dense"],
                "structured_latency_ms": times["structured"], "spec": spec.to_dict(),
                "speedup": round(times["dense"] / max(times["pruned"], 1e-9), 3),
                "structured_speedup": round(times["dense"] / max(times["structured"], 1e-9),
                                            3)})
        if not specs:
            raise SearchError("DeepLight's budget ran out before any pruned run")
        chosen = choose_level(points, tolerance, ctx.options.get("sparsity") is not None)
        spec = specs[chosen] if chosen in specs else dense_spec
        seconds = time.perf_counter() - t0
        spec = spec.copy()
        spec.record(self.name, strategy, list(self.decides), seconds, sparsity=chosen)
        pairs = [i for i in spec.interactions or [] if is_pair(i)]
        pairs.sort(key=lambda i: -abs(float(i.weight or 0.0)))
        return StageResult(
            method=self.name, strategy=strategy, spec=spec,
            ranking=[list(i.fields) for i in pairs],
            scores={"*".join(i.fields): abs(float(i.weight or 0.0)) for i in pairs},
            bytes=count_bytes(build_model(schema, spec))["embedding"], seconds=seconds,
            extra={"sparsity_curve": points, "chosen_sparsity": chosen,
                   "latency_rows": len(batch), "tolerance": tolerance})
