"""UMEC (Shen, Wang, Gao, Yang, Li; ICLR 2021, "UMEC: Unified Model and Embedding Compression
for Efficient Recommendation Systems"): the embedding dimensions and the MLP's hidden
neurons pruned jointly under an explicit resource constraint, solved as a minimax problem
by gradients.

Every embedding dimension d of every embedded field f has a gate ``g_fd`` and every hidden
neuron of the MLP a gate ``h_j``, all in [0, 1] (initialised to 1; projected back into
[0, 1] after each step). The field's output is multiplied by its gates and a neuron's
activation by its gate. The resource is the parameter count of the embeddings and the MLP
as a differentiable function of the gates, relative to the dense model's:

    R = (sum_f rows_f sum_d g_fd + sum_l n_(l-1) n_l) / R_dense,  n_0 = sum_fd g_fd, n_l = sum_j h_lj

and training solves ``min_(w, g) max_(lambda >= 0) L(w, g) + lambda (R(g) - budget)``: the
weights and gates descend (Adam, the gates at ``gate_lr``), lambda ascends,
``lambda <- max(0, lambda + dual_lr (R - budget))`` after every step. The derived spec keeps
the dimensions and neurons whose gate is above 0 (``spec.field_dims``, ``spec.mlp``); if it
is still above the budget, the smallest gates are dropped until it fits. Towers that need
one common dimension (FM, inner products) read the narrower fields through the builder's
projections.

One run per budget of ``budgets`` (0.5, 0.3, 0.2: kept fraction of the embedding and MLP
parameters) and one dense run give validation AUC against the kept fraction, each point with
its derived model's forward latency per batch of ``latency_rows`` (1,024) validation rows
against the dense model's, measured in turn (fastest of 30). The chosen budget is the
smallest whose validation AUC is within ``tolerance`` (0.002) of the dense run's (option
``budget`` fixes it instead); every point carries its derived spec.

Options: ``search_epochs`` (the run's epochs), ``budgets`` (``0.5,0.3,0.2``), ``budget``
(unset), ``gate_lr`` (1e-2), ``dual_lr`` (0.1), ``tolerance`` (0.002), ``latency_rows``
(1024).
"""

from __future__ import annotations

import time
from dataclasses import replace
from typing import Any

import torch
from torch import nn

from autodrs.data.dataset import Batch
from autodrs.data.schema import Schema
from autodrs.methods.comprehensive.common import choose_level, hidden_layers, latency
from autodrs.models.builder import build_model, count_bytes, count_parameters
from autodrs.search.base import (
    Method,
    SearchContext,
    SearchError,
    StageResult,
    option,
    register_method,
)
from autodrs.spec import ArchSpec
from autodrs.train.trainer import TimeLimit, Trainer, TrainHook


class DimGatedEmbedding(nn.Module):
    """Wraps a ``FieldEmbedding``: each field's output times its per-dimension gates."""

    def __init__(self, inner: nn.Module, gates: nn.ParameterList) -> None:
        super().__init__()
        self.inner = inner
        self.gates = gates
        self.names, self.dims = list(inner.names), list(inner.dims)

    def forward(self, batch: Batch) -> list[torch.Tensor]:
        return [e * g for e, g in zip(self.inner(batch), self.gates, strict=True)]

    def embedding_parameters(self) -> int:
        return int(self.inner.embedding_parameters())


