"""Block DAGs: a model's interaction part written as a graph of blocks over the embeddings
(AutoCTR, Song et al., KDD 2020; AutoPI, Meng et al., SIGIR 2021).

``spec.dag`` holds the graph as JSON::

    {"nodes": [{"id": "b0", "type": "fm", "inputs": ["embeddings"], "label": "FM"},
               {"id": "b1", "type": "mlp", "inputs": ["embeddings", "b0"], "width": 128,
                "label": "MLP 128"}],
     "output": ["b0", "b1"]}

Each block reads ``"embeddings"`` (optionally only the embedded ``fields`` listed) and/or the
outputs of earlier blocks, so the graph is acyclic by construction. Blocks of two kinds:

- vector blocks see the concatenation of their inputs (the selected field embeddings
  flattened, then each earlier block's output): ``mlp`` (``layers`` x Linear(``width``) +
  ReLU) and ``crossnet`` (``layers`` DCN-V2 cross layers, ``x_{l+1} = x_0 * (W x_l + b) +
  x_l``);
- token blocks see a stack of D-dim tokens: the selected field embeddings (projected to the
  spec's ``embed_dim``) plus one learned projection of each earlier block's output:
  ``fm`` (the FM bi-interaction vector ``0.5 ((sum t)^2 - sum t^2)``), ``dot`` (the inner
  products of every token pair, DLRM's dot processor) and ``attention`` (``layers`` of
  AutoInt multi-head self-attention with ``heads`` heads, flattened), ``gin`` (AOANet's
  generalised interaction: each of ``heads`` projections of ``width`` computes the listed
  ``pairs`` with its operation of ``ops``, fused by a weighted sum over the pairs) and
  ``sketch`` (AutoHash: ``order`` count sketches of the listed fields into ``width``
  buckets by the fixed ``hash``, convolved over the buckets: the order-p interactions of
  those fields, compressed). ``gin`` and ``sketch`` blocks read the embeddings only.

The outputs of the ``output`` blocks (and the flat embeddings, if listed) are concatenated
and read out by one linear layer into the logit. Every block must feed the output.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from itertools import combinations
from typing import Any

import torch
from torch import nn

from autodrs.nn.init import init_linear, linear
from autodrs.nn.layers import CrossNetV2, SelfAttentionInteraction
from autodrs.spec import SpecError

EMBEDDINGS = "embeddings"
VECTOR_BLOCKS = ("mlp", "crossnet")
TOKEN_BLOCKS = ("fm", "dot", "attention", "gin", "sketch")
BLOCK_TYPES = ("mlp", "fm", "dot", "crossnet", "attention", "gin", "sketch")
# the operations of a gin head on the projected pair (p_i, p_j): each multiplies the two
# (an additive one would let a pair's gate stand for its fields' first-order effects)
GIN_OPS = ("hadamard", "bilinear", "inner")
# the micro parameters each block type takes, with their defaults
PARAMS: dict[str, dict[str, int]] = {
    "mlp": {"width": 128, "layers": 1},
    "crossnet": {"layers": 1},
    "attention": {"heads": 2, "layers": 1},
    "fm": {},
    "dot": {},
    "gin": {"heads": 2, "width": 8},
    "sketch": {"width": 8, "order": 2},
}
NODE_KEYS = {"id", "type", "inputs", "fields", "label", "width", "layers", "heads", "order",
             "pairs", "ops", "hash", "readout"}
# how an output fm block reaches the logit: "head" (the read-out layer, starting as the
# plain sum) or "sum" (the plain sum, no weights: FM's and DeepFM's FM term)
READOUTS = ("head", "sum")


@dataclass
class Block:
    """One node of a block DAG (see the module docstring)."""

    id: str
    type: str
    inputs: list[str]
    fields: list[str] | None = None
    width: int | None = None
    layers: int | None = None
    heads: int | None = None
    label: str = ""
    order: int | None = None
    pairs: list[list[str]] | None = None  # gin: the pairs it computes (default every pair)
    ops: list[str] | None = None  # gin: one operation per head
    hash: list[list[int]] | None = None  # sketch: a bucket per field, for each of ``order``
    readout: str | None = None  # fm: "head" (default) or "sum" (see READOUTS)

    def param(self, name: str) -> int:
        value = getattr(self, name)
        return int(PARAMS[self.type][name] if value is None else value)

    def sources(self) -> list[str]:
        """The earlier blocks this block reads (its inputs other than the embeddings)."""
        return [i for i in self.inputs if i != EMBEDDINGS]

    def default_label(self) -> str:
        names = {"mlp": "MLP", "fm": "FM", "dot": "Dot", "crossnet": "Cross",
                 "attention": "Attention", "gin": "GIN", "sketch": "Sketch"}
        text = names.get(self.type, self.type)
        if self.type == "mlp":
            text += f" {self.param('width')}" + (f"x{self.param('layers')}"
                                                 if self.param("layers") > 1 else "")
        elif self.type == "crossnet":
            text += f" x{self.param('layers')}"
        elif self.type == "attention":
            text += f" {self.param('heads')}h" + (f"x{self.param('layers')}"
                                                  if self.param("layers") > 1 else "")
        elif self.type == "gin":
            text += f" {'/'.join(self.ops or [])}" + (f" ({len(self.pairs)} pairs)"
                                                     if self.pairs is not None else "")
        elif self.type == "sketch":
            text += f" order {self.param('order')}, {self.param('width')} buckets"
        if self.fields is not None:
            text += f" ({len(self.fields)} fields)"
        return text

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"id": self.id, "type": self.type, "inputs": list(self.inputs)}
        if self.fields is not None:
            out["fields"] = list(self.fields)
        for name in PARAMS.get(self.type, {}):
            out[name] = self.param(name)
        for name in ("pairs", "ops", "hash"):
            if getattr(self, name) is not None:
                out[name] = [list(v) if isinstance(v, list) else v for v in getattr(self, name)]
        if self.readout is not None:
            out["readout"] = self.readout
        out["label"] = self.label or self.default_label()
        return out


@dataclass
class BlockGraph:
    """A block DAG: ``nodes`` in an order where every block reads only earlier ones, and the
    ``output`` blocks whose outputs are read out into the logit (default: the blocks no other
    block reads)."""

    nodes: list[Block]
    output: list[str] = field(default_factory=list)

    @classmethod
    def from_dict(cls, data: Any) -> BlockGraph:
        if not isinstance(data, dict):
            raise SpecError(f"dag must be an object with 'nodes' and 'output', got "
                            f"{type(data).__name__}")
        unknown = sorted(set(data) - {"nodes", "output"})
        if unknown:
            raise SpecError(f"unknown dag keys: {', '.join(unknown)}")
        raw = data.get("nodes")
        if not isinstance(raw, list) or not raw:
            raise SpecError("dag needs a non-empty list of nodes")
        nodes = []
        for k, node in enumerate(raw):
            if not isinstance(node, dict):
                raise SpecError(f"dag node {k} must be an object, got {type(node).__name__}")
            bad = sorted(set(node) - NODE_KEYS)
            if bad:
                raise SpecError(f"dag node {node.get('id', k)!r} has unknown keys: "
                                f"{', '.join(bad)}")
            missing = [key for key in ("id", "type", "inputs") if key not in node]
            if missing:
                raise SpecError(f"dag node {node.get('id', k)!r} needs {', '.join(missing)}")
            nodes.append(Block(**node))
        output = data.get("output")
        if output is None:
            read = {s for n in nodes for s in n.sources()}
            output = [n.id for n in nodes if n.id not in read]
        if not isinstance(output, list):
            raise SpecError("dag output must be a list of block ids")
        return cls(nodes, list(output))

    def to_dict(self) -> dict[str, Any]:
        return {"nodes": [n.to_dict() for n in self.nodes], "output": list(self.output)}

    def validate(self, names: list[str]) -> BlockGraph:
        """Raise ``SpecError`` naming the problem when the graph is not a valid DAG over the
        embedded fields ``names``."""
        known = set(names)
        seen: dict[str, Block] = {}
        for node in self.nodes:
            where = f"dag block {node.id!r}"
            if not isinstance(node.id, str) or not node.id or node.id == EMBEDDINGS:
                raise SpecError(f"dag block id must be a non-empty string other than "
                                f"{EMBEDDINGS!r}, got {node.id!r}")
            if node.id in seen:
                raise SpecError(f"dag block id {node.id!r} is used twice")
            if node.type not in BLOCK_TYPES:
                raise SpecError(f"{where} has unknown type {node.type!r}; choose from "
                                f"{', '.join(BLOCK_TYPES)}")
            if not isinstance(node.inputs, list) or not node.inputs:
                raise SpecError(f"{where} needs a non-empty list of inputs")
            if len(set(node.inputs)) != len(node.inputs):
                raise SpecError(f"{where} lists an input twice")
            for src in node.inputs:
                if src != EMBEDDINGS and src not in seen:
                    raise SpecError(f"{where} reads {src!r}, which is neither "
                                    f"{EMBEDDINGS!r} nor an earlier block")
            if node.fields is not None:
                if EMBEDDINGS not in node.inputs:
                    raise SpecError(f"{where} lists fields but does not read {EMBEDDINGS!r}")
                if not isinstance(node.fields, list) or not node.fields:
                    raise SpecError(f"{where} needs a non-empty list of fields (or none)")
                for name in node.fields:
                    if name not in known:
                        raise SpecError(f"{where} names field {name!r}, which the spec does "
                                        f"not embed; embedded: {names}")
                if len(set(node.fields)) != len(node.fields):
                    raise SpecError(f"{where} lists a field twice")
            for name in ("width", "layers", "heads", "order"):
                value = getattr(node, name)
                if value is None:
                    continue
                if name not in PARAMS[node.type]:
                    raise SpecError(f"{where}: {name} does not apply to {node.type} blocks")
                if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                    raise SpecError(f"{where}: {name} must be an integer >= 1, got {value!r}")
            if node.type in ("gin", "sketch"):
                self.validate_special(node, names)
            elif any(getattr(node, k) is not None for k in ("pairs", "ops", "hash")):
                raise SpecError(f"{where}: pairs, ops and hash apply to gin and sketch blocks")
            if node.readout is not None and (node.type != "fm" or node.readout not in READOUTS):
                raise SpecError(f"{where}: readout applies to fm blocks, one of "
                                f"{', '.join(READOUTS)}; got {node.readout!r}")
            if node.type in ("fm", "dot") and self.tokens(node, names) < 2:
                raise SpecError(f"{where}: a {node.type} block needs at least two tokens "
                                "(fields or inputs) to interact")
            seen[node.id] = node
        if not self.output:
            raise SpecError("dag output lists no blocks")
        if len(set(self.output)) != len(self.output):
            raise SpecError("dag output lists a block twice")
        for key in self.output:
            if key != EMBEDDINGS and key not in seen:
                raise SpecError(f"dag output names {key!r}, which is not a block")
        used = set(self.output) | {s for n in self.nodes for s in n.sources()}
        for node in self.nodes:
            if node.id not in used:
                raise SpecError(f"dag block {node.id!r} feeds no other block and is not an "
                                "output")
        return self

    @staticmethod
    def validate_special(node: Block, names: list[str]) -> None:
        """The checks of gin and sketch blocks (see the module docstring)."""
        where = f"dag {node.type} block {node.id!r}"
        if node.inputs != [EMBEDDINGS]:
            raise SpecError(f"{where} reads the embeddings only")
        fields = node.fields if node.fields is not None else names
        if node.type == "gin":
            if node.hash is not None:
                raise SpecError(f"{where}: hash applies to sketch blocks")
            ops = node.ops
            if (not isinstance(ops, list) or len(ops) != node.param("heads")
                    or any(op not in GIN_OPS for op in ops)):
                raise SpecError(f"{where} needs ops: one of {', '.join(GIN_OPS)} per head "
                                f"({node.param('heads')}), got {ops!r}")
            pairs = node.pairs if node.pairs is not None else list(combinations(fields, 2))
            if not pairs:
                raise SpecError(f"{where} needs at least one pair")
            for pair in pairs:
                if (not isinstance(pair, (list, tuple)) or len(pair) != 2
                        or pair[0] == pair[1] or any(n not in fields for n in pair)):
                    raise SpecError(f"{where}: pair {pair!r} is not two of its fields")
        else:
            if node.pairs is not None or node.ops is not None:
                raise SpecError(f"{where}: pairs and ops apply to gin blocks")
            order, width = node.param("order"), node.param("width")
            table = node.hash
            if (not isinstance(table, list) or len(table) != order
                    or any(not isinstance(row, list) or len(row) != len(fields)
                           or any(isinstance(b, bool) or not isinstance(b, int)
                                  or not 0 <= b < width for b in row) for row in table)):
                raise SpecError(f"{where} needs hash: {order} lists of a bucket in "
                                f"0..{width - 1} per field ({len(fields)})")

    @staticmethod
    def tokens(node: Block, names: list[str]) -> int:
        fields = len(node.fields if node.fields is not None else names)
        return (fields if EMBEDDINGS in node.inputs else 0) + len(node.sources())


class _BlockModule(nn.Module):
    """Assembles a block's input from the embeddings and earlier outputs."""

    def __init__(self, block: Block, names: list[str], dims: list[int],
                 source_dims: list[int], common: int, tokens: bool) -> None:
        super().__init__()
        selected = block.fields if block.fields is not None else names
        index = {n: i for i, n in enumerate(names)}
        self.reads_embeddings = EMBEDDINGS in block.inputs
        self.field_index = [index[n] for n in selected] if self.reads_embeddings else []
        self.register_buffer("fields", torch.tensor(self.field_index, dtype=torch.long),
                             persistent=False)
        self.sources = block.sources()
        self.tokens = tokens
        if tokens:
            # each earlier output becomes one token of the common dim
            self.to_token = nn.ModuleList(linear(d, common) for d in source_dims)
            self.n_tokens = len(self.field_index) + len(source_dims)
            self.in_dim = common
        else:
            self.in_dim = sum(dims[i] for i in self.field_index) + sum(source_dims)

    def gather(self, flat: list[torch.Tensor], stacked: torch.Tensor | None,
               outputs: dict[str, torch.Tensor]) -> torch.Tensor:
        if self.tokens:
            parts = []
            if self.field_index:
                assert stacked is not None
                parts.append(stacked.index_select(1, self.fields))
            for proj, src in zip(self.to_token, self.sources, strict=True):
                parts.append(proj(outputs[src]).unsqueeze(1))
            return torch.cat(parts, dim=1)
        parts = [flat[i] for i in self.field_index] + [outputs[s] for s in self.sources]
        return torch.cat(parts, dim=1)


