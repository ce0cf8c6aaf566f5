"""The one Trainer: Adam, the spec's loss (BCE with logits by default), early stopping on
validation AUC with patience, best weights restored, a progress bar, and a clear error when
the loss diverges. Search methods plug in through ``TrainHook`` (architecture steps every k
batches, temperature schedules) without editing the loop.

On CUDA, batches are pinned on a background thread and copied without blocking; ``precision
= "bf16"`` trains under bfloat16 autocast (weights stay float32). Inside a torch.distributed
process group (``autodrs.train.distributed``) the same loop trains data-parallel: each rank
takes its shard of the train split under DDP with ``batch_size / world`` rows per step (the
global batch stays ``batch_size``), every rank runs the same number of steps, and
validation predictions are gathered so every rank takes the same early-stopping decision."""

from __future__ import annotations

import os
import random
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from autodrs.data.dataset import Batch, EncodedData
from autodrs.data.prefetch import prefetch
from autodrs.train import distributed
from autodrs.train.lazy import LazyAdam, lookup_parameters
from autodrs.train.losses import make_loss
from autodrs.train.metrics import task_metrics


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite."""


@dataclass
class TrainConfig:
    epochs: int = 10
    batch_size: int = 1024
    lr: float = 1e-3
    weight_decay: float = 0.0
    patience: int = 2
    eval_batch_size: int = 16_384
    seed: int = 2026
    device: str = "auto"
    threads: int | None = None
    progress: bool = True
    max_steps: int | None = None
    checkpoint: str | None = None
    precision: str = "fp32"  # or "bf16": bfloat16 autocast in training steps
    # lookup tables step only the rows in the batch (``train.lazy.LazyAdam``; opt-in)
    lazy_tables: bool = False


@dataclass
class TrainResult:
    best_epoch: int
    valid: dict[str, float]
    history: list[dict[str, float]] = field(default_factory=list)
    train_seconds: float = 0.0
    total_seconds: float = 0.0
    samples: int = 0
    stopped_early: bool = False
    stopped_by_hook: bool = False  # a hook ended the fit (e.g. a ``TimeLimit``)
    # every epoch of the config ran and the last one validated best: the epoch cap, not
    # early stopping, ended a model that was still improving (more epochs may help)
    still_improving: bool = False

    @property
    def samples_per_second(self) -> float:
        return self.samples / self.train_seconds if self.train_seconds else 0.0


class TrainHook:
    """Called by the trainer; search methods override what they need."""

    def on_step(self, trainer: Trainer, model: nn.Module, step: int, batch: Batch,
                loss: torch.Tensor) -> None:
        """After the weight step on ``batch`` (global step count from 1)."""

    def on_epoch_end(self, trainer: Trainer, model: nn.Module, epoch: int,
                     metrics: dict[str, float]) -> None:
        """After validation at the end of an epoch."""


# A fit under a time limit still validates after the stop, and ``fit_spec`` then scores the
# test split: ``TimeLimit`` stops training early enough to pay for these ``EVAL_PASSES``
# passes over the validation split's rows (the test split is about as large), estimated from
# one timed forward pass of the model and padded by ``EVAL_SAFETY``. Without this a 1M-row
# validation and test split took minutes after a baseline's share had ended.
EVAL_PASSES = 2
EVAL_SAFETY = 1.5

_DEADLINE: ContextVar[float | None] = ContextVar("autodrs_train_deadline", default=None)


@contextmanager
def deadline(at: float | None) -> Iterator[None]:
    """Within the block every ``Trainer.fit`` ends, as under a ``TimeLimit``, by ``at`` (a
    ``time.monotonic()`` time; None adds no limit); nested blocks keep the earliest. The
    search stages run under their share's end, so a method's fit that would not stop by
    itself (one without a ``TimeLimit`` of its own) cannot take the later stages' time."""
    current = _DEADLINE.get()
    if at is None or (current is not None and current < at):
        at = current
    token = _DEADLINE.set(at)
    try:
        yield
    finally:
        _DEADLINE.reset(token)


def current_deadline() -> float | None:
    """The ``deadline`` the fits started now end by (None: no limit)."""
    return _DEADLINE.get()


