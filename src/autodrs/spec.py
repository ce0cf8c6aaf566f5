"""ArchSpec: the one JSON-serialisable description of a recommender.

Every searchable decision (fields, crosses, embedding dims, numerical encoders, kept
interactions, towers, loss, regularisation) is written here, and
``autodrs.models.build_model(schema, spec)`` is the only way a model is built from it.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from autodrs.nn.anchor import anchor_mask
from autodrs.nn.pruned import MaskError, decode_mask

if TYPE_CHECKING:
    from autodrs.data.schema import Schema

NUMERICAL_ENCODERS = ("linear", "bucket", "autodis")
# "product": an inner product of the fields' embeddings: a pair is modelled by the FM /
# inner towers, a tuple of three or more fields by a higher-order term in the logit
# (sum_k prod_t e_tk; PROFIT, FIVES, AutoFIS's third order);
# "memorise": the embedding of the fields' cross feature (OptInter), so the cross must be
# one of ``spec.crosses``; pairs that are not listed are not modelled ("naive");
# "hadamard": the elementwise product of the pair's own embeddings (a table of
# ``pair_dim`` per field, apart from the main one) fed to the deep head (OptInter's
# "factorise");
# "group": an AutoGroup feature group of ``order`` p over its fields,
# ``sum_k (sum_i w_i e_ik)^p - group_compensation * sum_i w_i^p e_ik^p`` on batch-normalised
# embeddings (order 1 keeps the d-dim vector), fed to the deep head;
# the per-pair functions of SIF / AutoFeature / AIM (``autodrs.nn.functions``) are summed
# into the logit by a tower of their own
PAIR_FUNCTIONS = ("multiply", "plus", "max", "min", "concat", "generalised")
INTERACTION_FUNCTIONS = ("product", "memorise", "hadamard", "group", *PAIR_FUNCTIONS)
MAX_GROUP_ORDER = 4
# "autoloss": a searched per-example mixture of the others (``autodrs.train.losses``)
LOSSES = ("bce", "focal", "hinge", "squared", "autoloss")
# a behaviour sequence's residual blocks (``autodrs.nn.sequence``) and its read-outs: "mean"
# pooling, DIN's target "attention", the "last" position, the "target" position (the target
# item appended to the sequence, BST)
SEQUENCE_LAYERS = ("conv", "gru", "pool", "attention")
SEQUENCE_READOUTS = ("mean", "attention", "last", "target")


class SpecError(ValueError):
    """A spec that cannot describe a model over the given schema."""


@dataclass
class Interaction:
    """One kept feature interaction: the fields it joins and how they are combined."""

    fields: list[str]
    function: str = "product"
    weight: float | None = None  # a searched gate kept as attention (AutoFIS retrain)
    order: int | None = None  # the power p of a "group" interaction (AutoGroup)
    # the values of ``ArchSpec.user_field`` whose examples this pair is modelled for (BP-FIS's
    # personalised pairs); None: every example
    users: list[str] | None = None

    @property
    def key(self) -> str:
        return "*".join(self.fields)


@dataclass
class LossSpec:
    name: str = "bce"
    params: dict[str, Any] = field(default_factory=dict)


@dataclass
class TrainingSpec:
    """Training hyper-parameters a search chose; ``None`` keeps the command's setting."""

    lr: float | None = None
    batch_size: int | None = None
    weight_decay: float | None = None


MULTITASK_BACKBONES = ("separate", "shared_bottom", "mmoe")


