"""Pre-trained weights carried from a source-domain model to a target-domain model.

Each domain's schema is fitted on its own training rows, so the same value can have another
id in each (and the target has values the source never saw: MovieLens's target users). A
target model is given the source model's weights: every embedding row of a value both
vocabularies hold is the source's row for that value, a value only the target knows starts
from the source's out-of-vocabulary row (what the pre-trained model would have used for it),
and the reserved rows (padding, out-of-vocabulary, missing) are the source's own. Every
other tensor (numerical encoders, MLP, interaction layers, head) is copied as it is, which
needs the same fields and the same spec in both domains.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from autodrs.data.schema import FIRST_ID, MISSING, OOV, PAD, Field, Schema
from autodrs.models.builder import CTRModel
from autodrs.nn.embedding import FieldEmbedding
from autodrs.search.base import SearchError

# parts of a CTRModel a transfer cannot carry over field by field (or that the mixing of
# AutoFT does not cover): a spec with any of them is refused with its name
UNSUPPORTED_PARTS = ("controller", "dag", "functions", "higher", "groups", "hadamard",
                     "personal", "sequence")


@dataclass
class Carried:
    """What ``carry_weights`` did: per categorical field, the target values whose rows came
    from the source and those that started from its out-of-vocabulary row."""

    shared: dict[str, int] = field(default_factory=dict)
    new: dict[str, int] = field(default_factory=dict)


def check_transferable(model: nn.Module) -> CTRModel:
    """``model`` as a CTRModel whose weights can be carried between domains, or a clear
    error naming what stands in the way."""
    if not isinstance(model, CTRModel):
        raise SearchError(f"transfer needs a single-task CTR model, got {type(model).__name__}")
    spec = model.spec
    for part in UNSUPPORTED_PARTS:
        if getattr(model, part, None) is not None:
            raise SearchError(f"transfer does not support a spec with a {part} part; use a "
                              "plain backbone (deepfm, dnn, widedeep, ipnn, dcnv2, autoint)")
    for name in ("crosses", "pruning", "linear_pruning", "anchors", "vocab_limits"):
        if getattr(spec, name, None):
            raise SearchError(f"transfer does not support a spec with {name}: the domains' "
                              "ids differ, so those tables cannot be carried over")
    if len(model.project):
        raise SearchError("transfer needs one embedding dim for every field (the spec sets "
                          f"field_dims {dict(spec.field_dims)})")
    return model


def id_map(source: Field, target: Field) -> torch.Tensor:
    """For every target id of a field, the source id of the same value (the source's
    out-of-vocabulary id for a value it does not hold)."""
    if source.kind != target.kind:
        raise SearchError(f"field {target.name!r} is {target.kind} in the target domain but "
                          f"{source.kind} in the source")
    if source.hash_buckets or target.hash_buckets:
        if source.hash_buckets != target.hash_buckets or source.hash != target.hash:
            raise SearchError(f"field {target.name!r} is hashed differently in the two "
                              "domains; give both the same --hash-threshold")
        return torch.arange(target.vocab_size)
    ids = {v: k + FIRST_ID for k, v in enumerate(source.vocab or [])}
    mapped = [PAD, OOV, MISSING] + [ids.get(v, OOV) for v in target.vocab or []]
    return torch.tensor(mapped, dtype=torch.long)


def table_rows(emb: FieldEmbedding) -> dict[str, tuple[nn.Embedding, int, int]]:
    """Where each categorical or sequence field's rows lie: its table, first row and row
    count (fields of one dim share a table, one block of rows each)."""
    out: dict[str, tuple[nn.Embedding, int, int]] = {}
    for group, slots in enumerate(emb._group_slots):
        table = emb.tables[group]
        offsets = getattr(emb, f"offsets_{emb.group_dims[group]}").tolist()
        ends = [*offsets[1:], table.num_embeddings]
        for (name, _), start, end in zip(slots, offsets, ends, strict=True):
            out[name] = (table, start, end - start)
    for name, table in emb.sequences.items():
        out[name] = (table, 0, table.num_embeddings)
    return out


@torch.no_grad()
def _carry_embedding(src: FieldEmbedding, src_schema: Schema, dst: FieldEmbedding,
                     dst_schema: Schema, carried: Carried | None) -> None:
    if src.names != dst.names:
        raise SearchError(f"the domains' models embed other fields: source {src.names}, "
                          f"target {dst.names}")
    src_rows, dst_rows = table_rows(src), table_rows(dst)
    for name, (table, start, size) in dst_rows.items():
        s_table, s_start, _ = src_rows[name]
        index = id_map(src_schema.field(name), dst_schema.field(name))
        table.weight[start:start + size] = s_table.weight[s_start + index]
        if carried is not None and dst_schema.field(name).kind == "categorical":
            known = int((index[FIRST_ID:] != OOV).sum())
            carried.shared[name] = known
            carried.new[name] = int(size - FIRST_ID - known)
    for name, module in dst.numericals.items():
        module.load_state_dict(src.numericals[name].state_dict())


def carry_weights(source: CTRModel, source_schema: Schema, target: CTRModel,
                  target_schema: Schema) -> Carried:
    """Give ``target`` (built over the target schema) the weights of ``source`` (trained
    over the source schema), value by value for the embedding tables; returns what was
    shared."""
    check_transferable(source)
    check_transferable(target)
    tables = {id(p) for emb in _embeddings(target) for p in emb.parameters()}
    src_params = dict(source.named_parameters())
    with torch.no_grad():
        for name, p in target.named_parameters():
            if id(p) in tables:
                continue
            s = src_params.get(name)
            if s is None or s.shape != p.shape:
                raise SearchError(f"the domains' models differ at {name} (source "
                                  f"{None if s is None else tuple(s.shape)}, target "
                                  f"{tuple(p.shape)}); transfer needs the same spec")
            p.copy_(s)
        src_buffers = dict(source.named_buffers())
        for name, b in target.named_buffers():
            if name in src_buffers and src_buffers[name].shape == b.shape and (
                    b.is_floating_point()):  # batch-norm statistics
                b.copy_(src_buffers[name])
    carried = Carried()
    for k, (s_emb, d_emb) in enumerate(zip(_embeddings(source), _embeddings(target),
                                           strict=True)):
        _carry_embedding(s_emb, source_schema, d_emb, target_schema,
                         carried if k == 0 else None)
    return carried


def _embeddings(model: CTRModel) -> list[FieldEmbedding]:
    """The model's field embedding, then its first-order weights (when it has them)."""
    found = [model.embedding]
    if model.linear is not None:
        found.append(model.linear.weights)
    return found
