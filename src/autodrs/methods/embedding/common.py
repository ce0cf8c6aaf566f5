"""What the embedding methods share: the supernet wrapper, stored sizes, budgets, and the
stage result (``dims`` per field and the stored ``bytes``; DESIGN.md)."""

from __future__ import annotations

import io
import re
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import torch
from torch import nn

from autodrs.data.dataset import Batch
from autodrs.data.schema import Schema
from autodrs.models.builder import CTRModel, build_model, count_bytes, count_parameters
from autodrs.nn.mixed import SearchedEmbedding
from autodrs.search.base import SearchContext, SearchError, StageResult, Supernet, option
from autodrs.search.estimation import BudgetExhausted, Deadline
from autodrs.search.gradient import ArchStep
from autodrs.spec import ArchSpec
from autodrs.train.losses import make_loss
from autodrs.train.trainer import Trainer, TrainHook, shuffled_batch_count

DEFAULT_CANDIDATES = (2, 4, 8, 16, 32, 64)
_UNITS = {"": 1, "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9,
          "kib": 2**10, "mib": 2**20, "gib": 2**30}


class EmbeddingSupernet(Supernet):
    """A model of ``spec`` whose searched fields are embedded by ``embedding`` (a
    ``SearchedEmbedding`` at width ``embedding.width``); the towers are ``build_model``'s."""

    def __init__(self, schema: Schema, spec: ArchSpec, embedding: SearchedEmbedding) -> None:
        super().__init__()
        widths = {n: embedding.width for n in embedding.searched}
        # the Trainer reads the loss and the l2 strength from ``spec``
        self.spec = spec.copy(field_dims={**spec.field_dims, **widths},
                              pruning={k: v for k, v in spec.pruning.items() if k not in widths})
        self.model: CTRModel = build_model(schema, self.spec)
        self.model.embedding = embedding
        # the searched embedding has no one-table lookup (``FieldEmbedding.stacked``)
        self.model.one_lookup = False

    @property
    def embedding(self) -> SearchedEmbedding:
        return self.model.embedding  # type: ignore[return-value]

    def forward(self, batch: Batch) -> torch.Tensor:
        return self.model(batch)


def parse_bytes(value: Any) -> int:
    """``2MB`` (10^6), ``512KiB`` (2^10), ``1.5e6`` or an int, as a positive byte count."""
    if isinstance(value, bool):
        raise SearchError(f"memory budget must be a size like 2MB, got {value!r}")
    if isinstance(value, int | float):
        n = float(value)
    else:
        match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:e[0-9]+)?)\s*([a-zA-Z]*)\s*", str(value))
        unit = match.group(2).lower() if match else None
        if match is None or unit not in _UNITS:
            raise SearchError(f"memory budget {value!r} is not a size; write e.g. 2MB, 500KB, "
                              "1MiB or a byte count")
        n = float(match.group(1)) * _UNITS[unit]
    if not n > 0:
        raise SearchError(f"memory budget must be > 0 bytes, got {value!r}")
    return int(n)


def candidate_dims(ctx: SearchContext, default: Sequence[int] = DEFAULT_CANDIDATES) -> list[int]:
    """The candidate dims (``ctx.options["candidates"]``: a list or ``2,4,8``), sorted."""
    raw = ctx.options.get("candidates", default)
    if isinstance(raw, str):
        raw = [v for v in raw.split(",") if v.strip()]
    try:
        dims = sorted({int(v) for v in raw})
    except (TypeError, ValueError) as e:
        raise SearchError(f"candidate dims must be integers, got {raw!r}") from e
    if not dims or dims[0] <= 0:
        raise SearchError(f"candidate dims must be positive integers, got {raw!r}")
    return dims


def flag(ctx: SearchContext, key: str, default: bool) -> bool:
    """``ctx.options[key]`` as a yes/no option (true/false, yes/no, 1/0); a clear error
    otherwise."""
    value = ctx.options.get(key, default)
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise SearchError(f"option {key!r} must be true or false, got {value!r}")


