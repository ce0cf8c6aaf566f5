"""Run folders: what a command writes, and how a saved model is loaded back safely.

A saved model is ``model.pt`` (a plain state dict, loaded with ``weights_only=True``),
``spec.json``, ``schema.json`` (the fitted encoders) and ``manifest.json`` holding the
SHA-256 of each file. Loading never executes code from a file, and a tampered, truncated
or foreign file gives a clear error.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
from pathlib import Path
from typing import Any

import torch

from autodrs.data.schema import Schema
from autodrs.models.builder import CTRModel, build_model
from autodrs.spec import ArchSpec

MODEL_FILES = ("model.pt", "spec.json", "schema.json")
FORMAT = "autodrs-model/1"


class ModelFileError(ValueError):
    """A saved model folder is missing, tampered with, truncated or not autodrs's."""


def write_json(path: str | Path, data: Any) -> None:
    """Write JSON atomically: a killed process never leaves a half-written file."""
    path = Path(path)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, default=_jsonable))
    os.replace(tmp, path)


def _jsonable(value: Any) -> Any:
    if hasattr(value, "item"):
        return value.item()
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(f"cannot write {type(value).__name__} to JSON")


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def save_model(folder: str | Path, model: CTRModel, schema: Schema) -> None:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    tmp = folder / "model.pt.tmp"
    torch.save(state, tmp)
    os.replace(tmp, folder / "model.pt")
    model.spec.to_json(folder / "spec.json")
    schema.save(folder / "schema.json")
    manifest = {"format": FORMAT, "files": {n: sha256(folder / n) for n in MODEL_FILES}}
    write_json(folder / "manifest.json", manifest)


def load_model(folder: str | Path) -> tuple[CTRModel, Schema]:
    folder = Path(folder)
    if folder.is_file():
        raise ModelFileError(f"{folder} is a file; a model is a folder holding "
                             f"{', '.join(MODEL_FILES)} and manifest.json")
    if not folder.is_dir():
        raise ModelFileError(f"model folder {folder} not found")
    manifest_path = folder / "manifest.json"
    if not manifest_path.exists():
        raise ModelFileError(f"{folder} has no manifest.json; not an autodrs model folder")
    try:
        manifest = json.loads(manifest_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ModelFileError(f"{manifest_path} is not valid JSON ({e})") from e
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise ModelFileError(f"{manifest_path} is not an autodrs model manifest")
    checksums = manifest.get("files")
    if not isinstance(checksums, dict):
        raise ModelFileError(f"{manifest_path} has no checksums (files)")
    for name in MODEL_FILES:
        path = folder / name
        if not path.exists():
            raise ModelFileError(f"{folder} is missing {name}")
        if sha256(path) != checksums.get(name):
            raise ModelFileError(f"{path} does not match its checksum: tampered or truncated")
    try:
        spec = ArchSpec.from_json(folder / "spec.json")
        schema = Schema.load(folder / "schema.json")
    except Exception as e:
        raise ModelFileError(f"cannot load the model in {folder}: {e}") from e
    try:
        state = torch.load(folder / "model.pt", map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise ModelFileError(f"cannot load {folder}/model.pt: it holds objects other than "
                             "tensors, and autodrs loads weights only (no code from a file "
                             "runs)") from e
    except Exception as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ModelFileError(f"cannot load {folder}/model.pt: not a PyTorch weights file "
                             f"({first})") from e
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor)
                                              for v in state.values()):
        raise ModelFileError(f"{folder}/model.pt is not a state dict of tensors")
    try:
        model = build_model(schema, spec)
    except ValueError as e:
        raise ModelFileError(f"{folder}/spec.json does not fit its schema.json: {e}") from e
    try:
        model.load_state_dict(state)
    except (RuntimeError, KeyError, TypeError) as e:
        raise ModelFileError(f"{folder}/model.pt does not fit its spec: {e}") from e
    model.eval()
    return model, schema
