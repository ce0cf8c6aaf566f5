"""PEP, Plug-in Embedding Pruning (Liu, Gao, Chen, Jin, Li; ICLR 2021, "Learnable Embedding
Sizes for Recommender Systems"): learned soft thresholds prune embedding entries.

Every searched field's table V is re-parametrised as ``V_hat = sign(V) * ReLU(|V| - g(s))``
with ``g = sigmoid`` and a learnable threshold s, one per entry (``feature_dim``, the
default) or per value, field, dim, field x dim or one global (``threshold``). The model
looks up V_hat; V, s and every other weight take steps of one Adam optimiser with weight
decay (1e-5, on s too: the decay is what drives the thresholds up from s = -15, against the
loss, which holds up the entries that matter). On small data s moves ``threshold_scale``
times faster (stored divided by it; its decay still acts on s itself). Whenever the non-zero
entries of V_hat fall to a target sparsity level, the mask ``|sign(V_hat)|`` is kept. The chosen level's masks go into ``spec.pruning``; building the spec under the same
seed starts from the step-0 weights times the mask (lottery ticket, ``nn.pruned``), which
the retrain then trains without thresholds (g = 0), stored as kept entries only.

When the spec has a first-order term, its per-value weights (a table of width 1 per field)
are soft-thresholded the same way, with thresholds of their own, and their masks go into
``spec.linear_pruning`` (stored as kept values, ``nn.pruned.PrunedColumn``). The sparsity
levels count the entries of every thresholded table, so a level is the share of the
searched fields' embedding parameters removed.

Under ``TrainConfig.lazy_tables`` (a departure: the official code steps everything with one
dense Adam) V and per-value s take lazy Adam steps, rows only in the batches holding their
value, and the decay on per-value s acts on the batch's rows only. Use ``field_dim``
thresholds then: per-value ones rise only when their value is seen, so rare values would
keep their entries (``docs/embedding.md``).
"""

from __future__ import annotations

import time
from dataclasses import replace
from typing import Any

import torch
from torch import nn

from autodrs.data.schema import Schema
from autodrs.methods.embedding.common import (
    EmbeddingSupernet,
    dims_result,
    flag,
    option,
    search_epochs,
    searched_fields,
)
from autodrs.models.builder import LINEAR_TAG
from autodrs.nn.mixed import SearchedEmbedding
from autodrs.nn.pruned import encode_mask, initial_table
from autodrs.search.base import Method, SearchContext, SearchError, StageResult, register_method
from autodrs.search.estimation import BudgetExhausted, Deadline
from autodrs.spec import ArchSpec
from autodrs.train.trainer import Trainer, TrainHook

GRANULARITIES = ("feature_dim", "feature", "field_dim", "field", "dimension", "global")
DEFAULT_LEVELS = (0.5, 0.8, 0.9, 0.95)


class PEPEmbedding(SearchedEmbedding):
    """Soft-thresholded tables; ``threshold_scale`` multiplies s's Adam steps (s is stored
    divided by it), so short searches on small data still reach the target sparsity."""

    def __init__(self, schema: Schema, spec: ArchSpec, fields: list[str], width: int,
                 seed: int, granularity: str, init: float, scale: float,
                 first_order: bool = False) -> None:
        # ``first_order``: the model's first-order weights (width 1, the other fields' weights
        # zero-initialised as in ``LinearTerm``), drawn as ``LinearTerm`` draws its pruned ones
        super().__init__(schema, spec, fields, width, first_order)
        self.granularity = granularity
        self.scale = scale
        tag = LINEAR_TAG if first_order else ""
        self.v = nn.ParameterList(
            nn.Parameter(initial_table(seed, f + tag, schema.field(f).vocab_size, width))
            for f in fields)
        start = init / scale
        shared = {"global": (1,), "dimension": (width,)}.get(granularity)
        self.s_shared = nn.Parameter(torch.full(shared, start)) if shared else None
        self.s = nn.ParameterList()
        if shared is None:
            for f in fields:
                rows = schema.field(f).vocab_size
                shape = {"field": (1,), "field_dim": (width,), "feature": (rows, 1),
                         "feature_dim": (rows, width)}[granularity]
                self.s.append(nn.Parameter(torch.full(shape, start)))

        # ids of the last training forward per field (a lazy optimiser's decay on s)
        self.seen: dict[int, torch.Tensor] = {}

    @property
    def per_row(self) -> bool:
        return self.granularity in ("feature", "feature_dim")

    def thresholds(self) -> list[nn.Parameter]:
        return [self.s_shared] if self.s_shared is not None else list(self.s)

    def lookup_parameters(self) -> list[nn.Parameter]:
        """The tables looked up by value (``train.lazy``): V, and s when it has a row per
        value."""
        return list(self.v) + (list(self.s) if self.per_row else [])

    def threshold(self, index: int, ids: torch.Tensor | None = None) -> torch.Tensor:
        s = self.s_shared if self.s_shared is not None else self.s[index]
        if self.granularity in ("feature", "feature_dim") and ids is not None:
            s = s[ids]
        return torch.sigmoid(s * self.scale)

    def embed_field(self, index: int, ids: torch.Tensor) -> torch.Tensor:
        # thresholding only the looked-up rows gives the same gradients as the whole table
        if self.training:
            self.seen[index] = ids
        v = self.v[index][ids]
        return torch.sign(v) * torch.relu(v.abs() - self.threshold(index, ids))

    @torch.no_grad()
    def masks(self) -> list[torch.Tensor]:
        return [v.abs() > self.threshold(i) for i, v in enumerate(self.v)]


