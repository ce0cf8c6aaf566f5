"""Pruned and mixed-dimension embeddings really shrink what is stored, rebuild from the spec,
and survive a save and load unchanged."""

from __future__ import annotations

import pytest
import torch

from autodrs.data.dataset import Dataset
from autodrs.experiment import fit_spec
from autodrs.methods.embedding.common import file_bytes
from autodrs.models.backbones import backbone_spec
from autodrs.models.builder import build_model, count_bytes, count_parameters
from autodrs.nn.pruned import (
    MaskError,
    PrunedColumn,
    PrunedTable,
    decode_mask,
    encode_mask,
    initial_table,
    initial_values,
)
from autodrs.runfolder import load_model, save_model
from autodrs.spec import ArchSpec, SpecError
from autodrs.train.trainer import TrainConfig, Trainer


def random_mask(rows: int, dim: int, keep: float, seed: int = 0) -> torch.Tensor:
    return torch.rand(rows, dim, generator=torch.Generator().manual_seed(seed)) < keep


def test_mask_text_round_trips_and_rejects_a_wrong_table() -> None:
    mask = random_mask(37, 6, 0.3)
    text = encode_mask(mask)
    assert torch.equal(decode_mask(text, 37, 6), mask)
    with pytest.raises(MaskError, match="37 rows x 7 dims"):
        decode_mask(text, 37, 7, "r0")
    with pytest.raises(MaskError, match="corrupt"):
        decode_mask(text[:-8] + "!!!!!!!!", 37, 6, "r0")
    with pytest.raises(MaskError, match="not an autodrs mask"):
        decode_mask("0101", 37, 6, "r0")


def test_pruned_table_looks_up_like_the_masked_dense_table() -> None:
    mask = random_mask(50, 8, 0.25)
    mask[7] = False  # a fully pruned value embeds to zeros
    dense = torch.randn(50, 8)
    table = PrunedTable(mask, dense[mask])
    ids = torch.randint(0, 50, (64, 3), generator=torch.Generator().manual_seed(1))
    ids[0, 0] = 7
    out = table(ids)
    assert out.shape == (64, 3, 8)
    assert torch.equal(out, (dense * mask)[ids])
    assert torch.equal(out[0, 0], torch.zeros(8))
    # only kept entries are stored and trained
    assert [n for n, _ in table.named_parameters()] == ["values"]
    assert table.values.numel() == int(mask.sum())
    out.sum().backward()
    assert table.values.grad is not None and table.values.grad.shape == (int(mask.sum()),)
    assert torch.equal(table.to_dense(), dense * mask)


def test_pruned_table_offsets_take_the_narrowest_type_that_holds_them() -> None:
    small = random_mask(3000, 16, 0.1)  # about 4,800 kept: 2-byte offsets
    large = random_mask(3000, 16, 0.9)  # about 43,200 kept: past int16, 4-byte offsets
    for mask, dtype in ((small, torch.int16), (large, torch.int32)):
        dense = torch.randn(3000, 16)
        table = PrunedTable(mask, dense[mask])
        assert table.row_ptr.dtype == dtype
        assert int(table.row_ptr[-1]) == int(mask.sum())  # the last offset is not wrapped
        ids = torch.arange(3000)
        assert torch.equal(table(ids), dense * mask)
        assert torch.equal(table.mask(), mask)
        assert table.stored_bytes() == (3001 * dtype.itemsize + int(mask.sum()) * (1 + 4))


