"""Serving: export to TorchScript / ONNX, batch prediction over files, an HTTP endpoint with
micro-batching, and latency-bounded tuning of the serving configuration."""

from autodrs.serve.encoder import RowEncoder
from autodrs.serve.export import (
    FORMATS,
    ExportedModel,
    ExportError,
    TensorInputModel,
    export_model,
    input_names,
)
from autodrs.serve.files import predict_file, read_chunks
from autodrs.serve.predictor import Predictor, sample_batch, sample_rows
from autodrs.serve.rows import RowError, rows_to_columns
from autodrs.serve.tuning import (
    Measurement,
    NoSettingMeetsTarget,
    ServingConfig,
    choose,
    load_serving_config,
    measure,
    save_serving_config,
)

__all__ = [
    "FORMATS", "ExportError", "ExportedModel", "Measurement", "NoSettingMeetsTarget",
    "Predictor", "RowEncoder", "RowError", "ServingConfig", "TensorInputModel", "choose",
    "export_model", "input_names", "load_serving_config", "measure", "predict_file",
    "read_chunks", "rows_to_columns", "sample_batch", "sample_rows", "save_serving_config",
]