class MLPBlock(_BlockModule):
    """``layers`` x Linear(``width``) (+ batch norm) + ReLU (+ dropout): the layers of the
    backbones' MLP (``autodrs.nn.layers.MLP``), with the spec's dropout and batch norm."""

    def __init__(self, block: Block, *args: Any, dropout: float = 0.0,
                 batch_norm: bool = False) -> None:
        super().__init__(block, *args, tokens=False)
        layers: list[nn.Module] = []
        d = self.in_dim
        for _ in range(block.param("layers")):
            layers.append(linear(d, block.param("width")))
            if batch_norm:
                layers.append(nn.BatchNorm1d(block.param("width")))
            layers.append(nn.ReLU())
            if dropout:
                layers.append(nn.Dropout(dropout))
            d = block.param("width")
        self.net = nn.Sequential(*layers)
        self.out_dim = d

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class CrossBlock(_BlockModule):
    def __init__(self, block: Block, *args: Any) -> None:
        super().__init__(block, *args, tokens=False)
        self.net = CrossNetV2(self.in_dim, block.param("layers"))
        self.out_dim = self.in_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class FMBlock(_BlockModule):
    def __init__(self, block: Block, *args: Any) -> None:
        super().__init__(block, *args, tokens=True)
        self.out_dim = self.in_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 0.5 * (x.sum(1).pow(2) - x.pow(2).sum(1))


