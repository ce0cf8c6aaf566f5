"""The pruned tables' fused lookup (``nn.pruned.PrunedLookup``): every field of a width in
one lookup, equal bit for bit to the dense tables with the pruned entries zeroed, through
in-place updates, copies, moves and substituted parameters; model files written by the
previous per-table lookup load and score alike."""

from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path

import pytest
import torch
from torch.func import functional_call

from autodrs.data.dataset import Batch
from autodrs.models.builder import build_model, count_bytes
from autodrs.nn.embedding import FieldEmbedding
from autodrs.nn.pruned import PrunedColumn, PrunedLookup, PrunedTable
from autodrs.provenance import autodrs_version
from autodrs.runfolder import load_model, save_model
from autodrs.serve.export import ExportedModel, export_model
from autodrs.spec import ArchSpec

FIXTURE = Path(__file__).parent / "fixtures" / "pruned_model"


@pytest.fixture()
def old_folder(tmp_path: Path) -> Path:
    """The model folder the per-table lookup (commit 097fbee) saved, marked as this release's
    (a model file is read by the release that wrote it; the tensors are what matter here)."""
    folder = Path(shutil.copytree(FIXTURE, tmp_path / "model"))
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["versions"]["autodrs"] = autodrs_version()
    (folder / "manifest.json").write_text(json.dumps(manifest))
    return folder


def fixture_batch() -> tuple[Batch, torch.Tensor]:
    saved = torch.load(FIXTURE / "batch.pt", weights_only=True)
    return Batch(saved["cat"], saved["num"], {}), saved["logits"]


def embeddings(model: torch.nn.Module) -> list[FieldEmbedding]:
    return [m for m in model.modules() if isinstance(m, FieldEmbedding)]


def dense_reference(emb: FieldEmbedding, batch: Batch) -> dict[str, torch.Tensor]:
    """Each pruned field's vectors read from its dense table (pruned entries zero)."""
    return {name: table.to_dense()[batch.cat[:, emb._pruned_cols[name]]]
            for name, table in emb.pruned.items()}


def test_a_model_file_of_the_previous_lookup_loads_and_scores_alike(old_folder: Path) -> None:
    model, _ = load_model(old_folder)
    batch, logits = fixture_batch()
    # the fixture covers every stored layout, two widths and first-order columns
    layouts = {t.layout for t in model.embedding.pruned.values()}
    assert layouts == {"csr", "rows", "full_rows"}
    assert {lk.dim for lk in model.embedding.pruned_lookups} == {4, 8}
    assert isinstance(model.linear.weights.pruned["r0"], PrunedColumn)
    with torch.no_grad():
        assert torch.equal(model(batch), logits)
    with torch.inference_mode():  # as the predictor scores
        assert torch.equal(model(batch), logits)
    assert torch.equal(model(batch), logits)  # with gradients: the training path
    with torch.no_grad():
        assert torch.equal(model(batch), logits)


def test_every_field_equals_its_dense_table_with_and_without_gradients(
        old_folder: Path) -> None:
    model, _ = load_model(old_folder)
    batch, _ = fixture_batch()
    for emb in embeddings(model):
        names = [n for fields in emb._lookup_fields for n in fields]
        assert sorted(names) == sorted(emb.pruned)  # every pruned field in a fused lookup
        expected = dense_reference(emb, batch)
        for grad in (False, True):
            with torch.set_grad_enabled(grad):
                out = dict(zip(emb.names, emb(batch), strict=True))
            for name in emb.pruned:
                assert torch.equal(out[name], expected[name]), (name, grad)


def test_gradients_reach_each_table_as_through_its_dense_table(old_folder: Path) -> None:
    model, _ = load_model(old_folder)
    batch, _ = fixture_batch()
    emb = model.embedding
    weights = {n: torch.randn(len(batch.cat), t.dim, generator=torch.Generator().manual_seed(i))
               for i, (n, t) in enumerate(emb.pruned.items())}
    out = dict(zip(emb.names, emb(batch), strict=True))
    sum((out[n] * w).sum() for n, w in weights.items()).backward()
    for name, table in emb.pruned.items():
        dense = table.to_dense().requires_grad_()
        (dense[batch.cat[:, emb._pruned_cols[name]]] * weights[name]).sum().backward()
        expected = dense.grad[table.mask()]
        got = table.values.grad if table.nnz else torch.zeros(0)
        assert torch.allclose(got, expected, atol=1e-6), name


