"""Run folders: what a command writes, and how a saved model is loaded back safely.

A run folder holds one run: a command refuses to replace one unless told to
(``--overwrite``), and ``search --resume`` refuses one searched on other data
(``data.json`` records the data a folder's stages were searched on).

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
import shutil
from pathlib import Path
from typing import Any

import torch

from autodrs.data.schema import Schema
from autodrs.models.builder import CTRModel, build_model
from autodrs.provenance import autodrs_version, versions
from autodrs.spec import ArchSpec

MODEL_FILES = ("model.pt", "spec.json", "schema.json")
# /2: hashed vocabularies use the stable documented hash of ``data.schema``, and the manifest
# records the versions that wrote it; a model is read only by the release (major.minor) and
# format that saved it
FORMAT = "autodrs-model/2"
# what the commands write in a run folder (``stages`` is a folder)
RUN_OUTPUTS = ("result.json", "report.html", "leaderboard.md", "leaderboard.html",
               "config.yaml", "data.json", "manifest.json", *MODEL_FILES, "stages")
DATA_FILE = "data.json"
# the search settings that decide which rows and encodings the stages saw
DATA_SETTINGS = ("data", "label", "format", "categorical", "numerical", "sequence", "schema",
                 "group", "time", "split", "min_count", "seed", "search_rows")


class ModelFileError(ValueError):
    """A saved model folder is missing, tampered with, truncated or not autodrs's."""


class RunFolderError(ValueError):
    """A run folder cannot be used as asked: it holds a run that would be replaced, or a
    ``--resume`` names a run made with other data."""


def held_run(folder: Path) -> str | None:
    """What run ``folder`` holds, in words (None when it holds none)."""
    folder = Path(folder)
    result = folder / "result.json"
    if result.is_file():
        try:
            command = json.loads(result.read_text()).get("command", "autodrs")
        except (OSError, ValueError, AttributeError):
            command = "autodrs"
        return f"a finished {command} run (result.json)"
    if (folder / "stages").is_dir():
        return "an unfinished search (stages/ without result.json)"
    if (folder / "model.pt").exists() or (folder / "manifest.json").exists():
        return "a saved model (model.pt)"
    return None


def check_run_folder(folder: Path, resume: bool = False, overwrite: bool = False,
                     can_resume: bool = False) -> None:
    """Refuse a ``--out`` folder holding a run, unless the run is to be resumed or replaced.
    Nothing is written."""
    held = held_run(folder)
    if held is None or overwrite or resume:
        return
    hint = "--resume to continue it, " if can_resume else ""
    raise RunFolderError(f"--out {folder} already holds {held}; pass {hint}--overwrite to "
                         "replace it, or choose another --out folder")


def prepare_run_folder(folder: Path, overwrite: bool = False) -> None:
    """Create ``folder``; with ``overwrite``, first remove the outputs of the run it holds
    (only the files autodrs writes; anything else in the folder stays)."""
    folder = Path(folder)
    if overwrite:
        for name in RUN_OUTPUTS:
            path = folder / name
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            elif path.exists() or path.is_symlink():
                path.unlink()
    folder.mkdir(parents=True, exist_ok=True)


def data_identity(settings: dict[str, Any], info: dict[str, Any]) -> dict[str, Any]:
    """What a search's stages depend on in its data: the data settings as given and a
    fingerprint of the data as read (rows, split sizes, fields and their vocabularies,
    label rate)."""
    seen = {k: v for k, v in info.items() if k != "cached"}
    digest = hashlib.sha256(json.dumps(seen, sort_keys=True, default=str).encode()).hexdigest()
    return {"settings": {k: (str(v) if isinstance(v, Path) else v)
                         for k, v in settings.items() if k in DATA_SETTINGS},
            "rows": info.get("rows"), "name": info.get("name"), "fingerprint": digest}