class DotBlock(_BlockModule):
    def __init__(self, block: Block, *args: Any) -> None:
        super().__init__(block, *args, tokens=True)
        pairs = list(combinations(range(self.n_tokens), 2))
        self.register_buffer("left", torch.tensor([p[0] for p in pairs], dtype=torch.long),
                             persistent=False)
        self.register_buffer("right", torch.tensor([p[1] for p in pairs], dtype=torch.long),
                             persistent=False)
        self.out_dim = len(pairs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x.index_select(1, self.left) * x.index_select(1, self.right)).sum(-1)


class AttentionBlock(_BlockModule):
    def __init__(self, block: Block, *args: Any) -> None:
        super().__init__(block, *args, tokens=True)
        self.net = SelfAttentionInteraction(self.in_dim, self.n_tokens, block.param("layers"),
                                            block.param("heads"))
        self.out_dim = self.net.out_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def gin_operation(op: str, left: torch.Tensor, right: torch.Tensor,
                  bilinear: torch.Tensor) -> torch.Tensor:
    """One gin head's operation on projected pairs ``[B, P, w]`` (``bilinear``: ``[w, w]``)."""
    if op == "hadamard":
        return left * right
    if op == "bilinear":
        return left * (right @ bilinear)
    # inner: <p_i, p_j> on every unit (the inner-product models' scalar, at the head's width)
    return (left * right).mean(-1, keepdim=True).expand_as(left)


