"""The chosen architecture in words and tables, read from a result's ``spec`` (an
``ArchSpec`` as JSON) and the data's fields (``result["data"]["fields"]``).

Works on the JSON alone, so a report of an older run still draws: anything the spec does
not hold is left out rather than guessed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from itertools import combinations
from typing import Any

Row = list[str]


@dataclass
class Architecture:
    """What ``describe`` found: a paragraph, and rows for the tables beside it."""

    sentences: list[str] = field(default_factory=list)
    fields: list[Row] = field(default_factory=list)  # field, kind, kept, dim, rows, notes
    pairs: list[Row] = field(default_factory=list)  # pair, function, weight
    towers: list[Row] = field(default_factory=list)  # tower, setting
    training: list[Row] = field(default_factory=list)  # setting, value
    more_pairs: int = 0  # kept pairs not listed (the table is cut at ``MAX_PAIRS``)


MAX_PAIRS = 40


def describe(spec: dict[str, Any], data_fields: dict[str, dict[str, Any]],
             config: dict[str, Any] | None = None) -> Architecture:
    """The architecture of ``spec`` over fields ``{name: {"kind", "vocab_size"}}``;
    ``config`` (the trainer's settings) fills training settings the spec leaves to the
    command."""
    out = Architecture()
    config = config or {}
    names = list(data_fields) or list(spec.get("fields") or [])
    used = list(spec.get("fields") or names)
    dropped = [n for n in names if n not in used]
    embed_dim = int(spec.get("embed_dim", 16))
    dims = {k: int(v) for k, v in (spec.get("field_dims") or {}).items()}
    numerical = spec.get("numerical") or {}
    limits = spec.get("vocab_limits") or {}
    pruning = spec.get("pruning") or {}
    anchors = spec.get("anchors") or {}
    l2_fields = spec.get("l2_fields") or {}

    for name in names or used:
        info = data_fields.get(name, {})
        kind = str(info.get("kind", "?"))
        vocab = info.get("vocab_size")
        kept = name in used
        notes = []
        if kind == "numerical":
            notes.append(f"{numerical.get(name, 'linear')} encoder")
        if name in limits and vocab:
            notes.append(f"own rows for its {int(limits[name]):,} most frequent values, the "
                         "rest share one")
        if name in pruning:
            notes.append(_pruned(pruning[name], vocab, dims.get(name, embed_dim), name))
        if name in anchors:
            notes.append(_anchored(anchors[name], vocab, name))
        if name in l2_fields:
            notes.append(f"L2 {_num(l2_fields[name])}")
        out.fields.append([name, kind, "kept" if kept else "dropped",
                           str(dims.get(name, embed_dim)) if kept else "-",
                           f"{int(vocab):,}" if vocab and kind != "numerical" else "-",
                           "; ".join(notes) if kept else ""])
    crosses = [list(c) for c in spec.get("crosses") or []]
    for cross in crosses:
        key = "x".join(cross)
        out.fields.append([" × ".join(cross), "cross", "added", str(dims.get(key, embed_dim)),
                           f"{int(spec.get('cross_buckets', 0)):,} buckets at most", ""])

    field_dims = [dims.get(n, embed_dim) for n in used]
    if field_dims and min(field_dims) != max(field_dims):
        size = f"embedded in {min(field_dims)} to {max(field_dims)} dimensions (per field below)"
    else:
        size = f"each embedded in {field_dims[0] if field_dims else embed_dim} dimensions"
    what = (f"The model reads {len(used)} of {len(names)} fields" if names
            else f"The model reads {len(used)} fields")
    if dropped:
        what += f" (dropping {_list(dropped)})"
    out.sentences.append(f"{what}, {size}.")
    if crosses:
        out.sentences.append(f"It adds {len(crosses)} cross feature"
                             f"{'s' if len(crosses) > 1 else ''}: "
                             f"{_list([' × '.join(c) for c in crosses])}.")
    if limits or pruning:
        parts = []
        if limits:
            parts.append(f"keeps rows only for the frequent values of {_list(list(limits))}")
        if pruning:
            parts.append(f"prunes the tables of {_list(list(pruning))} value by value")
        out.sentences.append(f"To save memory it {' and '.join(parts)}.")
    if anchors:
        out.sentences.append(f"It embeds {_list(list(anchors))} as sparse combinations of "
                             "a few anchor embeddings (ANT; per field below).")

    towers = _towers(spec)
    out.towers = towers
    interactions = spec.get("interactions")
    pair_towers = [t for t in ("fm", "inner") if spec.get(t)]
    n_all = len(list(combinations(used + ["x".join(c) for c in crosses], 2)))
    if interactions is not None:
        rows = [["×".join(i["fields"]), str(i.get("function", "product")),
                 "-" if i.get("weight") is None else _num(i["weight"])] for i in interactions]
        out.pairs = rows[:MAX_PAIRS]
        out.more_pairs = max(0, len(rows) - MAX_PAIRS)
        functions = sorted({r[1] for r in rows})
        out.sentences.append(f"It models {len(rows)} of the {n_all} field pairs explicitly "
                             f"({', '.join(functions) or 'none'}; listed below).")
    elif pair_towers:
        out.sentences.append(f"It models all {n_all} field pairs explicitly." if n_all != 1
                             else "It models the one field pair explicitly.")
    if towers:
        out.sentences.append("Towers: " + "; ".join(f"{t[0]} ({t[1]})" if t[1] else t[0]
                                                   for t in towers) + ".")

    training = spec.get("training") or {}
    loss = spec.get("loss") or {"name": "bce"}
    rows = [["loss", _loss(loss)]]
    for key, label in (("lr", "learning rate"), ("batch_size", "batch size"),
                       ("weight_decay", "weight decay")):
        value = training.get(key)
        source = "searched"
        if value is None:
            value, source = config.get(key), "the command's setting"
        if value is not None:
            rows.append([label, f"{_num(value)} ({source})"])
    if spec.get("l2_embedding"):
        rows.append(["L2 on embeddings", _num(spec["l2_embedding"])])
    for key, label in (("epochs", "epochs at most"), ("patience", "early-stopping patience"),
                       ("precision", "precision")):
        if config.get(key) is not None:
            rows.append([label, _num(config[key])])
    out.training = rows
    out.sentences.append(f"It is trained with {rows[0][1]}"
                         + "".join(f", {r[0]} {r[1].split(' (')[0]}" for r in rows[1:3]) + ".")
    history = spec.get("provenance") or []
    decided = [p for p in history if p.get("method") not in ("preset", "guard", None)]
    if decided:
        out.sentences.append("Decided by the search stages " + "; ".join(
            str(p["method"]) + (f" ({', '.join(map(str, p['decided']))})"
                                if p.get("decided") else "") for p in decided) + ".")
    rejected = [str(p["rejected"]) for p in history
                if p.get("method") == "guard" and p.get("rejected")]
    if rejected:
        names = (", ".join(rejected[:-1]) + " and " + rejected[-1] if len(rejected) > 1
                 else rejected[0])
        out.sentences.append(f"The validation guard rejected what {names} proposed (no "
                             "better on validation data).")
    return out


def _towers(spec: dict[str, Any]) -> list[Row]:
    rows: list[Row] = []
    if spec.get("dag"):
        nodes = spec["dag"].get("nodes", []) if isinstance(spec["dag"], dict) else spec["dag"]
        rows.append(["block DAG", f"{len(nodes)} blocks"])
    if spec.get("linear"):
        rows.append(["first-order (linear) term", ""])
    if spec.get("fm"):
        rows.append(["factorisation machine over the pairs",
                     "products batch-normalised" if spec.get("pair_norm") else ""])
    if spec.get("inner"):
        rows.append(["inner products of the pairs (IPNN)", ""])
    if spec.get("cross_layers"):
        rows.append(["cross network (DCN)", f"{spec['cross_layers']} layers"])
    if spec.get("attention_layers"):
        rows.append(["self-attention over fields", f"{spec['attention_layers']} layers, "
                                                   f"{spec.get('attention_heads', 2)} heads"])
    if spec.get("mlp"):
        extras = [f"dropout {_num(spec['dropout'])}"] if spec.get("dropout") else []
        if spec.get("batch_norm"):
            extras.append("batch norm")
        rows.append(["MLP", " → ".join(str(w) for w in spec["mlp"])
                     + (f" ({', '.join(extras)})" if extras else "")])
    controller = spec.get("controller")
    if controller:
        k = controller.get("k")
        rows.append(["per-example field controller (AdaFS)",
                     f"keeps the top {k} fields" if k else "soft field weights"])
    return rows


def _pruned(mask: str, vocab: Any, dim: int, name: str) -> str:
    from autodrs.nn.pruned import MaskError, decode_mask  # torch, only for a pruned spec

    if vocab:
        try:
            kept = decode_mask(mask, int(vocab), dim, name)
            return f"{float(kept.float().mean()):.0%} of its embedding weights kept"
        except MaskError:
            pass
    return "pruned value by value"


def _anchored(entry: Any, vocab: Any, name: str) -> str:
    """An ANT field's note: its anchor count and how sparse its transform is."""
    count = entry.get("count") if isinstance(entry, dict) else None
    text = f"{count} anchors" if count else "anchors"
    if vocab:
        from autodrs.nn.anchor import anchor_mask  # torch, only for an anchored spec
        from autodrs.nn.pruned import MaskError

        try:
            mask = anchor_mask(entry, int(vocab), name)
            per_value = float(mask.float().sum(1).mean())
            return f"{text}, {per_value:.1f} per value on average (ANT)"
        except MaskError:
            pass
    return f"{text} (ANT)"


def _loss(loss: dict[str, Any]) -> str:
    names = {"bce": "binary cross-entropy", "focal": "focal loss", "hinge": "hinge loss",
             "squared": "squared error"}
    text = names.get(str(loss.get("name")), str(loss.get("name")))
    params = loss.get("params") or {}
    if params:
        text += " (" + ", ".join(f"{k} {_num(v)}" for k, v in params.items()) + ")"
    return text


def _num(value: Any) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _list(items: list[str], limit: int = 8) -> str:
    if len(items) > limit:
        return ", ".join(items[:limit]) + f" and {len(items) - limit} more"
    return ", ".join(items)