def searched_fields(ctx: SearchContext) -> list[str]:
    """The categorical fields of the spec so far; a clear error when there are none."""
    schema = ctx.dataset.schema
    fields = [n for n in ctx.spec.used_fields(schema) if schema.field(n).kind == "categorical"]
    if not fields:
        raise SearchError("embedding search needs at least one categorical field; the spec "
                          "uses none")
    return fields


def file_bytes(model: nn.Module) -> int:
    """Size of the ``model.pt`` that ``runfolder.save_model`` writes for ``model``: its
    tensors plus the file format's per-tensor records (exact up to the archive name that
    each record repeats)."""
    buffer = io.BytesIO()
    torch.save({k: v.detach().cpu() for k, v in model.state_dict().items()}, buffer)
    return len(buffer.getvalue())


def measure(schema: Schema, spec: ArchSpec) -> dict[str, int]:
    """Embedding parameters, stored bytes (tensors) and ``model.pt`` size of the model
    ``spec`` describes (shapes, and so sizes, do not change with training)."""
    with torch.random.fork_rng():
        model = build_model(schema, spec)
    params, size = count_parameters(model), count_bytes(model)
    return {"params": params["embedding"], "bytes": size["embedding"],
            "total_params": params["total"], "total_bytes": size["total"],
            "file_bytes": file_bytes(model)}


def dims_result(method: str, strategy: str, ctx: SearchContext, spec: ArchSpec,
                dims: dict[str, float], seconds: float, scores: dict[str, float] | None = None,
                extra: dict[str, Any] | None = None, trials: list[dict[str, Any]] | None = None,
                pareto: list[dict[str, Any]] | None = None) -> StageResult:
    """A StageResult for an embedding stage: ``dims`` per field (a dim, or a kept fraction
    for per-value pruning), fields ranked by it, ``bytes`` the stored embedding size of the
    refined spec, and the decision recorded in the spec's provenance."""
    size = measure(ctx.dataset.schema, spec)
    base = measure(ctx.dataset.schema, ctx.spec)
    out = spec.copy()
    out.provenance.append({"method": method, "strategy": strategy, "component": "embedding",
                           "dims": dims, "bytes": size["bytes"]})
    ranking = sorted(dims, key=lambda f: (-dims[f], f))
    return StageResult(
        method=method, strategy=strategy, spec=out, ranking=ranking,
        scores={f: round(float((scores or dims)[f]), 6) for f in ranking},
        dims={f: (round(float(v), 4) if isinstance(v, float) else v) for f, v in dims.items()},
        bytes=size["bytes"], trials=trials or [], pareto=pareto, seconds=seconds,
        extra={"embedding_params": size["params"], "baseline_bytes": base["bytes"],
               "baseline_embedding_params": base["params"],
               "compression": round(base["bytes"] / max(1, size["bytes"]), 3),
               "model_bytes": size["total_bytes"], "baseline_model_bytes": base["total_bytes"],
               "file_bytes": size["file_bytes"], "baseline_file_bytes": base["file_bytes"],
               "file_compression": round(base["file_bytes"] / size["file_bytes"], 3),
               **(extra or {})},
    )


