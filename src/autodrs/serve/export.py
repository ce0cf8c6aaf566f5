"""Export a model to TorchScript or ONNX, with its encoders beside it as plain JSON.

Models take a ``Batch``; an exported graph takes plain tensors. ``TensorInputModel`` is the
bridge: inputs ``cat`` [N, C] int64, ``num`` [N, K] float32, then one ``seq:<field>``
[N, L] int64 per sequence field in schema order (exactly the arrays ``Schema.transform``
produces), output ``probability`` [N]. Any module whose ``forward`` takes a ``Batch`` can be
exported this way; because export traces one run, a forward that branches on the data or on
the batch size would be captured wrongly, so every export is checked against the PyTorch
model on fresh batches of other sizes and refused when they disagree.

Files written for ``--out model.onnx``: ``model.onnx``, ``model.onnx.schema.json`` (the
fitted encoders) and ``model.onnx.meta.json`` (format, input names, SHA-256 checksums, the
versions of autodrs and its libraries that wrote it). An export is loaded only by the autodrs
release (major.minor) and metadata format that wrote it, as a model folder is.
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from autodrs.data.dataset import Batch
from autodrs.data.errors import DataError
from autodrs.data.schema import Schema
from autodrs.provenance import versions
from autodrs.runfolder import incompatible, sha256, write_json
from autodrs.serve.predictor import as_polars, check_float_categories, sample_batch

FORMATS = ("torchscript", "onnx")
OUTPUT = "probability"
# /2: the stable hash of hashed vocabularies, and the versions that wrote the export
META_FORMAT = "autodrs-export/2"
ONNX_OPSET = 17
TOLERANCE = 1e-5
TRACE_ROWS = 8
# batch sizes other than the traced one: a graph specialised to its trace fails on these
VERIFY_ROWS = (3, 301)

Runner = Callable[[dict[str, np.ndarray]], np.ndarray]


class ExportError(ValueError):
    """An export cannot be written, verified or loaded; the message says why."""


class TensorInputModel(nn.Module):
    """Plain tensors in, click probabilities out (see the module docstring for the inputs)."""

    def __init__(self, model: nn.Module, sequence_fields: list[str]) -> None:
        super().__init__()
        self.model = model
        self.sequence_fields = list(sequence_fields)

    def forward(self, cat: torch.Tensor, num: torch.Tensor, *seq: torch.Tensor) -> torch.Tensor:
        batch = Batch(cat, num, dict(zip(self.sequence_fields, seq, strict=True)))
        return torch.sigmoid(self.model(batch))


def input_names(schema: Schema) -> list[str]:
    """Input names of an exported model, in argument order."""
    return ["cat", "num", *(f"seq:{n}" for n in schema.sequence)]


def batch_arrays(batch: Batch, schema: Schema) -> dict[str, np.ndarray]:
    """A batch as the named arrays an exported model takes."""
    arrays = {"cat": batch.cat.numpy(), "num": batch.num.numpy()}
    arrays |= {f"seq:{n}": batch.seq[n].numpy() for n in schema.sequence}
    return arrays


def sidecar_paths(path: str | Path) -> tuple[Path, Path]:
    """Where the encoders and the metadata of the export at ``path`` live."""
    path = Path(path)
    return path.with_name(path.name + ".schema.json"), path.with_name(path.name + ".meta.json")


def export_model(model: nn.Module, schema: Schema, path: str | Path, fmt: str) -> dict[str, Any]:
    """Write ``model`` to ``path`` as ``fmt`` (torchscript or onnx), verify the export against
    the PyTorch model to ``TOLERANCE`` on random batches of several sizes, and write the
    encoders and metadata beside it. Returns the metadata."""
    if fmt not in FORMATS:
        raise ExportError(f"unknown export format {fmt!r}; choose from {', '.join(FORMATS)}")
    path = Path(path)
    if path.is_dir():
        raise ExportError(f"--out {path} is a folder; give a file name such as {path}/model."
                          f"{'onnx' if fmt == 'onnx' else 'pt'}")
    path.parent.mkdir(parents=True, exist_ok=True)
    wrapper = TensorInputModel(model, schema.sequence).eval()
    example = sample_batch(schema, TRACE_ROWS, seed=0)
    args = (example.cat, example.num, *(example.seq[n] for n in schema.sequence))
    tmp = path.with_name(path.name + ".tmp")
    try:
        # grad stays on: under no_grad, eval-mode attention takes a fused fast path
        # (aten::_native_multi_head_attention) that ONNX has no operator for
        with torch.enable_grad(), warnings.catch_warnings():
            # jit.trace and the TorchScript-based ONNX exporter announce their deprecation
            warnings.simplefilter("ignore", category=DeprecationWarning)
            warnings.simplefilter("ignore", category=FutureWarning)
            warnings.simplefilter("ignore", category=torch.jit.TracerWarning)
            if fmt == "torchscript":
                torch.jit.save(torch.jit.trace(wrapper, args, check_trace=False), str(tmp))
            else:
                names = input_names(schema)
                torch.onnx.export(
                    wrapper, args, str(tmp), dynamo=False, input_names=names,
                    output_names=[OUTPUT], opset_version=ONNX_OPSET,
                    dynamic_axes={n: {0: "batch"} for n in [*names, OUTPUT]},
                )
        runner, used_inputs = _load_runner(tmp, fmt, input_names(schema), threads=1)
        worst = 0.0
        for k, rows in enumerate(VERIFY_ROWS):
            batch = sample_batch(schema, rows, seed=k + 1)
            with torch.no_grad():
                expected = wrapper(batch.cat, batch.num,
                                   *(batch.seq[n] for n in schema.sequence)).numpy()
            got = runner(batch_arrays(batch, schema))
            diff = float(np.max(np.abs(got.astype(np.float64) - expected)))
            worst = max(worst, diff)
            if not diff <= TOLERANCE:
                raise ExportError(
                    f"the {fmt} export disagrees with the PyTorch model by {diff:.2e} on a "
                    f"batch of {rows} rows (traced with {TRACE_ROWS}); the model's forward "
                    "probably branches on the data or the batch size, which tracing cannot "
                    "capture, or uses an operator the format computes differently (such as "
                    "top-k over tied scores)"
                )
    except ExportError:
        tmp.unlink(missing_ok=True)
        raise
    except Exception as e:
        tmp.unlink(missing_ok=True)
        raise ExportError(f"cannot export the model to {fmt}: {e}") from e
    os.replace(tmp, path)
    schema_path, meta_path = sidecar_paths(path)
    schema.save(schema_path)
    meta = {
        "format": META_FORMAT,
        "export_format": fmt,
        "inputs": used_inputs,
        "output": OUTPUT,
        "max_abs_diff": worst,
        "versions": versions(),
        "files": {path.name: sha256(path), schema_path.name: sha256(schema_path)},
    }
    spec = getattr(model, "spec", None)
    if spec is not None and hasattr(spec, "to_dict"):
        meta["spec"] = spec.to_dict()
    write_json(meta_path, meta)
    return meta


def _load_runner(path: Path, fmt: str, names: list[str],
                 threads: int | None) -> tuple[Runner, list[str]]:
    """A function from named input arrays to probabilities, and the inputs it reads."""
    if fmt == "torchscript":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", category=DeprecationWarning)
            module = torch.jit.load(str(path), map_location="cpu")
        module.eval()

        def run_torchscript(arrays: dict[str, np.ndarray]) -> np.ndarray:
            with torch.inference_mode():
                return module(*(torch.from_numpy(arrays[n]) for n in names)).numpy()

        return run_torchscript, list(names)
    import onnxruntime as ort

    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    # the exporter drops inputs the graph never reads (e.g. ``num`` with no numerical field)
    onnx_names = [i.name for i in session.get_inputs()]
    unknown = sorted(set(onnx_names) - set(names))
    if unknown:
        raise ExportError(f"{path} is not an autodrs export: unexpected inputs {unknown}")

    def run_onnx(arrays: dict[str, np.ndarray]) -> np.ndarray:
        return session.run([OUTPUT], {n: arrays[n] for n in onnx_names})[0]

    return run_onnx, onnx_names


class ExportedModel:
    """An exported model loaded back with its encoders: raw rows or encoded arrays in,
    probabilities out, without the autodrs model code."""

    def __init__(self, runner: Runner, schema: Schema, inputs: list[str], fmt: str) -> None:
        self.runner = runner
        self.schema = schema
        self.inputs = inputs
        self.format = fmt

    @classmethod
    def load(cls, path: str | Path, threads: int | None = None) -> ExportedModel:
        """Load an export written by ``export_model``; checksums are verified first."""
        path = Path(path)
        schema_path, meta_path = sidecar_paths(path)
        for p in (path, schema_path, meta_path):
            if not p.is_file():
                raise ExportError(f"{p} not found; an export is {path.name} with "
                                  f"{schema_path.name} and {meta_path.name} beside it")
        try:
            meta = json.loads(meta_path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ExportError(f"{meta_path} is not valid JSON ({e})") from e
        if not isinstance(meta, dict) or not str(meta.get("format")).startswith(
                META_FORMAT.split("/")[0] + "/"):
            raise ExportError(f"{meta_path} is not autodrs export metadata")
        problem = incompatible(meta, META_FORMAT)
        if problem:
            raise ExportError(f"cannot load the export {path}: {problem}")
        files = meta.get("files")
        fmt = meta.get("export_format")
        if not isinstance(files, dict) or fmt not in FORMATS:
            raise ExportError(f"{meta_path} is incomplete (files, export_format)")
        for p in (path, schema_path):
            if sha256(p) != files.get(p.name):
                raise ExportError(f"{p} does not match its checksum: tampered or truncated")
        schema = Schema.load(schema_path)
        try:
            runner, inputs = _load_runner(path, fmt, input_names(schema), threads)
        except ExportError:
            raise
        except Exception as e:
            raise ExportError(f"cannot load the {fmt} export {path}: {e}") from e
        return cls(runner, schema, inputs, fmt)

    def predict_arrays(self, arrays: dict[str, np.ndarray]) -> np.ndarray:
        """Probabilities of encoded arrays named as in ``input_names``."""
        missing = [n for n in self.inputs if n not in arrays]
        if missing:
            raise ExportError(f"inputs missing: {', '.join(missing)}")
        return np.asarray(self.runner(arrays), dtype=np.float64)

    def predict_batch(self, batch: Batch) -> np.ndarray:
        return self.predict_arrays(batch_arrays(batch, self.schema))

    def predict_frame(self, frame: Any) -> np.ndarray:
        """Probabilities of raw rows (a Polars or pandas DataFrame or an Arrow table),
        encoded with the saved encoders."""
        df = as_polars(frame)
        missing = [n for n in self.schema.field_names if n not in df.columns]
        if missing:
            raise DataError(f"columns missing from the table: {', '.join(missing)}")
        check_float_categories(self.schema, df)
        arrays = self.schema.transform(df.select(self.schema.field_names), require_label=False)
        return self.predict_arrays(arrays)