def sketch_power(tokens: torch.Tensor, assign: list[torch.Tensor]) -> torch.Tensor:
    """The order-p count sketch of ``tokens [B, F, d]``: one sketch per ``assign`` matrix
    ``[F, buckets]`` (signed weights of each field's bucket), multiplied in the Fourier
    domain over the buckets (their circular convolution), ``[B, buckets * d]``."""
    buckets = assign[0].shape[1]
    spectrum = None
    for a in assign:
        f = torch.fft.rfft(torch.einsum("bfd,fk->bkd", tokens, a), dim=1)
        spectrum = f if spectrum is None else spectrum * f
    return torch.fft.irfft(spectrum, n=buckets, dim=1).flatten(1)


class GINBlock(_BlockModule):
    """AOANet's projection - interaction - fusion with each head's searched operation."""

    def __init__(self, block: Block, names: list[str], *args: Any) -> None:
        super().__init__(block, names, *args, tokens=True)
        fields = block.fields if block.fields is not None else names
        pairs = block.pairs if block.pairs is not None else list(combinations(fields, 2))
        self.ops = list(block.ops or [])
        heads, width = block.param("heads"), block.param("width")
        self.project = nn.Parameter(torch.randn(heads, self.in_dim, width) / self.in_dim ** 0.5)
        self.bilinear = nn.Parameter(torch.eye(width).repeat(heads, 1, 1))
        self.fusion = nn.Parameter(torch.ones(heads, len(pairs)))
        self.register_buffer("left", torch.tensor([fields.index(p[0]) for p in pairs]),
                             persistent=False)
        self.register_buffer("right", torch.tensor([fields.index(p[1]) for p in pairs]),
                             persistent=False)
        self.out_dim = heads * width

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        projected = torch.einsum("bfd,hdw->bhfw", x, self.project)
        out = []
        for h, op in enumerate(self.ops):
            p = projected[:, h]
            pair = gin_operation(op, p.index_select(1, self.left), p.index_select(1, self.right),
                                 self.bilinear[h])
            out.append(torch.einsum("bpw,p->bw", pair, self.fusion[h]))
        return torch.cat(out, dim=1)


