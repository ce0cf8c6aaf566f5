"""Transfer: pre-train a CTR model on a source domain and carry it to a small target
domain. AutoFT learns, per instance, which field embeddings and layers to fine-tune and
which to keep frozen; ``baselines`` holds fine-tune-all, freeze-embeddings and scratch."""

from autodrs.methods.transfer import autoft  # noqa: F401  (registers it)
