"""Field subsets: a spec restricted to some fields, and one field's encoded column."""

from __future__ import annotations

from dataclasses import replace

import torch

from autodrs.data.dataset import EncodedData
from autodrs.data.schema import Schema
from autodrs.spec import ArchSpec, cross_name


def with_fields(spec: ArchSpec, fields: list[str]) -> ArchSpec:
    """A copy of ``spec`` that uses only ``fields``. Kept interactions that name a dropped
    field are dropped with it, and so are the pruning masks and ANT anchors of dropped
    fields; a controller's top-k is capped at what is left; crosses stay, since they are
    features of their own computed from the raw columns."""
    kept = set(fields)
    out = spec.copy(fields=list(fields),
                    pruning={k: v for k, v in spec.pruning.items() if k in kept},
                    linear_pruning={k: v for k, v in spec.linear_pruning.items() if k in kept},
                    anchors={k: v for k, v in spec.anchors.items() if k in kept})
    if out.interactions is not None:
        available = set(fields) | {cross_name(c) for c in out.crosses}
        out.interactions = [i for i in out.interactions if set(i.fields) <= available]
    if out.controller is not None and out.controller.k is not None:
        embedded = len(fields) + len(out.crosses)
        out.controller = replace(out.controller, k=min(out.controller.k, embedded))
    return out


def in_schema_order(schema: Schema, fields: list[str]) -> list[str]:
    """``fields`` in the schema's order: a subset's model does not depend on how a ranking
    ordered its fields, so the same subset always builds the same model."""
    chosen = set(fields)
    return [f for f in schema.field_names if f in chosen]


def field_column(data: EncodedData, schema: Schema, name: str) -> torch.Tensor:
    """The encoded column of one field: ids ``[N]`` (categorical), values ``[N]``
    (numerical) or padded ids ``[N, L]`` (sequence)."""
    kind = schema.field(name).kind
    if kind == "categorical":
        return data.cat[:, schema.categorical.index(name)]
    if kind == "numerical":
        return data.num[:, schema.numerical.index(name)]
    return data.seq[name]


def permuted(data: EncodedData, schema: Schema, name: str,
             generator: torch.Generator) -> EncodedData:
    """``data`` with the rows of one field's column shuffled (the other columns untouched):
    the field keeps its distribution but loses its link to the label."""
    order = torch.randperm(len(data), generator=generator)
    kind = schema.field(name).kind
    cat, num, seq = data.cat, data.num, dict(data.seq)
    if kind == "categorical":
        i = schema.categorical.index(name)
        cat = cat.clone()
        cat[:, i] = data.cat[order, i]
    elif kind == "numerical":
        i = schema.numerical.index(name)
        num = num.clone()
        num[:, i] = data.num[order, i]
    else:
        seq[name] = data.seq[name][order]
    return EncodedData(cat, num, seq, data.label, data.group)