def test_pruned_column_stores_kept_first_order_weights_only(tiny_synthetic: Dataset) -> None:
    mask = random_mask(400, 1, 0.1)
    mask[0] = True
    mask[-1] = True  # both ends of the id range
    mask[5] = False
    dense = torch.randn(400, 1)
    column = PrunedColumn(mask, dense[mask])
    ids = torch.randint(0, 400, (128, 2), generator=torch.Generator().manual_seed(2))
    ids[0, 0], ids[0, 1], ids[1, 0] = 0, 399, 5
    out = column(ids)
    assert out.shape == (128, 2, 1) and torch.equal(out, (dense * mask)[ids])
    assert out[1, 0, 0] == 0  # a pruned value weighs nothing
    assert torch.equal(column.mask(), mask) and torch.equal(column.to_dense(), dense * mask)
    # 8 bytes a kept row against 4 a row dense (a CSR table would need 4 a row of offsets)
    assert column.stored_bytes() == 8 * int(mask.sum()) < 0.25 * 4 * 400
    assert torch.equal(PrunedColumn(torch.zeros(9, 1, dtype=torch.bool))(ids % 9),
                       torch.zeros(128, 2, 1))

    # a spec's first-order weights pruned per value: built sparsely, validated, round-tripped
    schema = tiny_synthetic.schema
    spec = backbone_spec("deepfm", 8)
    columns = {f: encode_mask(random_mask(schema.field(f).vocab_size, 1, 0.1, seed=i))
               for i, f in enumerate(schema.categorical)}
    pruned = spec.copy(linear_pruning=columns).validate(schema)
    assert ArchSpec.from_json(pruned.to_json()) == pruned
    dense_model, model = build_model(schema, spec), build_model(schema, pruned)
    removed = sum(schema.field(f).vocab_size for f in columns) - sum(
        int(decode_mask(t, schema.field(f).vocab_size, 1).sum()) for f, t in columns.items())
    assert count_parameters(dense_model)["embedding"] - count_parameters(model)["embedding"] \
        == removed
    assert count_bytes(model)["embedding"] < count_bytes(dense_model)["embedding"]
    with pytest.raises(SpecError, match="linear is false"):
        backbone_spec("dnn", 8).copy(linear_pruning=columns).validate(schema)
    with pytest.raises(SpecError, match="rows x 1 dims"):
        spec.copy(linear_pruning={"r0": encode_mask(torch.ones(3, 1, dtype=torch.bool))}
                  ).validate(schema)


def test_initial_values_are_the_seeded_table_under_the_mask() -> None:
    mask = random_mask(5000, 4, 0.1)  # more rows than one init chunk
    full = initial_table(7, "item_id", 5000, 4)
    assert torch.equal(initial_values(7, "item_id", mask), full[mask])
    assert not torch.equal(initial_table(8, "item_id", 5000, 4), full)


def pruned_spec(ds: Dataset, keep: float, model: str = "deepfm") -> ArchSpec:
    spec = backbone_spec(model, 16)
    masks = {f: encode_mask(random_mask(ds.schema.field(f).vocab_size, 16, keep, seed=i))
             for i, f in enumerate(ds.schema.categorical)}
    return spec.copy(pruning=masks)


def test_pruned_spec_stores_only_kept_entries(tiny_synthetic: Dataset) -> None:
    base_spec = backbone_spec("deepfm", 16)
    spec = pruned_spec(tiny_synthetic, 0.1)
    assert ArchSpec.from_json(spec.to_json()) == spec
    base, pruned = build_model(tiny_synthetic.schema, base_spec), \
        build_model(tiny_synthetic.schema, spec)
    kept = sum(int(m.values.numel()) for m in pruned.embedding.pruned.values())
    dense = sum(tiny_synthetic.schema.field(f).vocab_size * 16
                for f in tiny_synthetic.schema.categorical)
    saved = count_parameters(base)["embedding"] - count_parameters(pruned)["embedding"]
    assert saved == dense - kept
    assert count_bytes(pruned)["embedding"] < 0.3 * count_bytes(base)["embedding"]
    state = pruned.state_dict()
    assert not any(k.startswith("embedding.tables.") for k in state), "a dense table is stored"
    assert state["embedding.pruned.r0.values"].numel() == len(
        decode_mask(spec.pruning["r0"], tiny_synthetic.schema.field("r0").vocab_size, 16)
        .nonzero())


def test_a_mask_that_does_not_fit_is_a_clear_spec_error(tiny_synthetic: Dataset) -> None:
    spec = pruned_spec(tiny_synthetic, 0.2)
    with pytest.raises(SpecError, match="r0"):
        spec.copy(field_dims={"r0": 8}).validate(tiny_synthetic.schema)
    with pytest.raises(SpecError, match="num0"):
        spec.copy(pruning={"num0": spec.pruning["r0"]}).validate(tiny_synthetic.schema)


