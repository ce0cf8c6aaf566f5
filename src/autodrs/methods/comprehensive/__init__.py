"""Comprehensive search and compression: methods that decide several parts of a model
together. DeepLight and UMEC shrink the MLP, the interaction pairs and the embeddings to a
target sparsity or resource budget, with inference latency measured against the dense
model; AutoIAS searches one integrated space (field dims, pairs and their functions, the
MLP) with an RL generator over a weight-sharing supernet."""

from autodrs.methods.comprehensive import autoias, deeplight, umec  # noqa: F401  (registers them)