class SketchBlock(_BlockModule):
    """AutoHash's order-p count sketch of its fields by a fixed hash, with trainable signed
    weights per (sketch, field) starting at 1, on batch-normalised embeddings (no affine:
    a p-th power of raw embeddings, which start near 1e-4, would give no gradient)."""

    def __init__(self, block: Block, *args: Any) -> None:
        super().__init__(block, *args, tokens=True)
        order, width = block.param("order"), block.param("width")
        onehot = torch.zeros(order, len(self.field_index), width)
        for t, row in enumerate(block.hash or []):
            onehot[t, torch.arange(len(row)), torch.tensor(row)] = 1.0
        self.register_buffer("onehot", onehot, persistent=False)
        self.weight = nn.Parameter(torch.ones(order, len(self.field_index)))
        self.norm = nn.BatchNorm1d(len(self.field_index) * self.in_dim, affine=False)
        self.out_dim = width * self.in_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.norm(x.flatten(1)).view(x.shape)
        return sketch_power(x, [self.onehot[t] * self.weight[t].unsqueeze(1)
                                for t in range(self.onehot.shape[0])])


BLOCK_MODULES: dict[str, type[_BlockModule]] = {
    "mlp": MLPBlock, "crossnet": CrossBlock, "fm": FMBlock, "dot": DotBlock,
    "attention": AttentionBlock, "gin": GINBlock, "sketch": SketchBlock,
}