def forward_seconds_per_row(model: nn.Module, batch: Batch) -> float:
    """Seconds one no-grad forward pass of ``model`` takes per row of ``batch`` (the model's
    train/eval mode is restored)."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            t0 = time.perf_counter()
            model(batch)
            seconds = time.perf_counter() - t0
    finally:
        model.train(was_training)
    return seconds / max(1, len(batch))


class TimeLimit(TrainHook):
    """Ends training gracefully once ``remaining()`` (seconds, None for no limit) is down to
    what evaluating will take: the epoch under way is cut short, validated, and the best
    weights are kept. At the first step it times a forward pass of the batch and keeps back
    ``EVAL_SAFETY`` times that rate over ``eval_passes`` passes of the validation rows
    (``EVAL_PASSES``: the last validation and ``fit_spec``'s test pass; 0 keeps nothing
    back), and at an epoch's end it starts no new epoch past that point. Search stages pass
    their budget (``ctx.remaining``), so a one-shot search stops its epochs on time and still
    derives a decision from what it has trained."""

    def __init__(self, remaining: Callable[[], float | None],
                 eval_passes: int = EVAL_PASSES) -> None:
        self.remaining = remaining
        self.eval_passes = eval_passes
        self.row_seconds: float | None = None  # measured forward seconds per row

    def reserve(self, trainer: Trainer) -> float:
        """Seconds kept back for evaluating after the stop."""
        if not self.row_seconds:
            return 0.0
        return EVAL_SAFETY * self.row_seconds * self.eval_passes * trainer.valid_rows

    def due(self, trainer: Trainer) -> bool:
        left = self.remaining()
        return left is not None and left <= self.reserve(trainer)

    def on_step(self, trainer: Trainer, model: nn.Module, step: int, batch: Batch,
                loss: torch.Tensor) -> None:
        if self.row_seconds is None and self.eval_passes > 0:
            self.row_seconds = forward_seconds_per_row(model, batch)
        if self.due(trainer):
            trainer.request_stop()

    def on_epoch_end(self, trainer: Trainer, model: nn.Module, epoch: int,
                     metrics: dict[str, float]) -> None:
        if self.due(trainer):
            trainer.request_stop()


def seed_everything(seed: int) -> torch.Generator:
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


PRECISIONS = ("fp32", "bf16")


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(name)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"--device {name}: no CUDA device is available on this machine")
        if device.index is None:  # this rank's GPU (torchrun and Ray Train set it)
            device = torch.device("cuda", torch.cuda.current_device())
    return device


def default_threads() -> int:
    """The CPUs this process may use, split between the ranks sharing this machine."""
    cpus = (len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
            else (os.cpu_count() or 1))
    return max(1, cpus // max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1"))))


def shuffled_batch_count(rows: int, batch_size: int) -> int:
    """How many batches ``EncodedData.batches(shuffle=True)`` yields (a last batch of one
    row joins the one before it)."""
    count = -(-rows // batch_size)
    last = rows - (count - 1) * batch_size
    return count - 1 if count > 1 and last == 1 else count


def device_batches(batches: Iterable[Batch], device: torch.device, pin: bool,
                   depth: int = 2) -> Iterator[Batch]:
    """``batches`` on ``device``. With ``pin``, a background thread makes page-locked copies
    ``depth`` batches ahead, so the host-to-device copy runs without blocking and overlaps
    the step before it; an error in the thread is raised here."""
    if not pin:
        for batch in batches:
            yield batch if device.type == "cpu" else batch.to(device)
        return
    for batch in prefetch((b.pin_memory() for b in batches), depth):
        yield batch.to(device, non_blocking=True)


class Trainer:
    def __init__(self, config: TrainConfig | None = None,
                 hooks: Sequence[TrainHook] = ()) -> None:
        self.config = config or TrainConfig()
        self.hooks = list(hooks)
        if self.config.precision not in PRECISIONS:
            raise ValueError(f"unknown precision {self.config.precision!r}; use "
                             f"{' or '.join(PRECISIONS)}")
        self.device = resolve_device(self.config.device)
        torch.set_num_threads(self.config.threads or default_threads())
        self.step = 0
        self.optimizer: torch.optim.Optimizer | None = None
        self.stop_requested = False
        self.valid_rows = 0  # rows of the validation split of the fit under way
        self.limits: list[TimeLimit] = []  # the time limit ``deadline`` gave the last fit

    def request_stop(self) -> None:
        """Asked by a hook: finish the current step, validate, and end the fit."""
        self.stop_requested = True

    # ---------------------------------------------------------------- training
    def make_optimizer(self, model: nn.Module,
                       parameters: Iterable[nn.Parameter] | None = None) -> torch.optim.Optimizer:
        params = list(parameters) if parameters is not None else list(model.parameters())
        spec = getattr(model, "spec", None)
        l2 = float(getattr(spec, "l2_embedding", 0.0) or 0.0)
        emb_module = getattr(model, "embedding", None)
        groups: list[dict[str, Any]] | list[nn.Parameter] = params
        if l2 and emb_module is not None:
            emb_ids = {id(p) for p in emb_module.parameters()}
            groups = [g for g in (
                {"params": [p for p in params if id(p) in emb_ids], "weight_decay": l2},
                {"params": [p for p in params if id(p) not in emb_ids],
                 "weight_decay": self.config.weight_decay}) if g["params"]]
        if self.config.lazy_tables:
            return LazyAdam(groups, lookup_parameters(model), lr=self.config.lr,
                            weight_decay=self.config.weight_decay)
        return torch.optim.Adam(groups, lr=self.config.lr, weight_decay=self.config.weight_decay)

    def loss_fn(self, model: nn.Module) -> Any:
        spec = getattr(model, "spec", None)
        if spec is None:
            return make_loss("bce")
        return make_loss(spec.loss.name, spec.loss.params)

    def fit(self, model: nn.Module, train: EncodedData, valid: EncodedData,
            parameters: Iterable[nn.Parameter] | None = None) -> TrainResult:
        cfg = self.config
        generator = seed_everything(cfg.seed)
        model.to(self.device)
        world = distributed.world()
        batch_size = cfg.batch_size
        net: nn.Module = model  # what training steps call: DDP around the model on >1 rank
        if world.size > 1:
            if cfg.batch_size < world.size:
                raise ValueError(f"batch size {cfg.batch_size} is smaller than the "
                                 f"{world.size} data-parallel ranks")
            train = train.shard(world.rank, world.size)
            batch_size = cfg.batch_size // world.size
            from torch.nn.parallel import DistributedDataParallel

            # static_graph: parameters a model never uses (LR's embeddings) are allowed
            net = DistributedDataParallel(
                model, device_ids=[self.device.index] if self.device.type == "cuda" else None,
                static_graph=True)
        optimizer = self.make_optimizer(model, parameters)
        self.optimizer = optimizer  # hooks doing look-ahead steps read its state
        self.valid_rows = len(valid)
        hooks = list(self.hooks)
        at = current_deadline()
        self.limits = []
        if at is not None:  # the stage's share ends then (``deadline``)
            self.limits = [TimeLimit(lambda: at - time.monotonic())]
            hooks += self.limits
        loss_fn = self.loss_fn(model)
        # a model (or a search wrapper) may define its own training loss, e.g. AutoLoss
        custom_loss = getattr(model, "training_loss", None)
        best_auc, best_epoch, best_state = -1.0, -1, None
        history: list[dict[str, float]] = []
        train_seconds, samples, bad_epochs = 0.0, 0, 0
        start = time.perf_counter()
        # every rank runs the same number of steps (a rank with a batch more would wait
        # forever in DDP's gradient all-reduce)
        steps_per_epoch = distributed.all_reduce_int(
            shuffled_batch_count(len(train), batch_size), "min")
        stopped_early = False
        self.stop_requested = False
        bf16 = cfg.precision == "bf16"
        pin = self.device.type == "cuda"
        with _progress(cfg.progress and world.main, cfg.epochs * steps_per_epoch) as bar:
            for epoch in range(cfg.epochs):
                model.train()
                t0 = time.perf_counter()
                batches = train.batches(batch_size, shuffle=True, generator=generator)
                taken = 0
                for batch in device_batches(batches, self.device, pin):
                    if taken == steps_per_epoch:
                        break
                    taken += 1
                    with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=bf16):
                        logits = net(batch)
                        loss = (custom_loss(logits, batch) if custom_loss is not None
                                else loss_fn(logits, batch.label))
                        reg = getattr(model, "regularization", None)
                        if reg is not None:
                            loss = loss + reg()
                    if not torch.isfinite(loss):
                        raise TrainingDiverged(
                            f"loss became {loss.item()} at epoch {epoch + 1}, step {self.step + 1}; "
                            "lower the learning rate or check the inputs for extreme values"
                        )
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    optimizer.step()
                    self.step += 1
                    samples += len(batch)
                    for hook in hooks:
                        hook.on_step(self, model, self.step, batch, loss)
                    if hooks and world.size > 1:  # one rank's hook stops them all
                        self.stop_requested = bool(
                            distributed.all_reduce_int(int(self.stop_requested), "max"))
                    if bar is not None and self.step % 25 == 0:
                        bar.advance(25, loss=float(loss))
                    if self.stop_requested or (cfg.max_steps is not None
                                               and self.step >= cfg.max_steps):
                        break
                if taken < steps_per_epoch and not self.stop_requested and (
                        cfg.max_steps is None or self.step < cfg.max_steps):
                    raise RuntimeError(f"rank {world.rank} ran out of batches after {taken} of "
                                       f"{steps_per_epoch} steps")
                train_seconds += time.perf_counter() - t0
                metrics = self.evaluate(model, valid)
                metrics["epoch"] = epoch + 1
                history.append(metrics)
                for hook in hooks:
                    hook.on_epoch_end(self, model, epoch + 1, metrics)
                if world.size > 1 and hooks:  # an epoch-end stop, too, is every rank's
                    self.stop_requested = bool(
                        distributed.all_reduce_int(int(self.stop_requested), "max"))
                last = (epoch + 1 == cfg.epochs or self.stop_requested
                        or (cfg.max_steps is not None and self.step >= cfg.max_steps))
                if metrics["auc"] > best_auc:
                    best_auc, best_epoch, bad_epochs = metrics["auc"], epoch + 1, 0
                    # the fit ends with this epoch: the model holds the best weights, so
                    # no copy of them (the size of the model) is made
                    best_state = None if last else {
                        k: v.detach().clone() for k, v in model.state_dict().items()}
                    if cfg.checkpoint and world.main:
                        save_state(best_state or model.state_dict(), cfg.checkpoint)
                else:
                    bad_epochs += 1
                    if bad_epochs >= cfg.patience:
                        stopped_early = True
                        break
                if self.stop_requested or (cfg.max_steps is not None
                                           and self.step >= cfg.max_steps):
                    break
        if best_state is not None:
            model.load_state_dict(best_state)
        del best_state
        # the optimizer's moments and the gradients are as large as the weights (a dense
        # Adam keeps two moments per embedding row): dropped, so a finished model costs only
        # its weights to whoever keeps it
        self.optimizer = None
        optimizer.state.clear()
        model.zero_grad(set_to_none=True)
        valid_metrics = next(h for h in history if h["epoch"] == best_epoch)
        samples = distributed.all_reduce_int(samples, "sum")  # rows of all ranks
        return TrainResult(
            best_epoch=best_epoch, valid={k: v for k, v in valid_metrics.items() if k != "epoch"},
            history=history, train_seconds=train_seconds,
            total_seconds=time.perf_counter() - start, samples=samples,
            stopped_early=stopped_early, stopped_by_hook=self.stop_requested,
            # the best epoch was the last the config allows (so every epoch ran)
            still_improving=cfg.epochs > 1 and best_epoch == cfg.epochs
            and not self.stop_requested,
        )

    # ---------------------------------------------------------------- evaluation
    @torch.no_grad()
    def predict(self, model: nn.Module, data: EncodedData,
                until: Callable[[], bool] | None = None) -> np.ndarray:
        """Click probabilities of ``data``'s rows in order; with ``until``, the pass ends
        after the first batch at which ``until()`` is true (a prefix of the rows). Each
        batch's scores are copied into one array made at the first batch and then freed:
        kept as one small tensor per batch, they sat between the freed activations of the
        batches and the heap grew with the number of batches (a 1.6M-row split at 16,384
        rows a batch: 150 MB more at its peak)."""
        model.eval()
        model.to(self.device)
        out: np.ndarray | None = None
        at = 0
        for batch in device_batches(data.batches(self.config.eval_batch_size), self.device,
                                    pin=self.device.type == "cuda"):
            scores = torch.sigmoid(model(batch)).float().cpu().numpy()
            if out is None:
                out = np.empty((len(data), *scores.shape[1:]), np.float64)
            out[at:at + len(scores)] = scores
            at += len(scores)
            del scores
            if until is not None and until():
                break
        if out is None:
            return np.zeros(0, np.float64)
        return out if at == len(out) else out[:at].copy()

    def time_left(self) -> float | None:
        """Seconds left under this trainer's time limits (its ``TimeLimit`` hooks and the
        ``deadline`` of its last fit, or the current one); None without any."""
        limits = [h for h in self.hooks if isinstance(h, TimeLimit)] + self.limits
        at = current_deadline()
        lefts = [left for h in limits if (left := h.remaining()) is not None]
        if at is not None:
            lefts.append(at - time.monotonic())
        return min(lefts) if lefts else None

    def evaluate(self, model: nn.Module, data: EncodedData) -> dict[str, float]:
        """Metrics of ``model`` on ``data``. On several ranks each predicts its shard, rank 0
        computes the metrics over all predictions and every rank gets them.

        Under a time limit (``time_left``) a pass still under way when the time is up ends
        after that batch (at least one batch, ``eval_batch_size`` rows, is scored): the
        metrics are then of the rows scored so far, a prefix of the split (its rows are in
        random order), and ``scored_rows`` records how many. The limit keeps time back for
        these passes (``TimeLimit``), so this only happens when that estimate fell short."""
        world = distributed.world()
        part = data.shard(world.rank, world.size) if world.size > 1 else data
        limited = self.time_left() is not None

        def spent() -> bool:
            left = self.time_left()
            return left is not None and left <= 0

        probs = self.predict(model, part, until=spent if limited else None)
        rows = len(probs)
        gathered = distributed.gather_to_main({
            "probs": probs, "label": part.label[:rows].numpy(),
            "group": part.group[:rows].numpy() if part.group is not None else None})
        metrics: dict[str, float] | str | None = None
        if gathered is not None:
            probs = gathered["probs"]
            if not np.isfinite(probs).all():
                metrics = "the model predicts NaN; lower the learning rate"
            else:
                # several labels: each task's metrics and their means (``task_metrics``)
                metrics = task_metrics(gathered["label"], probs, gathered["group"],
                                       getattr(model, "tasks", None))
                if len(probs) < len(data):
                    metrics["scored_rows"] = float(len(probs))
        metrics = distributed.broadcast_from_main(metrics)
        if isinstance(metrics, str):
            raise TrainingDiverged(metrics)
        return metrics


def release_weights(model: nn.Module) -> None:
    """Free a finished model's tensors, keeping its structure: they move to PyTorch's meta
    device (shapes and dtypes, no memory), so its parameters and bytes can still be counted
    but it can no longer predict. For a fit only its figures are kept of (a cut-short
    baseline: an embedding table of millions of rows each)."""
    model.to("meta")


def save_state(state: dict[str, torch.Tensor], path: str | Path) -> None:
    """Write a state dict atomically (a crash never leaves a half-written checkpoint)."""
    path = Path(path)
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


class _progress:
    """A rich progress bar that stays out of the way when disabled or not on a terminal."""

    def __init__(self, enabled: bool, total: int) -> None:
        self.enabled = enabled
        self.total = total
        self.progress: Any = None

    def __enter__(self) -> _progress | None:
        if not self.enabled:
            return None
        from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

        self.progress = Progress(
            TextColumn("training"), BarColumn(), TextColumn("loss {task.fields[loss]:.4f}"),
            TimeRemainingColumn(), transient=True,
        )
        self.task = self.progress.add_task("train", total=self.total, loss=float("nan"))
        self.progress.start()
        return self

    def advance(self, n: int, loss: float) -> None:
        self.progress.update(self.task, advance=n, loss=loss)

    def __exit__(self, *exc: object) -> None:
        if self.progress is not None:
            self.progress.stop()
