"""Model files record the versions that wrote them, and a file written by another autodrs
release or file format is refused with a clear error instead of scoring silently wrong."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from autodrs.cli import app
from autodrs.data.dataset import Dataset
from autodrs.provenance import autodrs_version, versions
from autodrs.runfolder import FORMAT, ModelFileError, load_model, release
from autodrs.serve.export import META_FORMAT, ExportedModel, ExportError, export_model
from autodrs.serve.predictor import Predictor


@pytest.fixture()
def folder(saved_model: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(saved_model, tmp_path / "model"))


def edit(path: Path, **changes: object) -> None:
    data = json.loads(path.read_text())
    for key, value in changes.items():
        if key == "autodrs":
            data["versions"]["autodrs"] = value
        elif value is None:
            data.pop(key)
        else:
            data[key] = value
    path.write_text(json.dumps(data))


def other_release() -> str:
    major, minor = release(autodrs_version()).split(".")
    return f"{major}.{int(minor) + 1}.0"


def test_manifest_records_the_versions(folder: Path) -> None:
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["format"] == FORMAT == "autodrs-model/2"
    assert manifest["versions"] == versions()
    assert {"autodrs", "torch", "polars", "numpy"} <= set(manifest["versions"])
    assert manifest["versions"]["autodrs"] == autodrs_version()


def test_another_patch_of_the_same_release_loads(folder: Path) -> None:
    major_minor = release(autodrs_version())
    edit(folder / "manifest.json", autodrs=f"{major_minor}.999")
    model, schema = load_model(folder)
    assert schema.fitted and not model.training


def test_a_model_of_another_release_is_refused(folder: Path) -> None:
    saved_by = other_release()
    edit(folder / "manifest.json", autodrs=saved_by)
    with pytest.raises(ModelFileError) as caught:
        load_model(folder)
    message = str(caught.value)
    assert f"saved by autodrs {saved_by}" in message
    assert f"this is autodrs {autodrs_version()}" in message
    assert f"install autodrs=={release(saved_by)}.*" in message


def test_a_model_of_the_previous_file_format_is_refused(folder: Path) -> None:
    # what autodrs 0.1 wrote before versions were recorded: the format, the checksums
    edit(folder / "manifest.json", format="autodrs-model/1", versions=None)
    with pytest.raises(ModelFileError, match="saved by an earlier autodrs in the format "
                                             "autodrs-model/1.*reads autodrs-model/2 only"):
        load_model(folder)


def test_a_manifest_without_versions_is_refused(folder: Path) -> None:
    edit(folder / "manifest.json", versions=None)
    with pytest.raises(ModelFileError, match="does not record the autodrs version"):
        load_model(folder)


def test_serving_commands_refuse_a_stale_model(folder: Path, tmp_path: Path) -> None:
    edit(folder / "manifest.json", autodrs=other_release())
    result = CliRunner().invoke(app, ["export", "--model", str(folder), "--format", "onnx",
                                      "--out", str(tmp_path / "m.onnx")])
    assert result.exit_code == 2, result.output
    assert "is read only by the release that saved it" in " ".join(result.output.split())


def test_an_export_records_versions_and_refuses_another_release(
        tiny_synthetic: Dataset, saved_model: Path, tmp_path: Path) -> None:
    predictor = Predictor.from_folder(saved_model)
    path = tmp_path / "model.pt"
    meta = export_model(predictor.model, predictor.schema, path, "torchscript")
    assert meta["format"] == META_FORMAT and meta["versions"] == versions()
    batch = tiny_synthetic.test.batch(slice(0, 50))
    np.testing.assert_allclose(ExportedModel.load(path).predict_batch(batch),
                               predictor.predict_batch(batch), atol=1e-5)
    meta_path = path.with_name(path.name + ".meta.json")
    edit(meta_path, autodrs=other_release())
    with pytest.raises(ExportError, match="is read only by the release that saved it"):
        ExportedModel.load(path)
    edit(meta_path, format="autodrs-export/1", versions=None)
    with pytest.raises(ExportError, match="format autodrs-export/1.*reads autodrs-export/2"):
        ExportedModel.load(path)