@dataclass
class MultiTaskSpec:
    """How a model predicts several labels (``autodrs.models.multitask``), one logit each.

    ``separate``: one model of the rest of the spec per task. ``shared_bottom``: the field
    embeddings, then ``bottom`` layers, then one ``tower`` per task; ``sharing[l][t]`` is
    the module task t uses at bottom layer l (tasks with the same number share it; None:
    every task shares every layer). ``mmoe``: ``experts`` bottoms mixed by a softmax gate
    per task. ``gradnorm`` (its asymmetry alpha) adapts the task weights by GradNorm, else
    they are ``weights`` (None: 1 each)."""

    backbone: str = "shared_bottom"
    bottom: list[int] = field(default_factory=lambda: [128, 64])
    tower: list[int] = field(default_factory=lambda: [32])
    experts: int = 4
    sharing: list[list[int]] | None = None
    gradnorm: float | None = None
    gradnorm_lr: float = 0.025
    weights: list[float] | None = None

    def validate(self, schema: Schema) -> None:
        tasks = len(schema.tasks)
        if tasks < 2:
            raise SpecError("a multitask spec needs data with several labels (--labels a,b)")
        if self.backbone not in MULTITASK_BACKBONES:
            raise SpecError(f"unknown multitask backbone {self.backbone!r}; choose from "
                            f"{', '.join(MULTITASK_BACKBONES)}")
        if any(int(w) <= 0 for w in [*self.bottom, *self.tower]):
            raise SpecError(f"multitask widths must be > 0, got bottom {self.bottom}, "
                            f"tower {self.tower}")
        if self.backbone != "separate" and not self.bottom:
            raise SpecError(f"a {self.backbone} model needs at least one bottom layer")
        if self.backbone == "mmoe" and int(self.experts) < 1:
            raise SpecError(f"multitask experts must be >= 1, got {self.experts}")
        if self.sharing is not None:
            if self.backbone != "shared_bottom" or len(self.sharing) != len(self.bottom):
                raise SpecError("multitask sharing gives a shared_bottom model one list per "
                                f"bottom layer ({len(self.bottom)}), got {self.sharing}")
            for row in self.sharing:
                if len(row) != tasks or any(not 0 <= int(k) < tasks for k in row):
                    raise SpecError(f"multitask sharing: each layer's list names a module "
                                    f"0..{tasks - 1} for each of the {tasks} tasks, got {row}")
        if self.gradnorm is not None and (self.gradnorm < 0 or self.backbone == "separate"):
            raise SpecError("multitask gradnorm needs alpha >= 0 and a shared layer (not "
                            "the separate backbone)")
        if not self.gradnorm_lr > 0:
            raise SpecError(f"multitask gradnorm_lr must be > 0, got {self.gradnorm_lr}")
        if self.weights is not None and (len(self.weights) != tasks
                                         or any(w < 0 for w in self.weights)):
            raise SpecError(f"multitask weights: one weight >= 0 per task ({tasks}), got "
                            f"{self.weights}")


@dataclass
class ControllerSpec:
    """AdaFS per-sample field controller: scores every embedded field per example and
    re-weights the embeddings (``k=None``, soft) or keeps each example's top ``k`` (hard).

    How it is trained: ``update_every=0`` jointly with the model on the training loss;
    ``update_every=n`` as AdaFS does, ``pretrain_epochs`` without the controller, then the
    controller alone (Adam at ``lr``) on one validation batch every n weight steps."""

    k: int | None = None
    dropout: float = 0.2
    pretrain_epochs: int = 0
    update_every: int = 0
    lr: float = 1e-3


@dataclass
class AdaptiveL2Spec:
    """lambda-Opt: the per-field L2 strengths are learned while the model trains (from
    ``init``, an Adam step at ``lr`` on the validation loss of a one-step look-ahead every
    ``every`` weight steps) instead of being constants (``l2_fields``)."""

    lr: float = 1e-3
    every: int = 1
    init: float = 0.0


@dataclass
class SequenceSpec:
    """How one behaviour-sequence field is encoded (without it, every sequence field is
    mean-pooled).

    The history items and the target item are embedded in one space: the target field's
    ids are mapped onto the sequence field's vocabulary (same values, same row of the
    sequence's table; a target value the histories never hold is out of vocabulary).
    ``history`` / ``target`` None: the used sequence field and the categorical field whose
    values it holds (found from the two vocabularies). The items pass through ``layers``
    (residual blocks, in order; with ``positional`` embeddings first and ``causal``
    self-attention when asked) and are read out to one vector at the field's dim."""

    history: str | None = None  # the sequence field
    target: str | None = None
    layers: list[str] = field(default_factory=list)
    readout: str = "attention"
    positional: bool = False
    causal: bool = False
    heads: int = 2


