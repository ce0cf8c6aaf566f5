"""Regressions: AutoField's gated embeddings on all-categorical specs (the model's one-table
lookup), and ANT anchors through field subsets and the report's architecture summary."""

from __future__ import annotations

import torch

from autodrs.data.dataset import Dataset
from autodrs.methods.selection.subset import with_fields
from autodrs.models.backbones import backbone_spec
from autodrs.models.builder import build_model
from autodrs.nn.pruned import encode_mask
from autodrs.report.architecture import describe
from autodrs.search.base import SearchContext, get_method
from autodrs.spec import ArchSpec
from autodrs.train.trainer import TrainConfig


def categorical_deepfm(ds: Dataset) -> ArchSpec:
    """DeepFM over the categorical fields only: every field one table at one dim, the
    model's one-table lookup path."""
    return backbone_spec("deepfm", 8).copy(fields=list(ds.schema.categorical))


def test_autofield_gates_an_all_categorical_model(tiny_synthetic: Dataset,
                                                  fast_config: TrainConfig) -> None:
    spec = categorical_deepfm(tiny_synthetic)
    assert build_model(tiny_synthetic.schema, spec).one_lookup
    result = get_method("autofield").search(SearchContext(
        tiny_synthetic, spec, fast_config, seed=0, options={"fast": True}))
    assert sorted(result.ranking) == sorted(spec.fields)
    # the gates act on that path: a field gated off changes the output
    from autodrs.methods.selection.autofield import AutoFieldSupernet
    from autodrs.search.gradient import Temperature

    net = AutoFieldSupernet(tiny_synthetic.schema, spec, list(spec.fields),
                            Temperature(1.0, 1.0, 1)).eval()
    batch = tiny_synthetic.valid.batch(slice(0, 32))
    with torch.no_grad():
        for table in net.model.embedding.inner.tables:
            table.weight.normal_()
        net.gates.logits[:, -1] = 10.0
        on = net(batch)
        net.gates.logits[0, -1] = -10.0
        off = net(batch)
    assert not torch.allclose(on, off)


def anchored(ds: Dataset, fields: list[str], count: int = 4) -> dict[str, dict]:
    out = {}
    for name in fields:
        mask = torch.zeros(ds.schema.field(name).vocab_size, count, dtype=torch.bool)
        mask[:, 0] = True
        mask[::2, 1] = True
        out[name] = {"count": count, "mask": encode_mask(mask)}
    return out


def test_with_fields_drops_the_anchors_of_dropped_fields(tiny_synthetic: Dataset) -> None:
    spec = ArchSpec(fields=["r0", "r1", "r2"], embed_dim=8, linear=True,
                    anchors=anchored(tiny_synthetic, ["r0", "r2"]))
    spec.validate(tiny_synthetic.schema)
    out = with_fields(spec, ["r0", "r1"])
    assert set(out.anchors) == {"r0"}
    assert out.anchors["r0"] == spec.anchors["r0"]
    out.validate(tiny_synthetic.schema)
    build_model(tiny_synthetic.schema, out)


def test_the_architecture_summary_shows_anchors(tiny_synthetic: Dataset) -> None:
    spec = ArchSpec(fields=["r0", "r1"], embed_dim=8, linear=True,
                    anchors=anchored(tiny_synthetic, ["r0"]))
    fields = {n: {"kind": tiny_synthetic.schema.field(n).kind,
                  "vocab_size": tiny_synthetic.schema.field(n).vocab_size}
              for n in ("r0", "r1")}
    arch = describe(spec.to_dict(), fields)
    assert any("anchor" in s and "r0" in s for s in arch.sentences), arch.sentences
    notes = {row[0]: row[5] for row in arch.fields}
    assert "4 anchors" in notes["r0"] and "1.5 per value" in notes["r0"], notes
    assert "anchor" not in notes["r1"]