def test_a_lookup_follows_updates_copies_moves_and_substitutes(old_folder: Path) -> None:
    model, _ = load_model(old_folder)
    batch, _ = fixture_batch()
    emb = model.embedding
    name = "r0"
    with torch.no_grad():
        emb(batch)  # scored once: the kept rows at full width are built
        emb.pruned[name].values.mul_(2.0)  # an optimiser's in-place step
        assert torch.equal(emb(batch)[emb.names.index(name)],
                           dense_reference(emb, batch)[name])
        emb.load_state_dict({k: v * 3 for k, v in emb.state_dict().items()
                             if k.endswith("values")}, strict=False)  # a load
        assert torch.equal(emb(batch)[emb.names.index(name)],
                           dense_reference(emb, batch)[name])
        twin = copy.deepcopy(emb)
        twin.pruned[name].values.add_(1.0)  # the copy's values are its own
        for e in (emb, twin):
            assert torch.equal(e(batch)[e.names.index(name)], dense_reference(e, batch)[name])
        wide = copy.deepcopy(emb).double()  # moved to another dtype: laid out again
        out = wide(batch)[wide.names.index(name)]
        assert out.dtype == torch.float64
        assert torch.equal(out, dense_reference(wide, batch)[name])
        # parameters substituted for one call (a look-ahead) are read, the model's are not
        other = torch.randn_like(emb.pruned[name].values)
        out = functional_call(emb, {f"pruned.{name}.values": other}, (batch,))
        table = emb.pruned[name]
        dense = torch.zeros(table.rows, table.dim)
        dense[table.mask()] = other
        assert torch.equal(out[emb.names.index(name)],
                           dense[batch.cat[:, emb._pruned_cols[name]]])
        assert torch.equal(emb(batch)[emb.names.index(name)],
                           dense_reference(emb, batch)[name])


def test_the_saved_file_holds_the_tables_only_and_round_trips(old_folder: Path,
                                                              tmp_path: Path) -> None:
    model, schema = load_model(old_folder)
    old_state = torch.load(old_folder / "model.pt", weights_only=True)
    state = model.state_dict()
    # nothing of the fused lookup is stored: the same tensors as the previous files
    assert {k: (v.shape, v.dtype) for k, v in state.items()} == \
        {k: (v.shape, v.dtype) for k, v in old_state.items()}
    # and the stored bytes are those of the previous file's tables
    assert count_bytes(model)["embedding"] == sum(
        v.numel() * v.element_size() for k, v in old_state.items()
        if k.startswith(("embedding.", "linear.weights.")))
    save_model(tmp_path / "again", model, schema)
    again, _ = load_model(tmp_path / "again")
    batch, logits = fixture_batch()
    with torch.no_grad():
        assert torch.equal(again(batch), logits)


def test_one_table_and_mixed_layouts_outside_a_model() -> None:
    g = torch.Generator().manual_seed(0)
    dense = [torch.randn(30, 6, generator=g), torch.randn(50, 6, generator=g)]
    masks = [torch.rand(30, 6, generator=g) < 0.4, torch.zeros(50, 6, dtype=torch.bool)]
    masks[1][::7] = True  # whole rows
    tables = [PrunedTable(m, d[m]) for m, d in zip(masks, dense, strict=True)]
    assert [t.layout for t in tables] == ["csr", "full_rows"]
    lookup = PrunedLookup(tables)
    ids = torch.stack([torch.randint(0, 30, (40,), generator=g),
                       torch.randint(0, 50, (40,), generator=g)], 1)
    with torch.no_grad():
        out = lookup(ids)
    for k in range(2):
        assert torch.equal(out[:, k], (dense[k] * masks[k])[ids[:, k]])
        assert torch.equal(tables[k](ids[:, k]), (dense[k] * masks[k])[ids[:, k]])
    with pytest.raises(ValueError, match="one width"):
        PrunedLookup([tables[0], PrunedColumn(torch.ones(4, 1, dtype=torch.bool))])


def test_a_spec_with_pruned_fields_builds_one_lookup_per_width(old_folder: Path) -> None:
    spec = ArchSpec.from_json(old_folder / "spec.json")
    model, schema = load_model(old_folder)
    built = build_model(schema, spec)
    assert [lk.dim for lk in built.embedding.pruned_lookups] == [4, 8]
    assert [lk.dim for lk in built.linear.weights.pruned_lookups] == [1]
    # first-order columns keep whole rows: no columns to scatter
    assert built.linear.weights.pruned_lookups[0].cols is None


def test_every_layout_exports_to_onnx(old_folder: Path, tmp_path: Path) -> None:
    """The kept-row layouts were looked up by searchsorted, which ONNX has no operator
    for: such a model could not be exported to ONNX."""
    model, schema = load_model(old_folder)
    path = tmp_path / "model.onnx"
    export_model(model, schema, path, "onnx")  # checked against the model on other batches
    batch, logits = fixture_batch()
    got = ExportedModel.load(path).predict_batch(batch)
    assert torch.allclose(torch.as_tensor(got).float(), torch.sigmoid(logits), atol=1e-6)