@dataclass
class ArchSpec:
    """A complete model description.

    ``fields=None`` means every field of the schema; ``interactions=None`` means every pair
    of the used fields (for the towers that model pairs: ``fm`` and ``inner``).
    """

    fields: list[str] | None = None
    crosses: list[list[str]] = field(default_factory=list)
    cross_buckets: int = 50_000
    embed_dim: int = 16
    field_dims: dict[str, int] = field(default_factory=dict)
    # per-value pruning: field -> kept-entry mask of its [vocab x dim] table, as the compact
    # text of ``autodrs.nn.pruned.encode_mask``; the table is stored sparsely (kept entries)
    pruning: dict[str, str] = field(default_factory=dict)
    # the same for the first-order term (``linear``): field -> mask of its [vocab x 1] weights
    linear_pruning: dict[str, str] = field(default_factory=dict)
    # per-value pruning by frequency: field -> how many of its values keep their own row (the
    # vocabulary is ordered by train count, so these are its most frequent values); the
    # rarer ones share the out-of-vocabulary row, and the table holds only the kept rows
    vocab_limits: dict[str, int] = field(default_factory=dict)
    # anchor & transform (ANT): field -> {"count": K, "mask": kept entries of its sparse
    # non-negative [vocab x K] transform T}; the field is embedded as T A (``nn.anchor``)
    anchors: dict[str, dict[str, Any]] = field(default_factory=dict)
    numerical: dict[str, str] = field(default_factory=dict)
    linear: bool = False
    fm: bool = False
    # batch-normalise (no affine) each pair's inner product in the FM term before its weight:
    # AutoFIS searches and retrains its gates on normalised products
    pair_norm: bool = False
    inner: bool = False
    mlp: list[int] = field(default_factory=list)
    dropout: float = 0.0
    batch_norm: bool = False
    cross_layers: int = 0
    attention_layers: int = 0
    attention_heads: int = 2
    interactions: list[Interaction] | None = None
    loss: LossSpec = field(default_factory=LossSpec)
    # several labels: how the model predicts each (None on multi-label data: one model of
    # this spec per task)
    multitask: MultiTaskSpec | None = None
    l2_embedding: float = 0.0
    l2_fields: dict[str, float] = field(default_factory=dict)  # per-field L2 (lambda-Opt)
    adaptive_l2: AdaptiveL2Spec | None = None
    training: TrainingSpec = field(default_factory=TrainingSpec)
    controller: ControllerSpec | None = None
    # width of the per-field tables of "hadamard" interactions (None: ``embed_dim``)
    pair_dim: int | None = None
    # lambda of "group" interactions: how much of each member's own p-th power is removed
    group_compensation: float = 0.01
    # the categorical field whose values personalise the FM pairs (``Interaction.users``)
    user_field: str | None = None
    # a block DAG over the embeddings in place of the towers (``autodrs.models.dag``)
    dag: dict[str, Any] | None = None
    # one behaviour-sequence field encoded by target attention / self-attention / searched
    # blocks (DIN, SASRec/BST, AMEIR); None: sequence fields are mean-pooled
    sequence: SequenceSpec | None = None
    provenance: list[dict[str, Any]] = field(default_factory=list)

    # ------------------------------------------------------------------ JSON
    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        if out.get("multitask", 0) is None:  # single-task specs read as they always have
            del out["multitask"]
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ArchSpec:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise SpecError(f"unknown spec keys: {', '.join(unknown)}")
        kwargs = dict(data)
        if isinstance(kwargs.get("multitask"), dict):
            kwargs["multitask"] = MultiTaskSpec(**kwargs["multitask"])
        if kwargs.get("interactions") is not None:
            kwargs["interactions"] = [
                i if isinstance(i, Interaction) else Interaction(**i)
                for i in kwargs["interactions"]
            ]
        if isinstance(kwargs.get("loss"), dict):
            kwargs["loss"] = LossSpec(**kwargs["loss"])
        if isinstance(kwargs.get("training"), dict):
            kwargs["training"] = TrainingSpec(**kwargs["training"])
        if isinstance(kwargs.get("controller"), dict):
            kwargs["controller"] = ControllerSpec(**kwargs["controller"])
        if isinstance(kwargs.get("adaptive_l2"), dict):
            kwargs["adaptive_l2"] = AdaptiveL2Spec(**kwargs["adaptive_l2"])
        if isinstance(kwargs.get("sequence"), dict):
            kwargs["sequence"] = SequenceSpec(**kwargs["sequence"])
        return cls(**kwargs)

    def to_json(self, path: str | Path | None = None) -> str:
        text = json.dumps(self.to_dict(), indent=2, sort_keys=True)
        if path is not None:
            Path(path).write_text(text)
        return text

    @classmethod
    def from_json(cls, text_or_path: str | Path) -> ArchSpec:
        if isinstance(text_or_path, str) and text_or_path.lstrip().startswith("{"):
            text = text_or_path
        else:
            path = Path(text_or_path)
            if not path.exists():
                raise SpecError(f"spec file {path} not found")
            text = path.read_text()
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise SpecError(f"spec is not valid JSON: {e}") from e
        if not isinstance(data, dict):
            raise SpecError("a spec must be a JSON object")
        return cls.from_dict(data)

    def copy(self, **changes: Any) -> ArchSpec:
        return replace(ArchSpec.from_dict(self.to_dict()), **changes)

    # ------------------------------------------------------------ semantics
    def used_fields(self, schema: Schema) -> list[str]:
        return list(schema.field_names) if self.fields is None else list(self.fields)

    def dim_of(self, name: str) -> int:
        return int(self.field_dims.get(name, self.embed_dim))

    def validate(self, schema: Schema) -> ArchSpec:
        """Raise ``SpecError`` naming the problem when the spec does not fit ``schema``."""
        known = set(schema.field_names)
        used = self.used_fields(schema)
        if self.multitask is not None:
            self.multitask.validate(schema)
            if self.loss.name != "bce":
                raise SpecError(f"a multitask model trains each task on bce, not "
                                f"{self.loss.name!r}")
        if not used:
            raise SpecError("spec selects no fields")
        for name in used:
            if name not in known:
                raise SpecError(f"spec names unknown field {name!r}; schema has {sorted(known)}")
        if len(set(used)) != len(used):
            raise SpecError("spec selects a field twice")
        cross_names = set()
        for cross in self.crosses:
            if len(cross) < 2:
                raise SpecError(f"a cross needs two or more fields, got {cross}")
            for name in cross:
                if name not in known:
                    raise SpecError(f"cross {cross} names unknown field {name!r}")
                if schema.field(name).kind != "categorical":
                    raise SpecError(f"cross {cross} uses non-categorical field {name!r}")
            cross_names.add(cross_name(cross))
        available = set(used) | cross_names
        if self.cross_buckets <= 0:
            raise SpecError(f"cross_buckets must be > 0, got {self.cross_buckets}")
        if self.embed_dim <= 0:
            raise SpecError(f"embed_dim must be > 0, got {self.embed_dim}")
        for name, dim in self.field_dims.items():
            if name not in known and name not in cross_names:
                raise SpecError(f"field_dims names unknown field {name!r}")
            if int(dim) <= 0:
                raise SpecError(f"embedding dim of {name!r} must be > 0, got {dim}")
        if self.linear_pruning and not self.linear:
            raise SpecError("linear_pruning prunes the first-order term, which this spec does "
                            "not have (linear is false)")
        # masks of the latent tables (at the field's dim) and of the first-order weights (1)
        for key, masks, width in (("pruning", self.pruning, self.dim_of),
                                  ("linear_pruning", self.linear_pruning, lambda _: 1)):
            for name, text in masks.items():
                if name not in used or schema.field(name).kind != "categorical":
                    raise SpecError(f"{key} names {name!r}, which is not a categorical field "
                                    "the spec uses")
                try:
                    decode_mask(text, schema.field(name).vocab_size, width(name), name)
                except MaskError as e:
                    raise SpecError(str(e)) from e
        for name, limit in self.vocab_limits.items():
            f = schema.field(name) if name in known else None
            if f is None or f.kind != "categorical" or f.hash_buckets or f.vocab is None:
                raise SpecError(f"vocab_limits names {name!r}, which is not a categorical "
                                "field with a vocabulary")
            if not 0 <= int(limit) <= len(f.vocab):
                raise SpecError(f"vocab_limits of {name!r} must be in 0..{len(f.vocab)} (its "
                                f"vocabulary), got {limit}")
            if name in self.pruning or name in self.linear_pruning:
                raise SpecError(f"field {name!r} is pruned both by vocab_limits and by a "
                                "pruning mask; use one")
        for name, entry in self.anchors.items():
            if name not in used or schema.field(name).kind != "categorical":
                raise SpecError(f"anchors names {name!r}, which is not a categorical field "
                                "the spec uses")
            if name in self.pruning or name in self.vocab_limits:
                raise SpecError(f"field {name!r} is embedded by anchors and also pruned "
                                "(pruning or vocab_limits); use one")
            try:
                anchor_mask(entry, schema.field(name).vocab_size, name)
            except MaskError as e:
                raise SpecError(str(e)) from e
        for name, enc in self.numerical.items():
            if name not in known:
                raise SpecError(f"numerical encoder for unknown field {name!r}")
            if schema.field(name).kind != "numerical":
                raise SpecError(f"field {name!r} is not numerical")
            if enc not in NUMERICAL_ENCODERS:
                raise SpecError(f"unknown numerical encoder {enc!r} for {name!r}")
        if self.interactions is not None:
            for inter in self.interactions:
                for name in inter.fields:
                    if name not in available:
                        raise SpecError(
                            f"interaction {inter.key} names {name!r}, which the spec does not use"
                        )
                if inter.function not in INTERACTION_FUNCTIONS:
                    raise SpecError(f"unknown interaction function {inter.function!r}")
                if len(set(inter.fields)) != len(inter.fields):
                    raise SpecError(f"interaction {inter.key} names a field twice")
                if inter.function == "group":
                    if not inter.fields:
                        raise SpecError("a group interaction needs at least one field")
                    if (isinstance(inter.order, bool) or not isinstance(inter.order, int)
                            or not 1 <= inter.order <= MAX_GROUP_ORDER):
                        raise SpecError(f"group interaction {inter.key} needs an order in "
                                        f"1..{MAX_GROUP_ORDER}, got {inter.order!r}")
                else:
                    if len(inter.fields) < 2:
                        raise SpecError(f"interaction {inter.key} needs two or more fields")
                    if inter.order is not None:
                        raise SpecError(f"interaction {inter.key}: order applies to group "
                                        "interactions only")
                if inter.function == "memorise" and inter.fields not in self.crosses:
                    raise SpecError(f"interaction {inter.key} is memorised, but the spec has "
                                    f"no cross {inter.fields}; add it to crosses")
                if inter.function in (*PAIR_FUNCTIONS, "hadamard") and len(inter.fields) != 2:
                    raise SpecError(f"interaction {inter.key}: function {inter.function!r} "
                                    "joins exactly two fields")
                if inter.users is not None:
                    if inter.function != "product" or len(inter.fields) != 2:
                        raise SpecError(f"interaction {inter.key}: users personalise FM "
                                        "pairs (product of two fields) only")
                    if not self.fm or self.user_field is None or inter.weight is not None:
                        raise SpecError(f"interaction {inter.key} lists users: the spec needs "
                                        "fm, a user_field, and no weight on the pair")
                    if not isinstance(inter.users, list) or not all(
                            isinstance(u, str) for u in inter.users):
                        raise SpecError(f"interaction {inter.key}: users must be a list of "
                                        "values (strings)")
        if self.user_field is not None:
            f = schema.field(self.user_field) if self.user_field in known else None
            if f is None or f.kind != "categorical" or f.vocab is None:
                raise SpecError(f"user_field {self.user_field!r} is not a categorical field "
                                "with a vocabulary")
        if self.pair_dim is not None and int(self.pair_dim) <= 0:
            raise SpecError(f"pair_dim must be > 0, got {self.pair_dim}")
        if not 0.0 <= self.group_compensation <= 1.0:
            raise SpecError(f"group_compensation must be in [0, 1], got "
                            f"{self.group_compensation}")
        if self.pair_norm and not self.fm:
            raise SpecError("pair_norm normalises the FM term's pair products; it needs fm")
        if any(int(w) <= 0 for w in self.mlp):
            raise SpecError(f"MLP widths must be > 0, got {self.mlp}")
        if not 0.0 <= self.dropout < 1.0:
            raise SpecError(f"dropout must be in [0, 1), got {self.dropout}")
        if self.cross_layers < 0 or self.attention_layers < 0:
            raise SpecError("layer counts must be >= 0")
        if self.loss.name not in LOSSES:
            raise SpecError(f"unknown loss {self.loss.name!r}; choose from {LOSSES}")
        if self.loss.name == "autoloss":
            from autodrs.train.losses import load_controller

            try:
                load_controller(self.loss.params)
            except ValueError as e:
                raise SpecError(str(e)) from e
        if self.l2_embedding < 0:
            raise SpecError("l2_embedding must be >= 0")
        for name, lam in self.l2_fields.items():
            if name not in available:
                raise SpecError(f"l2_fields names {name!r}, which the spec does not use")
            if float(lam) < 0:
                raise SpecError(f"l2 strength of {name!r} must be >= 0, got {lam}")
        a = self.adaptive_l2
        if a is not None:
            if not a.lr > 0 or int(a.every) < 1 or a.init < 0:
                raise SpecError(f"adaptive_l2 needs lr > 0, every >= 1 and init >= 0, got "
                                f"{a.lr}, {a.every}, {a.init}")
            if self.l2_fields:
                raise SpecError("adaptive_l2 learns the per-field L2 strengths; drop the "
                                "constant l2_fields")
        t = self.training
        if t.lr is not None and not t.lr > 0:
            raise SpecError(f"training.lr must be > 0, got {t.lr}")
        if t.batch_size is not None and int(t.batch_size) <= 0:
            raise SpecError(f"training.batch_size must be > 0, got {t.batch_size}")
        if t.weight_decay is not None and t.weight_decay < 0:
            raise SpecError(f"training.weight_decay must be >= 0, got {t.weight_decay}")
        if self.controller is not None:
            embedded = len(used) + len(self.crosses)
            k = self.controller.k
            if k is not None and not 1 <= int(k) <= embedded:
                raise SpecError(f"controller.k must be in 1..{embedded} (the embedded fields), "
                                f"got {k}")
            if not 0.0 <= self.controller.dropout < 1.0:
                raise SpecError(f"controller.dropout must be in [0, 1), got "
                                f"{self.controller.dropout}")
            c = self.controller
            if int(c.pretrain_epochs) < 0 or int(c.update_every) < 0 or not c.lr > 0:
                raise SpecError("controller.pretrain_epochs and update_every must be >= 0 and "
                                f"controller.lr > 0, got {c.pretrain_epochs}, "
                                f"{c.update_every}, {c.lr}")
        if self.dag is not None:
            from autodrs.models.dag import BlockGraph  # models import this module

            BlockGraph.from_dict(self.dag).validate(
                used + [cross_name(c) for c in self.crosses])
            towers = [name for name, on in (("fm", self.fm), ("inner", self.inner),
                                            ("mlp", self.mlp), ("cross", self.cross_layers),
                                            ("attention", self.attention_layers)) if on]
            if towers:
                raise SpecError(f"a block DAG replaces the towers; turn off {', '.join(towers)}")
        if self.sequence is not None:
            from autodrs.nn.sequence import resolve_sequence  # nn imports this module

            resolve_sequence(schema, self)
        # interactions with a term of their own (a logit term or a deep-head input)
        pair_functions = any(i.function in (*PAIR_FUNCTIONS, "hadamard", "group")
                             or (i.function == "product" and len(i.fields) > 2)
                             for i in self.interactions or [])
        if not (self.linear or self.fm or self.inner or self.mlp or self.cross_layers
                or self.attention_layers or self.dag is not None or pair_functions):
            raise SpecError("spec has no tower: enable linear, fm, inner, mlp, cross or attention")
        return self

    def record(self, method: str, strategy: str, decided: list[str], seconds: float,
               **details: Any) -> ArchSpec:
        """Append a provenance entry: which method decided which spec keys, at what cost."""
        entry = {"method": method, "strategy": strategy, "decided": sorted(decided),
                 "seconds": round(float(seconds), 3)}
        self.provenance.append(entry | details)
        return self

    def diff(self, other: ArchSpec) -> list[str]:
        """Readable differences, one line per changed key: ``key: old -> new``."""
        a, b = self.to_dict(), other.to_dict()
        lines = []
        for key in sorted(set(a) | set(b)):
            if a.get(key) != b.get(key):
                lines.append(f"{key}: {_short(a.get(key))} -> {_short(b.get(key))}")
        return lines


def cross_name(cross: list[str]) -> str:
    return "x".join(cross)


def _short(value: Any, limit: int = 120) -> str:
    text = json.dumps(value, sort_keys=True)
    return text if len(text) <= limit else text[: limit - 3] + "..."
