"""Comprehensive compression: methods that shrink several parts of a model together (the
MLP, the interaction pairs and the embeddings) to a target sparsity or resource budget,
with inference latency measured against the dense model: DeepLight and UMEC."""

from autodrs.methods.comprehensive import deeplight, umec  # noqa: F401  (registers them)