class BlockDAG(nn.Module):
    """The module of a block DAG: embeddings (one ``[B, d_f]`` tensor per field) -> logit.
    MLP blocks take the spec's ``dropout`` and ``batch_norm``, as the backbones' MLP does."""

    def __init__(self, graph: BlockGraph, names: list[str], dims: list[int],
                 common: int, dropout: float = 0.0, batch_norm: bool = False) -> None:
        super().__init__()
        graph.validate(names)
        self.graph = graph
        self.names = list(names)
        self.project = nn.ModuleDict({n: linear(d, common, bias=False)
                                      for n, d in zip(names, dims, strict=True) if d != common})
        self.needs_tokens = any(n.type in TOKEN_BLOCKS and EMBEDDINGS in n.inputs
                                for n in graph.nodes)
        self.blocks = nn.ModuleDict()
        out_dims: dict[str, int] = {EMBEDDINGS: sum(dims)}
        for node in graph.nodes:
            extra = {"dropout": dropout, "batch_norm": batch_norm} if node.type == "mlp" else {}
            module = BLOCK_MODULES[node.type](node, names, dims,
                                              [out_dims[s] for s in node.sources()], common,
                                              **extra)
            self.blocks[node.id] = module
            out_dims[node.id] = module.out_dim
        # an output fm block with readout "sum" adds its plain sum to the logit, as FM's and
        # DeepFM's FM term (no read-out weights); the other outputs go to the read-out layer
        by_id = {n.id: n for n in graph.nodes}
        self.summed = [k for k in graph.output
                       if k != EMBEDDINGS and by_id[k].type == "fm" and by_id[k].readout == "sum"]
        self.output = [k for k in graph.output if k not in self.summed]
        # every linear layer of the DAG (MLP blocks, projections, read-out) starts as the
        # backbones' do, xavier-normal with zero biases (autodrs.nn.init): with PyTorch's
        # default a DeepFM-shaped DAG lost AUC against DeepFM (docs/blocks.md)
        self.head = (init_linear(nn.Linear(sum(out_dims[k] for k in self.output), 1))
                     if self.output else None)
        # an output FM or dot block is read out as the plain sum at first (an FM term, as in
        # FM / DeepFM): a small random read-out would scale its gradient into the
        # embeddings down and slow it to learn (measured: a DeepFM-shaped DAG lagged DeepFM)
        with torch.no_grad():
            start = 0
            for key in self.output if self.head is not None else []:
                if key != EMBEDDINGS and isinstance(self.blocks[key], (FMBlock, DotBlock)):
                    self.head.weight[0, start:start + out_dims[key]] = 1.0
                start += out_dims[key]

    def forward(self, embeddings: list[torch.Tensor],
                logit: torch.Tensor | None = None) -> torch.Tensor:
        """The DAG's logit, added to ``logit`` (the first-order term's) when given: the
        summed FM terms first, then the read-out, in the order a backbone adds its towers
        (DeepFM: first-order + FM, then the MLP's head), so a DAG of its shape computes
        the same floats and trains along the same path."""
        stacked = None
        if self.needs_tokens:
            stacked = torch.stack([
                self.project[n](e) if n in self.project else e
                for n, e in zip(self.names, embeddings, strict=True)
            ], dim=1)
        outputs: dict[str, torch.Tensor] = {}
        for key, block in self.blocks.items():
            outputs[key] = block(block.gather(embeddings, stacked, outputs))
        if EMBEDDINGS in self.output:
            outputs[EMBEDDINGS] = torch.cat(embeddings, dim=1)
        for key in self.summed:
            term = outputs[key].sum(1)
            logit = term if logit is None else logit + term
        if self.head is not None:
            head = self.head(torch.cat([outputs[k] for k in self.output], dim=1)).squeeze(1)
            logit = head if logit is None else logit + head
        assert logit is not None
        return logit


def explicit_pairs(graph: BlockGraph, names: list[str]) -> set[frozenset[str]]:
    """The field pairs a DAG's blocks multiply explicitly: a gin block's pairs, and every two
    fields an order-2 sketch block or an fm, dot or attention block reads from the
    embeddings (mlp and crossnet blocks are left out, as the MLP of DeepFM is; higher-order
    sketches model triples and beyond)."""
    out: set[frozenset[str]] = set()
    for node in graph.nodes:
        fields = node.fields if node.fields is not None else names
        if node.type == "gin":
            out |= {frozenset(p) for p in (node.pairs if node.pairs is not None
                                           else combinations(fields, 2))}
        elif node.type in ("sketch", "fm", "dot", "attention") and EMBEDDINGS in node.inputs:
            if node.type != "sketch" or node.param("order") == 2:
                out |= {frozenset(p) for p in combinations(fields, 2)}
    return out