def arch_every(ctx: SearchContext, paper: int) -> int:
    """Weight steps per architecture step: ``ctx.options["arch_every"]``, else the paper's
    interval, shortened when an epoch is short so the architecture still gets about 100
    steps an epoch (the papers' data sets have thousands of steps an epoch; ours may not)."""
    if "arch_every" in ctx.options:
        every = option(ctx, "arch_every", paper, int)
        if every < 1:
            raise SearchError(f"option 'arch_every' must be >= 1, got {every}")
        return every
    steps = -(-len(ctx.dataset.train) // ctx.train.batch_size)
    return max(1, min(paper, steps // 100))


def search_epochs(ctx: SearchContext, default: int | None = None) -> int:
    """Epochs of a method's own search (its supernet, its candidate retrains): the option
    ``search_epochs``, else ``default`` (the command's ``--epochs``), 1 when ``fast``.
    ``--trial-epochs`` (the option ``epochs``) is the epochs of one black-box trial only."""
    fallback = 1 if ctx.fast else (default if default is not None else ctx.train.epochs)
    n = option(ctx, "search_epochs", fallback, int)
    if n < 1:
        raise SearchError(f"option search_epochs must be >= 1, got {n}")
    return n


def unsearched(method: str, ctx: SearchContext, arch_steps: int, stopped: bool,
               every: int) -> str | None:
    """Why a gradient search found nothing, or None: the budget ended it before one epoch's
    architecture steps, so its parameters are about where they started (the derived dims
    near random). The method then returns ``no_result`` with this reason (its input spec,
    and result.json, the report and the console say so) instead of presenting them."""
    per_epoch = max(1, shuffled_batch_count(len(ctx.dataset.train), ctx.train.batch_size)
                    // max(1, every))
    if arch_steps == 0 or (stopped and arch_steps < per_epoch):
        return (f"{method} found no embedding dims: the budget ran out after {arch_steps} "
                f"architecture step(s), before one epoch of the search ({per_epoch}); give "
                "it more --budget")
    return None


def train_supernet(ctx: SearchContext, supernet: Supernet, optimizer: torch.optim.Optimizer,
                   every: int, mode: str = "bilevel", warm_epochs: int = 0,
                   epochs: int | None = None) -> tuple[int, bool]:
    """Warm start (weights only, ``warm_epochs``), then train the weights with an
    architecture step of ``optimizer`` every ``every`` weight steps (on validation batches
    for ``bilevel``) for ``epochs`` epochs (``search_epochs``), leaving the architecture parameters where the
    search ended (the Trainer would restore those of its best validation epoch). Stops
    cleanly when the search budget runs out. Returns the number of architecture steps and
    whether the budget stopped it."""
    loss = make_loss(ctx.spec.loss.name, ctx.spec.loss.params)

    def arch_loss(model: nn.Module, batch: Batch) -> torch.Tensor:
        return loss(model(batch), batch.label)

    base = replace(ctx.train, progress=False, checkpoint=None)
    epochs = epochs if epochs is not None else search_epochs(ctx)
    data = ctx.dataset
    hook = ArchStep(optimizer, arch_loss, mode=mode, every=every,
                    valid=data.valid if mode == "bilevel" else None,
                    batch_size=base.batch_size, seed=ctx.seed,
                    temperatures=list(getattr(supernet, "temperatures", [])))
    arch = supernet.arch_parameters()
    stopped = False
    try:
        if warm_epochs > 0:
            Trainer(replace(base, epochs=warm_epochs), [Deadline(ctx)]).fit(
                supernet, data.train, data.valid, parameters=supernet.weight_parameters())
        final = _LastValues(arch)
        Trainer(replace(base, epochs=epochs, patience=epochs + 1),
                [hook, final, Deadline(ctx)]).fit(supernet, data.train, data.valid,
                                                 parameters=supernet.weight_parameters())
        final.restore()
    except BudgetExhausted:
        stopped = True
    return hook.arch_steps, stopped


class _LastValues(TrainHook):
    """Remembers parameters at each epoch's end, to put them back after the Trainer
    restores its best epoch."""

    def __init__(self, params: list[nn.Parameter]) -> None:
        self.params = params
        self.values: list[torch.Tensor] | None = None

    def on_epoch_end(self, trainer: Trainer, model: nn.Module, epoch: int,
                     metrics: dict[str, float]) -> None:
        self.values = [p.detach().clone() for p in self.params]

    def restore(self) -> None:
        if self.values is not None:
            with torch.no_grad():
                for p, v in zip(self.params, self.values, strict=True):
                    p.copy_(v)
