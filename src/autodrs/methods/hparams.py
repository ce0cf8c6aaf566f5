"""``hparams``: a generic search over a backbone's embedding dim, MLP width and depth,
learning rate and batch size, with any strategy.

Black-box strategies sample all five from the discrete choices below and score each
candidate with the shared cheap estimation (or, with ``estimation=weight_sharing``, with a
trained supernet pinned to the candidate: only the architecture is searched then). With
``objectives`` (``--objectives auc,embedding_bytes``, any of ``base.COST_OBJECTIVES``) the
random, TPE and evolution (NSGA-II) strategies search the Pareto front of validation AUC
against those costs; the stage returns the front (``pareto``) and its most accurate point.
The ``gradient`` strategy trains ``HParamSupernet``: one embedding at the largest dim whose
leading ``d`` columns are kept by a relaxed mask ``m = sum_k p_k 1[j < d_k]`` (DNIS-style
soft dimension mask), MLP layers at the largest width masked the same way, and one output
head per depth mixed by ``softmax(gamma)``; ``p = gumbel_softmax(alpha / tau)`` per choice.
``derive()`` keeps the most probable choice of each; learning rate and batch size are not
relaxable and stay at the command's setting.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import optuna
import torch
from torch import nn

from autodrs.data.dataset import Batch
from autodrs.data.schema import Schema
from autodrs.models.builder import LinearTerm
from autodrs.nn.embedding import FieldEmbedding
from autodrs.nn.layers import FactorizationMachine
from autodrs.search.base import (
    OBJECTIVES,
    Method,
    SearchContext,
    SearchError,
    SearchSpace,
    StageResult,
    Supernet,
    no_result,
    option,
    register_method,
)
from autodrs.search.blackbox import BlackBoxResult, run_blackbox
from autodrs.search.estimation import (
    low_fidelity,
    subsample,
    weight_sharing_evaluator,
    with_costs,
)
from autodrs.search.gradient import Temperature, gumbel_softmax, run_gradient
from autodrs.search.strategies import BLACKBOX_STRATEGIES
from autodrs.spec import ArchSpec, TrainingSpec
from autodrs.train.trainer import TimeLimit, Trainer

ARCH_KEYS = ("embed_dim", "mlp_width", "mlp_depth")
RELAXABLE_TOWERS = ("linear", "fm", "mlp")


def mlp_widths(width: int, depth: int) -> list[int]:
    """A funnel: each layer half as wide as the one before (at least 4 units)."""
    return [max(4, width >> layer) for layer in range(depth)]


class HParamSpace(SearchSpace):
    """Embedding dim, MLP width and depth (when the backbone has an MLP), learning rate and
    batch size, each a small set of discrete choices (so every strategy, grid included,
    applies)."""

    name = "hparams"

    def __init__(self, base: ArchSpec, fast: bool = False, arch_only: bool = False) -> None:
        self.choices: dict[str, list[Any]] = {"embed_dim": [4, 8] if fast else [4, 8, 16, 32]}
        if base.mlp:
            self.choices["mlp_width"] = [16, 32] if fast else [64, 128, 256]
            self.choices["mlp_depth"] = [1, 2] if fast else [1, 2, 3]
        if not arch_only:
            self.choices["lr"] = [1e-3, 3e-3] if fast else [3e-4, 1e-3, 3e-3]
            self.choices["batch_size"] = [256, 512] if fast else [256, 512, 1024, 2048]

    def suggest(self, trial: optuna.Trial, ctx: SearchContext) -> dict[str, Any]:
        return {k: trial.suggest_categorical(k, v) for k, v in self.choices.items()}

    def grid(self, ctx: SearchContext) -> dict[str, list[Any]]:
        return {k: list(v) for k, v in self.choices.items()}

    def apply(self, spec: ArchSpec, decision: dict[str, Any]) -> ArchSpec:
        unknown = set(decision) - set(self.choices)
        if unknown:
            raise SearchError(f"hparams decision has unknown keys {sorted(unknown)}")
        out = spec.copy()
        if "embed_dim" in decision:
            out.embed_dim = int(decision["embed_dim"])
        if "mlp_width" in decision or "mlp_depth" in decision:
            width = int(decision.get("mlp_width", spec.mlp[0]))
            depth = int(decision.get("mlp_depth", len(spec.mlp)))
            out.mlp = mlp_widths(width, depth)
        if "lr" in decision or "batch_size" in decision:
            t = spec.training
            lr = decision.get("lr", t.lr)
            batch = decision.get("batch_size", t.batch_size)
            out.training = TrainingSpec(lr=None if lr is None else float(lr),
                                        batch_size=None if batch is None else int(batch),
                                        weight_decay=t.weight_decay)
        return out

    def supernet(self, ctx: SearchContext) -> HParamSupernet:
        spec = ctx.spec
        extra = [t for t in ("inner", "cross_layers", "attention_layers") if getattr(spec, t)]
        if extra or spec.interactions is not None or spec.crosses or spec.field_dims:
            raise SearchError("the relaxed hparams space covers linear, FM and MLP towers over "
                              "plain fields; use a black-box strategy for this backbone")
        return HParamSupernet(ctx.dataset.schema, spec, self.choices)


class HParamSupernet(Supernet):
    """Every candidate embedding dim, MLP width and depth in one network (see module doc)."""

    def __init__(self, schema: Schema, base: ArchSpec, choices: dict[str, list[Any]]) -> None:
        super().__init__()
        self.choices = {k: choices[k] for k in ARCH_KEYS if k in choices}
        dims = self.choices["embed_dim"]
        top = max(dims)
        self.embedding = FieldEmbedding(schema, base.copy(embed_dim=top, field_dims={}))
        n_fields = len(self.embedding.names)
        self.register_buffer("dim_masks", _leading_masks(dims, top), persistent=False)
        self.linear = LinearTerm(schema, base) if base.linear else None
        self.fm = FactorizationMachine(None) if base.fm else None
        self.bias = nn.Parameter(torch.zeros(()))
        self.layers = nn.ModuleList()
        self.heads = nn.ModuleDict()
        if "mlp_width" in self.choices:
            widths, depths = self.choices["mlp_width"], self.choices["mlp_depth"]
            fan_in = n_fields * top
            for layer in range(max(depths)):
                size = mlp_widths(max(widths), layer + 1)[-1]
                self.layers.append(nn.Linear(fan_in, size))
                per_choice = [mlp_widths(w, layer + 1)[-1] for w in widths]
                self.register_buffer(f"width_masks_{layer}", _leading_masks(per_choice, size),
                                     persistent=False)
                if layer + 1 in depths:
                    self.heads[str(layer + 1)] = nn.Linear(size, 1)
                fan_in = size
        self.alpha = nn.ParameterDict({k: nn.Parameter(torch.zeros(len(v)))
                                       for k, v in self.choices.items()})
        self.temperatures = [Temperature()]
        self.sample_paths = False
        self._fixed: dict[str, Any] | None = None

    def arch_parameters(self) -> list[nn.Parameter]:
        return list(self.alpha.values())

    def derive(self) -> dict[str, Any]:
        return {k: v[int(self.alpha[k].argmax())] for k, v in self.choices.items()}

    def probabilities(self) -> dict[str, dict[str, float]]:
        return {k: {str(c): round(float(p), 4) for c, p in
                    zip(v, torch.softmax(self.alpha[k].detach(), 0), strict=True)}
                for k, v in self.choices.items()}

    @contextmanager
    def fixed(self, decision: dict[str, Any]) -> Iterator[HParamSupernet]:
        missing = [k for k in self.choices if k not in decision]
        if missing:
            raise SearchError(f"weight sharing needs a value for {missing}")
        previous, self._fixed = self._fixed, decision
        try:
            yield self
        finally:
            self._fixed = previous

    def weights(self, key: str) -> torch.Tensor:
        """Mixing weights over the choices of ``key``: one-hot when pinned or when sampling
        single paths (SPOS, Guo et al. 2020), Gumbel-softmax otherwise."""
        logits = self.alpha[key]
        n = len(self.choices[key])
        if self._fixed is not None:
            index = self.choices[key].index(self._fixed[key])
            return nn.functional.one_hot(torch.tensor(index), n).to(logits.dtype)
        if self.sample_paths and self.training:
            index = int(torch.randint(n, ()))
            return nn.functional.one_hot(torch.tensor(index), n).to(logits.dtype)
        return gumbel_softmax(logits, self.temperatures[0].value, training=self.training)

    def forward(self, batch: Batch) -> torch.Tensor:
        mask = self.weights("embed_dim") @ self.dim_masks
        stacked = torch.stack(self.embedding(batch), dim=1) * mask
        logit = self.linear(batch) if self.linear is not None else self.bias
        if self.fm is not None:
            logit = logit + self.fm(stacked)
        if self.layers:
            width = self.weights("mlp_width")
            depth = self.weights("mlp_depth")
            h = stacked.flatten(1)
            outputs = []
            for layer, linear in enumerate(self.layers):
                h = torch.relu(linear(h)) * (width @ getattr(self, f"width_masks_{layer}"))
                if str(layer + 1) in self.heads:
                    outputs.append(self.heads[str(layer + 1)](h).squeeze(1))
            logit = logit + (torch.stack(outputs, dim=1) * depth).sum(1)
        return logit


def _leading_masks(sizes: list[int], top: int) -> torch.Tensor:
    """Row k keeps the first ``sizes[k]`` of ``top`` units."""
    return (torch.arange(top).unsqueeze(0) < torch.tensor(sizes).unsqueeze(1)).float()


@register_method
class HParams(Method):
    """Hyper-parameter search over a backbone (the engine's first user)."""

    name = "hparams"
    component = "training"
    strategies = ("tpe", *[s for s in BLACKBOX_STRATEGIES if s != "tpe"], "gradient")
    objectives = OBJECTIVES

    def search(self, ctx: SearchContext) -> StageResult:
        strategy = self.resolve_strategy(ctx)
        t0 = time.perf_counter()
        if strategy == "gradient":
            return self._gradient(ctx, t0)
        objectives = self.resolve_objectives(ctx, strategy)
        weight_sharing = ctx.options.get("estimation") == "weight_sharing"
        space = HParamSpace(ctx.spec, ctx.fast, arch_only=weight_sharing)
        evaluate = (with_costs(self._shared_weights(ctx, space), ctx.dataset, objectives)
                    if weight_sharing else None)
        found = run_blackbox(space, ctx, strategy, evaluate, method=self.name,
                             objectives=objectives)
        seconds = time.perf_counter() - t0
        if not found.found:
            return no_result(self.name, strategy, ctx.spec, str(found.reason), seconds,
                             trials=found.trials)
        spec = found.best_spec
        spec.record(self.name, strategy, list(found.best_decision or {}), seconds,
                    trials=len(found.trials))
        ranking, scores = _leaderboard(found)
        extra: dict[str, Any] = {"best": found.best_decision, "best_value": found.best_value}
        if found.pareto is not None:
            extra["pareto_objectives"] = list(objectives)
        return StageResult(self.name, strategy, spec, ranking=ranking, scores=scores,
                           pareto=found.pareto, trials=found.trials, seconds=seconds,
                           extra=extra)

    def _shared_weights(self, ctx: SearchContext, space: HParamSpace) -> Any:
        """Train the supernet once with uniformly sampled single paths, then score every
        candidate by the supernet pinned to it (no per-candidate training)."""
        torch.manual_seed(ctx.seed)
        supernet = space.supernet(ctx)
        supernet.sample_paths = True
        epochs = option(ctx, "epochs", 1 if ctx.fast else min(ctx.train.epochs, 3), int)
        config = low_fidelity(ctx.train, epochs)
        train = subsample(ctx.dataset.train, option(ctx, "subsample", None), ctx.seed)
        Trainer(config, [TimeLimit(ctx.remaining)]).fit(
            supernet, train, ctx.dataset.valid, parameters=supernet.weight_parameters())
        supernet.sample_paths = False
        return weight_sharing_evaluator(supernet, ctx.dataset.valid, config)

    def _gradient(self, ctx: SearchContext, t0: float) -> StageResult:
        space = HParamSpace(ctx.spec, ctx.fast, arch_only=True)
        mode = str(ctx.options.get("arch_mode", "bilevel"))
        found = run_gradient(space, ctx, mode=mode, every=option(ctx, "arch_every", 5, int))
        seconds = time.perf_counter() - t0
        supernet = found.supernet
        assert isinstance(supernet, HParamSupernet)
        probs = supernet.probabilities()
        spec = found.spec.record(self.name, "gradient", list(found.decision), seconds,
                                 arch_steps=found.arch_steps)
        ranking = [f"{k}={v}" for k, v in found.decision.items()]
        scores = {f"{k}={c}": p for k, by_choice in probs.items() for c, p in by_choice.items()}
        return StageResult(self.name, "gradient", spec, ranking=ranking, scores=scores,
                           seconds=seconds, extra={"best": found.decision,
                                                   "arch_steps": found.arch_steps,
                                                   "stopped_by_budget": found.stopped_by_budget})


def _leaderboard(found: BlackBoxResult, top: int = 5) -> tuple[list[Any], dict[str, float]]:
    """The best finished trials, best first: their decisions and first objective."""
    done = [t for t in found.trials if t["state"] == "COMPLETE" and t["values"]]
    sign = 1.0 if found.study.directions[0] == optuna.study.StudyDirection.MAXIMIZE else -1.0
    done.sort(key=lambda t: (-sign * t["values"][0], t["number"]))
    ranking = [t["decision"] for t in done[:top]]
    scores = {f"trial {t['number']}": round(float(t["values"][0]), 6) for t in done[:top]}
    return ranking, scores
