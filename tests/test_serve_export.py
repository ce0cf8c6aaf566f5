"""Export to TorchScript and ONNX: the exported model scores the test split like PyTorch."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn
from typer.testing import CliRunner

from autodrs.cli import app
from autodrs.data.dataset import Batch, Dataset
from autodrs.data.sources import load_table
from autodrs.experiment import fit_spec
from autodrs.models.backbones import BACKBONES, backbone_spec
from autodrs.nn.pruned import PrunedTable, encode_mask
from autodrs.runfolder import load_model
from autodrs.serve.export import (
    FORMATS,
    TOLERANCE,
    ExportedModel,
    ExportError,
    export_model,
    sidecar_paths,
)
from autodrs.serve.predictor import Predictor
from autodrs.spec import ArchSpec, ControllerSpec, Interaction
from autodrs.train.trainer import TrainConfig, Trainer

TRAIN = TrainConfig(epochs=1, batch_size=128, lr=1e-2, progress=False, threads=1, seed=0)


def assert_export_matches(model: nn.Module, ds: Dataset, folder: Path) -> None:
    """Both formats reproduce the PyTorch model's test-split probabilities to 1e-5."""
    expected = Trainer(TRAIN).predict(model, ds.test)
    # a trained model whose predictions vary, so agreeing to 1e-5 means something
    assert expected.std() > 1e-3
    for fmt in FORMATS:
        path = folder / f"model.{fmt}"
        meta = export_model(model, ds.schema, path, fmt)
        assert meta["max_abs_diff"] <= TOLERANCE
        got = ExportedModel.load(path, threads=1).predict_batch(ds.test.batch(slice(None)))
        assert got.shape == expected.shape
        np.testing.assert_allclose(got, expected, rtol=0, atol=TOLERANCE)


@pytest.mark.parametrize("name", list(BACKBONES))
def test_every_backbone_exports(name: str, tiny_synthetic: Dataset, tmp_path: Path) -> None:
    model = fit_spec(tiny_synthetic, backbone_spec(name, 8), TRAIN).model
    assert_export_matches(model, tiny_synthetic, tmp_path)


SEARCHED = {
    "mixed_dims": ArchSpec(embed_dim=8, field_dims={"r0": 4, "r1": 12, "n0": 2, "num0": 3},
                           linear=True, fm=True, mlp=[32]),
    # (r0, r1) fits exactly; the 4-field cross is hashed into 500 buckets
    "crosses": ArchSpec(embed_dim=8, crosses=[["r0", "r1"], ["r2", "r3", "r4", "r5"]],
                        cross_buckets=500, field_dims={"r2xr3xr4xr5": 4}, fm=True, mlp=[32]),
    "numerical_encoders": ArchSpec(embed_dim=8, numerical={"num0": "bucket",
                                                           "num_noise": "autodis"},
                                   linear=True, fm=True, mlp=[32]),
    "weighted_interactions": ArchSpec(
        embed_dim=8, fm=True, inner=True, mlp=[32], field_dims={"r1": 4},
        interactions=[Interaction(["r0", "r1"], weight=0.7), Interaction(["r0", "r2"]),
                      Interaction(["r3", "r5"], weight=1.6)]),
    # AdaFS soft field controller (per-example field weights)
    "field_controller": ArchSpec(embed_dim=8, controller=ControllerSpec(), fm=True, mlp=[32]),
}


@pytest.mark.parametrize("case", list(SEARCHED))
def test_searched_specs_export(case: str, tiny_synthetic: Dataset, tmp_path: Path) -> None:
    model = fit_spec(tiny_synthetic, SEARCHED[case], TRAIN).model
    assert_export_matches(model, tiny_synthetic, tmp_path)


def test_pruned_tables_export(tiny_synthetic: Dataset, tmp_path: Path) -> None:
    """Per-value pruned tables (stored sparsely) with a different kept width per value."""
    g = torch.Generator().manual_seed(0)
    masks = {name: encode_mask(torch.rand(tiny_synthetic.schema.field(name).vocab_size, 8,
                                          generator=g) < 0.4)
             for name in ("r0", "r1", "n0")}
    spec = ArchSpec(embed_dim=8, pruning=masks, linear=True, fm=True, mlp=[32])
    model = fit_spec(tiny_synthetic, spec, TRAIN).model
    assert sum(isinstance(m, PrunedTable) for m in model.modules()) == 3
    assert_export_matches(model, tiny_synthetic, tmp_path)