def check_same_data(folder: Path, identity: dict[str, Any]) -> None:
    """Refuse to resume the search in ``folder`` with other data than its stages saw: the
    settings must match (read from ``data.json``, or ``config.yaml`` in older folders) and
    so must the data's fingerprint where recorded."""
    folder = Path(folder)
    path = folder / DATA_FILE
    if path.is_file():
        try:
            before = json.loads(path.read_text())
        except (OSError, ValueError) as e:
            raise RunFolderError(f"{path} is not valid JSON ({e}); cannot tell what data "
                                 f"{folder} was searched on") from e
    elif (folder / "config.yaml").is_file():
        import yaml

        try:
            config = yaml.safe_load((folder / "config.yaml").read_text()) or {}
        except yaml.YAMLError as e:
            raise RunFolderError(f"{folder}/config.yaml is not valid YAML ({e})") from e
        before = {"settings": {k: config[k] for k in DATA_SETTINGS if k in config}}
    else:
        return  # nothing was searched there yet
    old = before.get("settings") or {}
    new = identity["settings"]
    changed = [k for k in DATA_SETTINGS if k in old and old.get(k) != new.get(k)]
    if changed:
        what = "; ".join(f"--{k.replace('_', '-')} {new.get(k)!r} (was {old.get(k)!r})"
                         for k in changed)
        raise RunFolderError(f"--resume: {folder} was searched with other data settings: "
                             f"{what}; its finished stages do not apply. Use the same "
                             "settings, another --out folder, or --overwrite to start afresh")
    if before.get("fingerprint") not in (None, identity["fingerprint"]):
        raise RunFolderError(
            f"--resume: {folder} was searched on {before.get('name')} as read then "
            f"({before.get('rows')} rows), and the data reads differently now "
            f"({identity['rows']} rows, other split sizes, values or label rate); its "
            "finished stages do not apply. Use another --out folder, or --overwrite to start "
            "afresh")


def save_data_identity(folder: Path, identity: dict[str, Any]) -> None:
    write_json(Path(folder) / DATA_FILE, identity)


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
    manifest = {"format": FORMAT, "versions": versions(),
                "files": {n: sha256(folder / n) for n in MODEL_FILES}}
    write_json(folder / "manifest.json", manifest)


def release(version: str) -> str | None:
    """A version's release, major.minor (``"0.1"`` for ``"0.1.3"``); None when unknown."""
    parts = version.split("+")[0].split(".")
    if version.endswith("+unknown") or len(parts) < 2:
        return None
    return ".".join(parts[:2])


def incompatible(manifest: dict[str, Any], fmt: str) -> str | None:
    """Why this autodrs cannot read a model file described by ``manifest`` (its ``format``
    and the ``versions`` that wrote it), or None when it can: another file format, or
    another autodrs release (major.minor; an uninstalled tree's version is not compared)."""
    mine = autodrs_version()
    saved_by = (manifest.get("versions") or {}).get("autodrs")
    who = f"autodrs {saved_by}" if saved_by else "an earlier autodrs"
    if manifest.get("format") != fmt:
        return (f"it was saved by {who} in the format {manifest.get('format')}, and this "
                f"autodrs {mine} reads {fmt} only; train it again with this release, or "
                "load it with the release that saved it")
    if not isinstance(saved_by, str):
        return "its manifest does not record the autodrs version that saved it (versions)"
    if None not in (release(saved_by), release(mine)) and release(saved_by) != release(mine):
        return (f"it was saved by autodrs {saved_by}, and this is autodrs {mine}; a model "
                f"file is read only by the release that saved it ({release(saved_by)}): train "
                f"it again with this release, or install autodrs=={release(saved_by)}.*")
    return None


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
    if not isinstance(manifest, dict) or not str(manifest.get("format")).startswith(
            FORMAT.split("/")[0] + "/"):
        raise ModelFileError(f"{manifest_path} is not an autodrs model manifest")
    problem = incompatible(manifest, FORMAT)
    if problem:
        raise ModelFileError(f"cannot load the model in {folder}: {problem}")
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
