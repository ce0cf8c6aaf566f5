"""Hand-crafted backbones and the model builder."""

from autodrs.models.backbones import BACKBONES, backbone_spec
from autodrs.models.builder import CTRModel, build_model, count_parameters

__all__ = ["BACKBONES", "CTRModel", "backbone_spec", "build_model", "count_parameters"]
