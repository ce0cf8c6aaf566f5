"""Generated features: cross features found by AutoCross (beam search with field-wise LR)
and by GLIDER-style interaction detection on a trained network."""

from autodrs.methods.crossing import autocross  # noqa: F401  (registers the method)