class PEPSupernet(EmbeddingSupernet):
    """The spec's model with its searched tables soft-thresholded; with ``first_order``, its
    first-order weights of the same fields too (each table with thresholds of its own)."""

    def __init__(self, schema: Schema, spec: ArchSpec, fields: list[str], width: int,
                 seed: int, granularity: str, init: float, scale: float,
                 threshold_decay: float, first_order: bool = False,
                 lazy: bool = False) -> None:
        super().__init__(schema, spec, PEPEmbedding(schema, spec, fields, width, seed,
                                                    granularity, init, scale))
        self.threshold_decay = threshold_decay
        self.lazy = lazy
        self.first_order: PEPEmbedding | None = None
        if first_order:
            self.first_order = PEPEmbedding(schema, spec, fields, 1, seed, granularity, init,
                                            scale, first_order=True)
            self.model.linear.weights = self.first_order

    def pruned_embeddings(self) -> list[PEPEmbedding]:
        return [self.embedding] + ([self.first_order] if self.first_order is not None else [])

    def regularization(self) -> torch.Tensor:
        """PEP's weight decay on the thresholds s themselves (not on their stored, scaled
        form), so a faster threshold step does not weaken the pull that raises them. Under
        a lazy optimiser (``lazy``) per-value thresholds decay only on the rows of the
        batch's values, as its weights do."""
        total: torch.Tensor | float = 0.0
        for emb in self.pruned_embeddings():
            for i, s in enumerate(emb.thresholds()):
                if self.lazy and emb.per_row and i in emb.seen:
                    s = s[torch.unique(emb.seen[i])]
                total = total + (s * emb.scale).pow(2).sum()
        return 0.5 * self.threshold_decay * total

    def arch_parameters(self) -> list[nn.Parameter]:
        return [s for emb in self.pruned_embeddings() for s in emb.thresholds()]

    def weight_parameters(self) -> list[nn.Parameter]:
        # PEP trains thresholds and weights with one optimiser
        return list(self.parameters())

    def derive(self) -> dict[str, Any]:
        return {f: encode_mask(m) for f, m in zip(self.embedding.searched,
                                                 self.embedding.masks(), strict=True)}


class SparsitySnapshots(TrainHook):
    """Keeps the masks (of every table of ``embeddings``, in order) when the kept share of
    their entries first falls to each target level, and ends the search once the last level
    is reached."""

    def __init__(self, embeddings: list[PEPEmbedding], levels: list[float],
                 every: int = 5) -> None:
        self.embeddings = embeddings
        self.levels = sorted(levels)
        self.every = every
        self.total = sum(v.numel() for emb in embeddings for v in emb.v)
        self.snapshots: dict[float, dict[str, Any]] = {}
        self.curve: list[tuple[int, float]] = []
        self.last: dict[str, Any] | None = None

    def sparsity(self) -> tuple[float, list[torch.Tensor]]:
        masks = [m for emb in self.embeddings for m in emb.masks()]
        return 1.0 - sum(int(m.sum()) for m in masks) / self.total, masks

    def on_step(self, trainer: Trainer, model: nn.Module, step: int, batch: Any,
                loss: torch.Tensor) -> None:
        if step % self.every:
            return
        sparsity, masks = self.sparsity()
        self.curve.append((step, round(sparsity, 4)))
        # the Trainer restores its best epoch's weights at the end; keep what the search reached
        self.last = {"step": step, "sparsity": sparsity, "masks": [m.cpu() for m in masks]}
        for level in self.levels:
            if level not in self.snapshots and sparsity >= level:
                self.snapshots[level] = {"step": step, "sparsity": sparsity,
                                         "masks": [m.cpu() for m in masks]}
        if len(self.snapshots) == len(self.levels):
            trainer.config.max_steps = step  # every level reached: the search is done


def parse_levels(ctx: SearchContext) -> list[float]:
    raw = ctx.options.get("levels", DEFAULT_LEVELS)
    if isinstance(raw, str):
        raw = [v for v in raw.split(",") if v.strip()]
    try:
        levels = sorted({float(v) for v in raw})
    except (TypeError, ValueError) as e:
        raise SearchError(f"PEP levels must be sparsities in (0, 1), got {raw!r}") from e
    if not levels or levels[0] <= 0 or levels[-1] >= 1:
        raise SearchError(f"PEP levels must be sparsities in (0, 1), got {raw!r}")
    return levels


