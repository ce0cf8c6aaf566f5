"""Hand-crafted backbones, each an ArchSpec preset."""

from __future__ import annotations

from collections.abc import Callable

from autodrs.spec import ArchSpec, SequenceSpec

DEFAULT_MLP = [256, 128]


def _lr(dim: int) -> ArchSpec:
    return ArchSpec(embed_dim=dim, linear=True)


def _fm(dim: int) -> ArchSpec:
    return ArchSpec(embed_dim=dim, linear=True, fm=True)


def _dnn(dim: int) -> ArchSpec:
    return ArchSpec(embed_dim=dim, mlp=list(DEFAULT_MLP))


def _wide_deep(dim: int) -> ArchSpec:
    return ArchSpec(embed_dim=dim, linear=True, mlp=list(DEFAULT_MLP))


def _deepfm(dim: int) -> ArchSpec:
    return ArchSpec(embed_dim=dim, linear=True, fm=True, mlp=list(DEFAULT_MLP))


def _dcnv2(dim: int) -> ArchSpec:
    return ArchSpec(embed_dim=dim, cross_layers=3, mlp=list(DEFAULT_MLP))


def _ipnn(dim: int) -> ArchSpec:
    return ArchSpec(embed_dim=dim, inner=True, mlp=list(DEFAULT_MLP))


def _autoint(dim: int) -> ArchSpec:
    return ArchSpec(embed_dim=dim, attention_layers=3, attention_heads=2)


def _din(dim: int) -> ArchSpec:
    """DIN: the history read out by target attention, then the MLP (a sequence task's
    backbone: the data needs a sequence field holding a categorical field's values)."""
    return ArchSpec(embed_dim=dim, mlp=list(DEFAULT_MLP),
                    sequence=SequenceSpec(readout="attention"))


def _sasrec(dim: int) -> ArchSpec:
    """SASRec / BST: positional embeddings and two causal self-attention blocks over the
    history with the target item at the position after the last one, read there; the MLP."""
    return ArchSpec(embed_dim=dim, mlp=list(DEFAULT_MLP),
                    sequence=SequenceSpec(layers=["attention", "attention"], readout="target",
                                          positional=True, causal=True))


BACKBONES: dict[str, Callable[[int], ArchSpec]] = {
    "lr": _lr,
    "fm": _fm,
    "dnn": _dnn,
    "widedeep": _wide_deep,
    "deepfm": _deepfm,
    "dcnv2": _dcnv2,
    "ipnn": _ipnn,
    "autoint": _autoint,
}
# backbones of the sequence task: their data needs a sequence field holding a categorical
# field's values (a history of items), so they are not among the baselines of every table
SEQUENCE_BACKBONES: dict[str, Callable[[int], ArchSpec]] = {
    "din": _din,
    "sasrec": _sasrec,
}
ALIASES = {"wide&deep": "widedeep", "wide_deep": "widedeep", "dcn-v2": "dcnv2",
           "dcn_v2": "dcnv2", "pnn": "ipnn", "bst": "sasrec"}


def backbone_spec(name: str, embed_dim: int = 16) -> ArchSpec:
    key = ALIASES.get(name.lower(), name.lower())
    presets = BACKBONES | SEQUENCE_BACKBONES
    if key not in presets:
        raise ValueError(f"unknown model {name!r}; choose from {', '.join(presets)}")
    spec = presets[key](embed_dim)
    spec.provenance.append({"method": "preset", "model": key})
    return spec