class UMECNet(nn.Module):
    """The spec's model with dimension and neuron gates, and its resource ``R(gates)``."""

    def __init__(self, schema: Schema, spec: ArchSpec, budget: float) -> None:
        super().__init__()
        self.spec = spec
        self.model = build_model(schema, spec)
        self.layers = hidden_layers(self.model)
        if not self.layers:
            raise SearchError("UMEC needs a spec with an MLP (it prunes its neurons)")
        emb = self.model.embedding
        self.model.one_lookup = False
        self.dim_gates = nn.ParameterList(nn.Parameter(torch.ones(d)) for d in emb.dims)
        self.neuron_gates = nn.ParameterList(nn.Parameter(torch.ones(la.linear.out_features))
                                             for la in self.layers)
        # a field's parameters per embedding dimension (its table's rows)
        self.rows = [self._field_params(emb, n) / d for n, d in zip(emb.names, emb.dims,
                                                                   strict=True)]
        self.model.embedding = DimGatedEmbedding(emb, self.dim_gates)
        relus = [m for m in self.model.mlp.net if isinstance(m, nn.ReLU)]
        for relu, gate in zip(relus, self.neuron_gates, strict=True):
            relu.register_forward_hook(lambda _m, _i, out, g=gate: out * g)
        self.budget = budget
        self.dual = 0.0
        self.derived_resource: float | None = None  # R of the derived 0/1 gates
        with torch.no_grad():
            self.dense = float(self.resource_count())

    @staticmethod
    def _field_params(emb: nn.Module, name: str) -> float:
        """Parameters of one field's embedding (its rows of a shared table, or its module)."""
        for group, slots in enumerate(emb._group_slots):
            for k, (n, _) in enumerate(slots):
                if n == name:
                    offsets = getattr(emb, f"offsets_{emb.group_dims[group]}").tolist()
                    end = offsets[k + 1] if k + 1 < len(offsets) else \
                        emb.tables[group].weight.shape[0]
                    return float((end - offsets[k]) * emb.group_dims[group])
        for container in (emb.pruned, emb.sequences, emb.numericals):
            if name in container:
                return float(sum(p.numel() for p in container[name].parameters()))
        return 0.0

    def forward(self, batch: Batch) -> torch.Tensor:
        return self.model(batch)

    def gate_parameters(self) -> list[nn.Parameter]:
        return [*self.dim_gates, *self.neuron_gates]

    def weight_parameters(self) -> list[nn.Parameter]:
        gates = {id(p) for p in self.gate_parameters()}
        return [p for p in self.parameters() if id(p) not in gates]

    def resource_count(self) -> torch.Tensor:
        emb = sum(r * g.sum() for r, g in zip(self.rows, self.dim_gates, strict=True))
        width = sum(g.sum() for g in self.dim_gates)
        extra_in = self.layers[0].linear.in_features - sum(g.numel() for g in self.dim_gates)
        mlp = torch.zeros(())
        prev = width + extra_in
        for gate in self.neuron_gates:
            n = gate.sum()
            mlp = mlp + prev * n
            prev = n
        return emb + mlp + prev  # + the read-out's weights from the last hidden layer

    def resource(self) -> torch.Tensor:
        return self.resource_count() / self.dense

    def regularization(self) -> torch.Tensor:
        return self.model.regularization() + self.dual * (self.resource() - self.budget)


class MinimaxStep(TrainHook):
    """After each weight step: an Adam step of the gates on the same batch's gradients,
    their projection into [0, 1], and lambda's ascent step."""

    def __init__(self, net: UMECNet, gate_lr: float, dual_lr: float) -> None:
        self.net = net
        self.optimizer = torch.optim.Adam(net.gate_parameters(), lr=gate_lr)
        self.dual_lr = dual_lr
        self.history: list[float] = []

    def on_step(self, trainer: Trainer, model: nn.Module, step: int, batch: Batch,
                loss: torch.Tensor) -> None:
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        with torch.no_grad():
            for g in self.net.gate_parameters():
                g.clamp_(0.0, 1.0)
            r = float(self.net.resource())
        self.net.dual = max(0.0, self.net.dual + self.dual_lr * (r - self.net.budget))
        self.history.append(r)


def derive(net: UMECNet, spec: ArchSpec, schema: Schema) -> ArchSpec:
    """Dimensions and neurons with a positive gate, then the smallest gates dropped until
    the resource fits the budget (at least one dimension per field and neuron per layer)."""
    dims = [(g.detach() > 0).clone() for g in net.dim_gates]
    neurons = [(g.detach() > 0).clone() for g in net.neuron_gates]

    def hard() -> float:
        with torch.no_grad():
            saved = [g.detach().clone() for g in net.gate_parameters()]
            for g, keep in zip(net.gate_parameters(), [*dims, *neurons], strict=True):
                g.copy_(keep.float())
            r = float(net.resource())
            for g, v in zip(net.gate_parameters(), saved, strict=True):
                g.copy_(v)
        return r

    order = sorted(((float(g.detach()[i]), k, i)
                    for k, g in enumerate(net.gate_parameters())
                    for i in range(g.numel())), key=lambda t: t[0])
    masks = [*dims, *neurons]
    for _value, k, i in order:
        if hard() <= net.budget:
            break
        if masks[k][i] and int(masks[k].sum()) > 1:
            masks[k][i] = False
    net.derived_resource = hard()
    names = net.model.embedding.names
    field_dims = {n: int(m.sum()) for n, m in zip(names, dims, strict=True)}
    out = spec.copy(mlp=[int(m.sum()) for m in neurons])
    out.field_dims = {**spec.field_dims, **{n: d for n, d in field_dims.items()
                                            if d != spec.dim_of(n)}}
    return out.validate(schema)


def parse_budgets(ctx: SearchContext) -> list[float]:
    fixed = ctx.options.get("budget")
    raw = fixed if fixed is not None else ctx.options.get("budgets", "0.5,0.3,0.2")
    items = raw.split(",") if isinstance(raw, str) else (raw if isinstance(raw, list | tuple)
                                                          else [raw])
    try:
        budgets = sorted({float(x) for x in items}, reverse=True)
    except (TypeError, ValueError) as e:
        raise SearchError(f"option budgets/budget: {e}") from e
    if not budgets or not all(0 < b < 1 for b in budgets):
        raise SearchError(f"budgets must lie in (0, 1), got {raw!r}")
    return budgets