@register_method
class PEP(Method):
    """``--methods pep``: options ``sparsity`` (the level whose masks are returned, 0.9),
    ``levels`` (snapshot levels, 0.5,0.8,0.9,0.95; ``sparsity`` is added), ``threshold``
    (granularity, ``feature_dim``), ``threshold_init`` (-15), ``threshold_scale`` (15),
    ``weight_decay`` (1e-5, every weight), ``threshold_decay`` (the decay on s, which sets
    how sparse the search ends; default ``weight_decay``), ``first_order`` (also threshold
    the first-order weights of the searched fields, counted in the sparsity; default: when
    the spec has a first-order term) and ``search_epochs`` (the search's cap, default 3x the
    training epochs)."""

    name = "pep"
    component = "embedding"
    strategies = ("gradient",)
    level_specs: dict[float, ArchSpec]

    def search(self, ctx: SearchContext) -> StageResult:
        strategy = self.resolve_strategy(ctx)
        t0 = time.perf_counter()
        schema, spec = ctx.dataset.schema, ctx.spec
        fields = searched_fields(ctx)
        granularity = str(ctx.options.get("threshold", "feature_dim"))
        if granularity not in GRANULARITIES:
            raise SearchError(f"unknown PEP threshold granularity {granularity!r}; choose "
                              f"from {', '.join(GRANULARITIES)}")
        target = option(ctx, "sparsity", 0.9)
        if not 0.0 < target < 1.0:
            raise SearchError(f"sparsity must be in (0, 1), got {target}")
        levels = sorted({*parse_levels(ctx), target})
        scale = option(ctx, "threshold_scale", 15.0)
        if scale <= 0:
            raise SearchError(f"threshold_scale must be > 0, got {scale}")
        widths = {spec.dim_of(f) for f in fields}
        if len(widths) != 1:
            raise SearchError("PEP prunes tables of one width; the spec's fields have dims "
                              f"{sorted(widths)}")
        width = widths.pop()
        # the seed of the retrain's build (fit_spec seeds with the training seed), so the
        # pruned model starts from these step-0 weights
        seed = ctx.train.seed
        torch.manual_seed(seed)
        decay = option(ctx, "weight_decay", 1e-5)
        first_order = flag(ctx, "first_order", spec.linear)
        if first_order and not spec.linear:
            raise SearchError("first_order prunes the first-order weights; the spec has no "
                              "first-order term (linear is false)")
        supernet = PEPSupernet(schema, spec, fields, width, seed, granularity,
                               option(ctx, "threshold_init", -15.0), scale,
                               option(ctx, "threshold_decay", decay), first_order,
                               lazy=ctx.train.lazy_tables)
        epochs = search_epochs(ctx, 3 * ctx.train.epochs)
        config = replace(ctx.train, epochs=epochs, patience=epochs + 1, progress=False,
                         checkpoint=None, max_steps=None, weight_decay=decay)
        snapshots = SparsitySnapshots(supernet.pruned_embeddings(), levels)
        stopped = False
        try:
            Trainer(config, [snapshots, Deadline(ctx)]).fit(
                supernet, ctx.dataset.train, ctx.dataset.valid,
                parameters=supernet.weight_parameters())
        except BudgetExhausted:
            stopped = True

        def pruned(masks: list[torch.Tensor]) -> ArchSpec:
            # the searched tables' masks, then (with first_order) the first-order ones
            out = spec.copy(pruning={**spec.pruning, **{
                f: encode_mask(m) for f, m in zip(fields, masks[:len(fields)], strict=True)}})
            if first_order:
                out.linear_pruning = {**spec.linear_pruning, **{
                    f: encode_mask(m) for f, m in zip(fields, masks[len(fields):],
                                                      strict=True)}}
            return out

        # the spec at every level reached, for comparing levels without searching again
        self.level_specs = {level: pruned(snap["masks"])
                            for level, snap in sorted(snapshots.snapshots.items())}
        if target in snapshots.snapshots:
            chosen = snapshots.snapshots[target]
        elif snapshots.last is not None:  # the sparsest point the search reached
            chosen = snapshots.last
        else:
            sparsity, masks = snapshots.sparsity()
            chosen = {"step": None, "sparsity": sparsity, "masks": masks}
        out = pruned(chosen["masks"])
        dims = {f: float(m.float().mean())
                for f, m in zip(fields, chosen["masks"][:len(fields)], strict=True)}
        return dims_result(
            self.name, strategy, ctx, out, dims, time.perf_counter() - t0,
            extra={"sparsity": round(float(chosen["sparsity"]), 4), "target": target,
                   "levels": {str(k): {"step": v["step"], "sparsity": round(v["sparsity"], 4)}
                              for k, v in sorted(snapshots.snapshots.items())},
                   "reached_target": target in snapshots.snapshots,
                   "curve": snapshots.curve[:: max(1, len(snapshots.curve) // 50)],
                   "threshold": granularity, "first_order": first_order,
                   "stopped_by_budget": stopped})
