"""Model files are safe to load: no code runs from them, and a tampered, truncated or foreign
file gives a clear ModelFileError."""

from __future__ import annotations

import io
import json
import os
import pickle
import shutil
import zipfile
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from autodrs.cli import app
from autodrs.runfolder import ModelFileError, load_model, sha256, write_json
from autodrs.serve.tuning import SERVING_FILE, load_serving_config


@pytest.fixture()
def folder(saved_model: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(saved_model, tmp_path / "model"))


def reseal(folder: Path) -> None:
    """Rewrite the manifest to match the files, as an attacker who edits both would."""
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["files"] = {n: sha256(folder / n) for n in manifest["files"]}
    write_json(folder / "manifest.json", manifest)


class RunsCode:
    """Unpickling this calls ``open(marker, "w")``: proof that code ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str, str]]:
        return (open, (str(self.marker), "w"))


def test_intact_folder_loads(folder: Path) -> None:
    model, schema = load_model(folder)
    assert not model.training
    assert schema.fitted


def test_tampered_weights_are_refused(folder: Path) -> None:
    data = bytearray((folder / "model.pt").read_bytes())
    data[len(data) // 2] ^= 0x01
    (folder / "model.pt").write_bytes(bytes(data))
    with pytest.raises(ModelFileError, match="model.pt does not match its checksum"):
        load_model(folder)


def test_tampered_spec_is_refused(folder: Path) -> None:
    spec = json.loads((folder / "spec.json").read_text())
    spec["mlp"] = [4]
    (folder / "spec.json").write_text(json.dumps(spec))
    with pytest.raises(ModelFileError, match="spec.json does not match its checksum"):
        load_model(folder)


def test_truncated_weights_are_refused(folder: Path) -> None:
    path = folder / "model.pt"
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 3])
    with pytest.raises(ModelFileError, match="tampered or truncated"):
        load_model(folder)
    reseal(folder)  # even with a matching checksum, a truncated file is not loaded
    with pytest.raises(ModelFileError, match="model.pt: not a PyTorch weights file"):
        load_model(folder)


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_pickle_with_code_never_runs(folder: Path, tmp_path: Path) -> None:
    marker = tmp_path / "code-ran"
    (folder / "model.pt").write_bytes(pickle.dumps({"w": RunsCode(marker)}))
    reseal(folder)
    with pytest.raises(ModelFileError, match="holds objects other than tensors"):
        load_model(folder)
    assert not marker.exists()


def test_torch_file_with_code_never_runs(folder: Path, tmp_path: Path) -> None:
    marker = tmp_path / "code-ran"
    torch.save({"w": RunsCode(marker)}, folder / "model.pt")
    reseal(folder)
    with pytest.raises(ModelFileError, match="holds objects other than tensors"):
        load_model(folder)
    assert not marker.exists()


def test_random_zip_is_refused(folder: Path) -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as z:
        z.writestr("archive/data.pkl", os.urandom(256))
    (folder / "model.pt").write_bytes(buffer.getvalue())
    reseal(folder)
    with pytest.raises(ModelFileError, match="model.pt: not a PyTorch weights file"):
        load_model(folder)


def test_weights_of_another_model_are_refused(folder: Path) -> None:
    torch.save({"embedding.tables.0.weight": torch.zeros(3, 3)}, folder / "model.pt")
    reseal(folder)
    with pytest.raises(ModelFileError, match="does not fit its spec"):
        load_model(folder)


def test_foreign_manifest_and_paths(folder: Path, tmp_path: Path) -> None:
    with pytest.raises(ModelFileError, match="is a file"):
        load_model(folder / "model.pt")
    with pytest.raises(ModelFileError, match="not found"):
        load_model(tmp_path / "nowhere")
    (folder / "manifest.json").write_bytes(pickle.dumps({"format": "autodrs-model/1"}))
    with pytest.raises(ModelFileError, match="not valid JSON"):
        load_model(folder)
    (folder / "manifest.json").write_text(json.dumps({"format": "other/1", "files": {}}))
    with pytest.raises(ModelFileError, match="not an autodrs model manifest"):
        load_model(folder)
    (folder / "manifest.json").unlink()
    with pytest.raises(ModelFileError, match="no manifest.json"):
        load_model(folder)


def test_malformed_serving_config_is_refused(folder: Path) -> None:
    assert load_serving_config(folder).source == "default"
    (folder / SERVING_FILE).write_text(json.dumps({"config": {"batch_size": "many"}}))
    with pytest.raises(ModelFileError, match="not a valid serving configuration"):
        load_serving_config(folder)
    (folder / SERVING_FILE).write_text("{not json")
    with pytest.raises(ModelFileError, match="not a valid serving configuration"):
        load_serving_config(folder)


def test_commands_report_a_tampered_folder(folder: Path, tmp_path: Path) -> None:
    (folder / "schema.json").write_text((folder / "schema.json").read_text()[:-10])
    for args in (["export", "--format", "onnx", "--out", str(tmp_path / "m.onnx")],
                 ["predict", "--data", str(tmp_path / "x.csv"), "--out", str(tmp_path / "p.csv")],
                 ["tune-serving"]):
        result = CliRunner().invoke(app, [args[0], "--model", str(folder), *args[1:]])
        assert result.exit_code == 2, result.output
        assert "schema.json does not match its checksum" in " ".join(result.output.split())