@register_method
class UMEC(Method):
    name = "umec"
    component = "comprehensive"
    strategies = ("gradient",)
    decides = ("field_dims", "mlp")

    def search(self, ctx: SearchContext) -> StageResult:
        strategy = self.resolve_strategy(ctx)
        t0 = time.perf_counter()
        schema, ds = ctx.dataset.schema, ctx.dataset
        budgets = parse_budgets(ctx)
        epochs = option(ctx, "search_epochs", ctx.train.epochs, int)
        if ctx.fast:  # one constrained run of one epoch
            budgets, epochs = budgets[-1:], 1
        gate_lr = option(ctx, "gate_lr", 1e-2)
        dual_lr = option(ctx, "dual_lr", 0.1)
        tolerance = option(ctx, "tolerance", 0.002)
        rows = option(ctx, "latency_rows", 1024, int)
        if epochs < 1 or gate_lr <= 0 or dual_lr <= 0 or tolerance < 0 or rows < 1:
            raise SearchError(f"UMEC needs search_epochs >= 1, gate_lr > 0, dual_lr > 0, "
                              f"tolerance >= 0 and latency_rows >= 1; got {epochs}, {gate_lr}, "
                              f"{dual_lr}, {tolerance}, {rows}")
        spec = ctx.spec
        if spec.controller is not None or spec.dag is not None:
            raise SearchError("UMEC prunes a spec's embeddings and MLP; it cannot take an AdaFS "
                              "controller or a block DAG")
        config = replace(ctx.train, seed=ctx.seed, epochs=epochs)
        hooks: list[TrainHook] = [TimeLimit(ctx.remaining)]
        torch.manual_seed(ctx.seed)
        dense = build_model(schema, spec)
        try:
            if not hidden_layers(dense):
                raise ValueError("the spec has no MLP (UMEC prunes its neurons)")
        except ValueError as e:
            raise SearchError(f"UMEC: {e}") from e
        fit = Trainer(config, hooks).fit(dense, ds.train, ds.valid)
        batch = ds.valid.batch(slice(0, min(rows, len(ds.valid))))
        points: list[dict[str, Any]] = [{
            "sparsity": 0.0, "budget": 1.0, "valid_auc": fit.valid["auc"],
            "valid_logloss": fit.valid["logloss"], "mlp": list(spec.mlp),
            "field_dims": {}, "params": count_parameters(dense)["total"],
            "embedding_bytes": count_bytes(dense)["embedding"]}]
        specs: dict[float, ArchSpec] = {}
        for budget in budgets:
            if ctx.out_of_budget():
                break
            torch.manual_seed(ctx.seed)
            net = UMECNet(schema, spec, budget)
            step = MinimaxStep(net, gate_lr, dual_lr)
            trainer = Trainer(config, [step, *hooks])
            result = trainer.fit(net, ds.train, ds.valid, parameters=net.weight_parameters())
            derived = derive(net, spec, schema)
            sparsity = round(1.0 - budget, 6)
            specs[sparsity] = derived
            torch.manual_seed(ctx.seed)
            built = build_model(schema, derived)
            times = latency({"dense": build_model(schema, spec), "pruned": built}, batch)
            points.append({
                "sparsity": sparsity, "budget": budget, "valid_auc": result.valid["auc"],
                "valid_logloss": result.valid["logloss"], "mlp": list(derived.mlp),
                "field_dims": dict(derived.field_dims), "spec": derived.to_dict(),
                "resource_end": round(step.history[-1], 4) if step.history else None,
                "resource_derived": round(float(net.derived_resource or 0.0), 4),
                "dual": round(net.dual, 4), "params": count_parameters(built)["total"],
                "embedding_bytes": count_bytes(built)["embedding"],
                "latency_ms": times["pruned"], "dense_latency_ms": times["dense"],
                "speedup": round(times["dense"] / max(times["pruned"], 1e-9), 3)})
        if not specs:
            raise SearchError("UMEC's budget ran out before any constrained run")
        chosen = choose_level(points, tolerance, ctx.options.get("budget") is not None)
        out = (specs[chosen] if chosen in specs else spec).copy()
        seconds = time.perf_counter() - t0
        out.record(self.name, strategy, list(self.decides), seconds,
                   budget=round(1.0 - chosen, 6))
        return StageResult(
            method=self.name, strategy=strategy, spec=out,
            dims={n: float(out.dim_of(n)) for n in out.used_fields(schema)},
            bytes=count_bytes(build_model(schema, out))["embedding"], seconds=seconds,
            extra={"budget_curve": points, "chosen_budget": round(1.0 - chosen, 6),
                   "latency_rows": len(batch), "tolerance": tolerance})