def test_saved_pruned_model_predicts_identically_and_is_smaller(
        tiny_synthetic: Dataset, fast_config: TrainConfig, tmp_path) -> None:
    config = TrainConfig(**{**fast_config.__dict__, "epochs": 1})
    # FM: the embedding tables are most of the model, as in most deep recommenders
    base = fit_spec(tiny_synthetic, backbone_spec("fm", 16), config)
    pruned = fit_spec(tiny_synthetic, pruned_spec(tiny_synthetic, 0.05, "fm"), config)
    save_model(tmp_path / "base", base.model, tiny_synthetic.schema)
    save_model(tmp_path / "pruned", pruned.model, tiny_synthetic.schema)
    loaded, _ = load_model(tmp_path / "pruned")
    trainer = Trainer(config)
    before = trainer.predict(pruned.model, tiny_synthetic.test)
    after = trainer.predict(loaded, tiny_synthetic.test)
    assert (before == after).all()
    base_file = (tmp_path / "base" / "model.pt").stat().st_size
    pruned_file = (tmp_path / "pruned" / "model.pt").stat().st_size
    # equal up to the archive name the file format repeats in each record
    assert file_bytes(pruned.model) == pytest.approx(pruned_file, rel=0.01)
    assert file_bytes(base.model) == pytest.approx(base_file, rel=0.01)
    tensors = count_bytes(base.model)["total"] / count_bytes(pruned.model)["total"]
    assert tensors > 4
    # the file adds a small record per tensor, so it shrinks a little less than the tensors
    assert 0.7 * tensors < base_file / pruned_file <= tensors


def test_mixed_dims_shrink_the_tables(tiny_synthetic: Dataset) -> None:
    spec = backbone_spec("deepfm", 16)
    small = spec.copy(field_dims={"n0": 2, "n1": 2, "r0": 32})
    a, b = build_model(tiny_synthetic.schema, spec), build_model(tiny_synthetic.schema, small)
    vocab = {f: tiny_synthetic.schema.field(f).vocab_size for f in ("n0", "n1", "r0")}
    expected = 14 * (vocab["n0"] + vocab["n1"]) - 16 * vocab["r0"]
    assert count_parameters(a)["embedding"] - count_parameters(b)["embedding"] == expected


@pytest.mark.parametrize(("layout", "full"), [("rows", False), ("full_rows", True)])
def test_pruned_table_of_mostly_pruned_rows_stores_its_kept_rows_only(layout: str,
                                                                      full: bool) -> None:
    """A huge field whose rare values are pruned whole: the stored bytes follow the kept
    rows, not the vocabulary (a CSR index would cost 4 bytes a row of offsets)."""
    rows, dim = 200_000, 16
    mask = torch.zeros(rows, dim, dtype=torch.bool)
    kept_rows = torch.randperm(rows, generator=torch.Generator().manual_seed(3))[:500]
    kept_rows[0] = rows - 1  # the last id of the range
    if full:
        mask[kept_rows] = True
    else:
        mask[kept_rows] = random_mask(500, dim, 0.5, seed=4)
        mask[kept_rows, 0] = True
    dense = torch.randn(rows, dim)
    table = PrunedTable(mask, dense[mask])
    assert table.layout == layout
    ids = torch.cat([kept_rows[:200], torch.randint(0, rows, (300,),
                                                    generator=torch.Generator().manual_seed(5))])
    assert torch.equal(table(ids.view(100, 5)), (dense * mask)[ids].view(100, 5, dim))
    assert torch.equal(table.mask(), mask) and torch.equal(table.to_dense(), dense * mask)
    assert torch.equal(table.row_dims(), mask.sum(1))
    nnz = int(mask.sum())
    index = 4 * 500 if full else 4 * 500 + 2 * 501 + nnz
    assert table.stored_bytes() == index + 4 * nnz < 4 * rows
    table(ids).sum().backward()
    assert table.values.grad is not None and table.values.grad.shape == (nnz,)
    # a table that keeps nothing stores nothing and embeds every id to zeros
    empty = PrunedTable(torch.zeros(rows, dim, dtype=torch.bool))
    assert empty.stored_bytes() == 0 and torch.equal(empty(ids), torch.zeros(500, dim))
