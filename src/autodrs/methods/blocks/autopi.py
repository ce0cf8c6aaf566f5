"""AutoPI (Meng et al.; SIGIR 2021, "A General Method for Automatic Discovery of Powerful
Interactions in CTR Prediction"): a DARTS-style search over an interaction cell and an
ensemble cell.

**Interaction cell.** Node 0 is the field embeddings; intermediate nodes 1..N are H-dim
states, node j the sum over its incoming edges (i -> j, i < j) of a softmax mixture of
operators, ``x_j = sum_i sum_o softmax(alpha_ij)_o P_o(o(x_i))``, with ``o`` in skip, dot
(inner products of every token pair), cross (a DCN-V2 cross layer), attention (AutoInt
self-attention), mlp (Linear + ReLU) and zero, and ``P_o`` a learned projection to H. The
operators are the block modules of ``autodrs.models.dag``: token operators see the field
embeddings plus the source state as one more token, vector operators the source state (or
the flat embeddings from node 0). The cell's output is the concatenation of its nodes.

**Ensemble cell.** A softmax mixture ``beta`` of ways to combine the cell's output h with a
deep MLP over the embeddings e: ``parallel`` (``w^T h + MLP(e)``, DeepFM-like) and
``stacked`` (``MLP([e; h])``, PNN-like); ``interaction`` (``w^T h`` alone) on request.

**Search** (DARTS, first order, bi-level): weights take Adam steps on training batches,
``alpha`` and ``beta`` an Adam step on a validation batch every ``arch_every`` steps
(``run_gradient``). **Derivation** (DARTS's rule): every edge keeps its strongest operator
other than zero, every node its two strongest edges; the ensemble is ``argmax beta``. The
discrete cell is written as a block DAG (a node's kept edges become blocks whose outputs
its readers concatenate, where the supernet summed them) and retrained from scratch.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from autodrs.data.dataset import Batch
from autodrs.data.schema import Schema
from autodrs.methods.blocks.autoctr import base_dag_spec
from autodrs.methods.blocks.common import dag_result
from autodrs.methods.interaction.common import option
from autodrs.models.backbones import DEFAULT_MLP
from autodrs.models.builder import LinearTerm
from autodrs.models.dag import BLOCK_MODULES, EMBEDDINGS, Block, BlockGraph
from autodrs.nn.embedding import FieldEmbedding
from autodrs.nn.layers import MLP
from autodrs.search.base import (
    OBJECTIVES,
    Method,
    SearchContext,
    SearchError,
    SearchSpace,
    StageResult,
    Supernet,
    no_result,
    register_method,
)
from autodrs.search.blackbox import run_blackbox
from autodrs.search.gradient import run_gradient
from autodrs.spec import ArchSpec

if TYPE_CHECKING:
    import optuna

OPERATORS = ("skip", "dot", "crossnet", "attention", "mlp", "zero")
BLOCK_OF = {"dot": "dot", "crossnet": "crossnet", "attention": "attention", "mlp": "mlp"}
ENSEMBLES = ("parallel", "stacked", "interaction")
# the ensemble cell combines the interactions *with* the MLP; ``interaction`` alone (no MLP)
# is offered only on request: a linear read-out of the cell cannot model a non-monotone
# numerical field, which DARTS's early validation steps (an untrained MLP) do not show
DEFAULT_ENSEMBLES = ("parallel", "stacked")
TOKEN_OPS = ("dot", "attention")
KEEP_EDGES = 2


def edge_key(j: int, i: int) -> str:
    return f"{j}<-{i}"


def edges(nodes: int) -> list[tuple[int, int]]:
    """Every edge (j, i) of the cell: node j reads node i < j."""
    return [(j, i) for j in range(1, nodes + 1) for i in range(j)]


class MixedEdge(nn.Module):
    """One edge: every operator on the source, projected to the state width H."""

    def __init__(self, j: int, i: int, names: list[str], dims: list[int], common: int,
                 width: int) -> None:
        super().__init__()
        self.source = EMBEDDINGS if i == 0 else f"s{i}"
        self.ops = nn.ModuleDict()
        self.proj = nn.ModuleDict()
        flat = sum(dims)
        for op in OPERATORS:
            if op == "zero" or (op == "skip" and i > 0):
                continue
            if op == "skip":
                self.proj[op] = nn.Linear(flat, width)
                continue
            inputs = [EMBEDDINGS] if i == 0 else (
                [EMBEDDINGS, self.source] if op in TOKEN_OPS else [self.source])
            block = Block(id=f"e{j}_{i}_{op}", type=BLOCK_OF[op], inputs=inputs,
                          width=width if op == "mlp" else None)
            module = BLOCK_MODULES[block.type](block, names, dims,
                                               [width] * len(block.sources()), common)
            self.ops[op] = module
            if module.out_dim != width:
                self.proj[op] = nn.Linear(module.out_dim, width)

    def forward(self, weights: torch.Tensor, embeddings: list[torch.Tensor],
                stacked: torch.Tensor, states: dict[str, torch.Tensor]) -> torch.Tensor:
        total: torch.Tensor | int = 0
        for k, op in enumerate(OPERATORS):
            if op == "zero":
                continue
            if op == "skip":
                x = (self.proj[op](torch.cat(embeddings, dim=1)) if op in self.proj
                     else states[self.source])
            else:
                module = self.ops[op]
                x = module(module.gather(embeddings, stacked, states))
                if op in self.proj:
                    x = self.proj[op](x)
            total = total + weights[k] * x
        assert isinstance(total, torch.Tensor)
        return total


class AutoPISupernet(Supernet):
    """Embeddings -> interaction cell (``alpha``) -> ensemble cell (``beta``) -> logit."""

    def __init__(self, schema: Schema, spec: ArchSpec, nodes: int, width: int,
                 mlp: list[int], ensembles: tuple[str, ...] = DEFAULT_ENSEMBLES) -> None:
        super().__init__()
        self.spec = spec
        self.ensembles = ensembles
        self.embedding = FieldEmbedding(schema, spec)
        names, dims = list(self.embedding.names), list(self.embedding.dims)
        self.names = names
        common = spec.embed_dim
        self.project = nn.ModuleDict({n: nn.Linear(d, common, bias=False)
                                      for n, d in zip(names, dims, strict=True) if d != common})
        self.linear = LinearTerm(schema, spec) if spec.linear else None
        self.bias = nn.Parameter(torch.zeros(())) if self.linear is None else None
        self.nodes = nodes
        self.edge_list = edges(nodes)
        self.edges = nn.ModuleDict({edge_key(j, i): MixedEdge(j, i, names, dims, common, width)
                                    for j, i in self.edge_list})
        self.alpha = nn.Parameter(1e-3 * torch.randn(len(self.edge_list), len(OPERATORS)))
        self.beta = nn.Parameter(1e-3 * torch.randn(len(ensembles)))
        cell = nodes * width
        flat = sum(dims)
        self.read_cell = nn.Linear(cell, 1)
        self.deep = MLP(flat, mlp)
        self.read_deep = nn.Linear(self.deep.out_dim, 1)
        self.stacked_mlp = MLP(flat + cell, mlp)
        self.read_stacked = nn.Linear(self.stacked_mlp.out_dim, 1)
        self.pinned: dict[str, Any] | None = None

    def arch_parameters(self) -> list[nn.Parameter]:
        return [self.alpha, self.beta]

    def weights(self) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.softmax(self.alpha, dim=-1), torch.softmax(self.beta, dim=-1)

    def forward(self, batch: Batch) -> torch.Tensor:
        embeddings = self.embedding(batch)
        stacked = torch.stack([self.project[n](e) if n in self.project else e
                               for n, e in zip(self.names, embeddings, strict=True)], dim=1)
        alpha, beta = self.weights()
        states: dict[str, torch.Tensor] = {}
        for j in range(1, self.nodes + 1):
            total: torch.Tensor | int = 0
            for k, (jj, i) in enumerate(self.edge_list):
                if jj == j:
                    total = total + self.edges[edge_key(j, i)](alpha[k], embeddings, stacked,
                                                               states)
            assert isinstance(total, torch.Tensor)
            states[f"s{j}"] = total
        h = torch.cat([states[f"s{j}"] for j in range(1, self.nodes + 1)], dim=1)
        flat = torch.cat(embeddings, dim=1)
        cell_logit = self.read_cell(h).squeeze(1)
        logit: torch.Tensor | int = 0
        for weight, name in zip(beta, self.ensembles, strict=True):
            if name == "parallel":
                out = cell_logit + self.read_deep(self.deep(flat)).squeeze(1)
            elif name == "stacked":
                out = self.read_stacked(self.stacked_mlp(torch.cat([flat, h], 1))).squeeze(1)
            else:
                out = cell_logit
            logit = logit + weight * out
        base = self.linear(batch) if self.linear is not None else self.bias
        return base + logit

    def derive(self) -> dict[str, Any]:
        """DARTS's rule: per edge the strongest operator but zero, per node the two
        strongest edges; the ensemble by ``argmax beta``."""
        alpha, beta = (w.detach() for w in self.weights())
        zero = OPERATORS.index("zero")
        ops: dict[str, str] = {}
        for j in range(1, self.nodes + 1):
            scored = []
            for k, (jj, i) in enumerate(self.edge_list):
                if jj != j:
                    continue
                strength = alpha[k].clone()
                strength[zero] = -1.0
                best = int(strength.argmax())
                scored.append((float(strength[best]), i, OPERATORS[best]))
            scored.sort(key=lambda s: (-s[0], s[1]))
            kept = {i for _, i, _ in scored[:KEEP_EDGES]}
            for _, i, op in scored:
                ops[edge_key(j, i)] = op if i in kept else "zero"
        return {"ops": ops, "ensemble": self.ensembles[int(beta.argmax())]}

    def edge_strengths(self) -> dict[str, float]:
        """Every (edge, operator) weight, keyed ``"j<-i: op"``."""
        alpha = torch.softmax(self.alpha.detach(), dim=-1)
        return {f"{edge_key(j, i)}: {op}": float(alpha[k, m])
                for k, (j, i) in enumerate(self.edge_list)
                for m, op in enumerate(OPERATORS)}


class InteractionCellSpace(SearchSpace):
    """AutoPI's space: an operator per cell edge and an ensemble; ``apply`` writes the cell
    as a block DAG (see the module docstring)."""

    name = "interaction_cell"

    def __init__(self, schema: Schema, base: ArchSpec, nodes: int, width: int,
                 mlp: list[int], ensembles: tuple[str, ...] = DEFAULT_ENSEMBLES) -> None:
        if nodes < 1 or width < 1 or not mlp or any(w < 1 for w in mlp):
            raise SearchError(f"autopi needs nodes >= 1, width >= 1 and MLP widths >= 1; got "
                              f"nodes={nodes}, width={width}, mlp={mlp}")
        bad = [e for e in ensembles if e not in ENSEMBLES]
        if bad or not ensembles:
            raise SearchError(f"autopi ensembles must be among {', '.join(ENSEMBLES)}; got "
                              f"{list(ensembles)}")
        self.ensembles = tuple(ensembles)
        self.schema = schema
        self.base = base_dag_spec(base)
        self.nodes = nodes
        self.width = width
        self.mlp = list(mlp)

    def suggest(self, trial: optuna.Trial, ctx: SearchContext) -> dict[str, Any]:
        ops = {edge_key(j, i): trial.suggest_categorical(f"op:{edge_key(j, i)}",
                                                         list(OPERATORS))
               for j, i in edges(self.nodes)}
        return {"ops": ops,
                "ensemble": trial.suggest_categorical("ensemble", list(self.ensembles))}

    def graph(self, decision: dict[str, Any]) -> BlockGraph:
        ops = decision["ops"]
        ensemble = decision["ensemble"]
        if ensemble not in ENSEMBLES:
            raise SearchError(f"unknown ensemble {ensemble!r}; choose from {ENSEMBLES}")
        nodes: list[Block] = []
        reps: dict[int, list[str]] = {0: [EMBEDDINGS]}
        for j in range(1, self.nodes + 1):
            rep: list[str] = []
            for i in range(j):
                op = ops.get(edge_key(j, i), "zero")
                if op not in OPERATORS:
                    raise SearchError(f"edge {edge_key(j, i)}: unknown operator {op!r}")
                if op == "zero" or not reps[i]:
                    continue
                if op == "skip":
                    rep += reps[i]
                    continue
                inputs = reps[i] if op not in TOKEN_OPS else [EMBEDDINGS] + reps[i]
                block = Block(id=f"c{j}_{i}", type=BLOCK_OF[op], inputs=_unique(inputs),
                              width=self.width if op == "mlp" else None)
                nodes.append(block)
                rep.append(block.id)
            reps[j] = _unique(rep)
        cell = _unique([r for j in range(1, self.nodes + 1) for r in reps[j]])
        output = list(cell)
        if ensemble != "interaction" or not cell:
            first = [EMBEDDINGS] + (cell if ensemble == "stacked" else [])
            previous = _unique(first)
            for k, w in enumerate(self.mlp):
                block = Block(id=f"d{k}", type="mlp", inputs=previous, width=w)
                nodes.append(block)
                previous = [block.id]
            output = previous if ensemble == "stacked" else cell + previous
        return BlockGraph(nodes, _unique(output))

    def apply(self, spec: ArchSpec, decision: dict[str, Any]) -> ArchSpec:
        out = self.base.copy(dag=self.graph(decision).to_dict(),
                             provenance=list(spec.provenance))
        return out

    def supernet(self, ctx: SearchContext) -> AutoPISupernet:
        torch.manual_seed(ctx.seed)
        return AutoPISupernet(self.schema, self.base, self.nodes, self.width, self.mlp,
                              self.ensembles)


def ensembles_option(ctx: SearchContext) -> tuple[str, ...]:
    raw = ctx.options.get("ensembles", DEFAULT_ENSEMBLES)
    names = raw.split(",") if isinstance(raw, str) else raw
    return tuple(n.strip() for n in names if n.strip())


def _unique(items: list[str]) -> list[str]:
    return list(dict.fromkeys(items))


@register_method
class AutoPI(Method):
    """AutoPI: DARTS over an interaction cell and an ensemble cell (``random``: the same
    space searched by random sampling, the usual NAS baseline).

    Options: ``nodes`` (intermediate cell nodes, 3), ``width`` (state width H, 64),
    ``ensembles`` (comma-separated, default parallel,stacked; interaction adds the cell
    alone),
    ``arch_lr`` (3e-3), ``arch_every`` (weight steps per architecture step, 1), ``epochs``
    (search epochs, 4). The deep MLP of the ensemble takes the spec's MLP widths (DeepFM's
    by default).
    """

    name = "autopi"
    component = "blocks"
    strategies = ("gradient", "random")
    objectives = OBJECTIVES  # with the random strategy (a Pareto front of sampled cells)

    def search(self, ctx: SearchContext) -> StageResult:
        strategy = self.resolve_strategy(ctx)
        t0 = time.perf_counter()
        space = InteractionCellSpace(
            ctx.dataset.schema, ctx.spec, option(ctx, "nodes", 1 if ctx.fast else 3, int),
            option(ctx, "width", 16 if ctx.fast else 64, int),
            list(ctx.spec.mlp) or list(DEFAULT_MLP), ensembles_option(ctx))
        if strategy == "random":
            objectives = self.resolve_objectives(ctx, strategy)
            found = run_blackbox(space, ctx, strategy, method=self.name, objectives=objectives)
            if not found.found:
                return no_result(self.name, strategy, ctx.spec, str(found.reason),
                                 time.perf_counter() - t0, trials=found.trials)
            decision = dict(found.best_decision or {})
            spec = space.apply(ctx.spec, decision)
            extra: dict[str, Any] = {"decision": decision, "best_value": found.best_value}
            if found.pareto is not None:
                extra["pareto_objectives"] = list(objectives)
            stage = dag_result(self.name, strategy, spec, [f"{k}: {v}" for k, v in
                                                           decision["ops"].items()], {},
                               time.perf_counter() - t0, trials=found.trials, extra=extra)
            stage.pareto = found.pareto
            return stage
        arch_lr = option(ctx, "arch_lr", 3e-3)
        every = option(ctx, "arch_every", 1, int)
        if arch_lr <= 0 or every < 1:
            raise SearchError("autopi needs arch_lr > 0 and arch_every >= 1")
        epochs = option(ctx, "epochs", 1 if ctx.fast else min(ctx.train.epochs, 4), int)
        result = run_gradient(space, ctx, mode="bilevel", every=every, arch_lr=arch_lr,
                              epochs=epochs)
        supernet = result.supernet
        assert isinstance(supernet, AutoPISupernet)
        strengths = supernet.edge_strengths()
        ranking = sorted(strengths, key=lambda k: -strengths[k])
        _, beta = supernet.weights()
        return dag_result(
            self.name, strategy, result.spec, ranking, strengths, time.perf_counter() - t0,
            extra={"decision": result.decision, "arch_steps": result.arch_steps,
                   "ensemble_weights": dict(zip(space.ensembles, beta.detach().tolist(),
                                                strict=True)),
                   "stopped_by_budget": result.stopped_by_budget})