@pytest.mark.parametrize("name", ["deepfm", "autoint"])
def test_sequence_fields_export(name: str, movielens: Dataset, tmp_path: Path) -> None:
    """MovieLens has a multi-valued field (genres) and no numerical field."""
    config = TrainConfig(epochs=1, batch_size=256, lr=1e-2, progress=False, threads=1, seed=0,
                         max_steps=60)
    model = fit_spec(movielens, backbone_spec(name, 8), config).model
    assert_export_matches(model, movielens, tmp_path)


class FirstFieldModel(nn.Module):
    """Not a CTRModel: any module that takes a Batch exports the same way."""

    def __init__(self, vocab: int, seq_field: str | None) -> None:
        super().__init__()
        self.table = nn.Embedding(vocab, 1)
        self.seq_field = seq_field

    def forward(self, batch: Batch) -> torch.Tensor:
        logit = self.table(batch.cat[:, 0]).squeeze(1) + batch.num.sum(1)
        if self.seq_field is not None:
            logit = logit + batch.seq[self.seq_field].float().mean(1) * 0.01
        return logit


class BatchSizeBranch(FirstFieldModel):
    """A forward that branches on the batch size: tracing captures one branch only."""

    def forward(self, batch: Batch) -> torch.Tensor:
        logit = super().forward(batch)
        return logit * 2 if batch.cat.shape[0] > 5 else logit


def test_any_batch_module_exports(tiny_synthetic: Dataset, tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = FirstFieldModel(tiny_synthetic.schema.field("r0").vocab_size, None)
    for fmt in FORMATS:
        export_model(model, tiny_synthetic.schema, tmp_path / f"m.{fmt}", fmt)
        got = ExportedModel.load(tmp_path / f"m.{fmt}").predict_batch(tiny_synthetic.test.batch(
            slice(None)))
        np.testing.assert_allclose(got, Trainer(TRAIN).predict(model, tiny_synthetic.test),
                                   rtol=0, atol=TOLERANCE)


def test_export_that_would_be_wrong_is_refused(tiny_synthetic: Dataset, tmp_path: Path) -> None:
    model = BatchSizeBranch(tiny_synthetic.schema.field("r0").vocab_size, None)
    for fmt in FORMATS:
        path = tmp_path / f"m.{fmt}"
        with pytest.raises(ExportError, match="disagrees with the PyTorch model"):
            export_model(model, tiny_synthetic.schema, path, fmt)
        assert list(tmp_path.iterdir()) == []  # nothing half-written is left behind


def test_export_command_writes_model_and_encoders(saved_model: Path, tmp_path: Path) -> None:
    out = tmp_path / "exports" / "model.onnx"
    result = CliRunner().invoke(app, ["export", "--model", str(saved_model), "--format", "onnx",
                                      "--out", str(out)])
    assert result.exit_code == 0, result.output
    schema_path, meta_path = sidecar_paths(out)
    # the encoders beside the export are the fitted schema, as plain JSON
    assert json.loads(schema_path.read_text()) == json.loads(
        (saved_model / "schema.json").read_text())
    assert json.loads(meta_path.read_text())["export_format"] == "onnx"
    # the export and its encoders alone score raw rows as the model folder does
    raw = load_table("synthetic?rows=4000&seed=1").df.head(200)
    np.testing.assert_allclose(ExportedModel.load(out).predict_frame(raw),
                               Predictor.from_folder(saved_model).predict_frame(raw),
                               rtol=0, atol=TOLERANCE)


def test_export_command_rejects_unknown_format(saved_model: Path, tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["export", "--model", str(saved_model), "--format",
                                      "tflite", "--out", str(tmp_path / "m.tflite")])
    assert result.exit_code == 2
    assert "unknown export format 'tflite'" in result.output


def test_tampered_export_is_refused(saved_model: Path, tmp_path: Path) -> None:
    model, schema = load_model(saved_model)
    path = tmp_path / "model.torchscript"
    export_model(model, schema, path, "torchscript")
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(ExportError, match="checksum"):
        ExportedModel.load(path)
