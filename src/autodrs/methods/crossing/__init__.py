"""Generated features: cross features found by AutoCross (beam search with field-wise LR)
and by GLIDER-style interaction detection on a trained network."""

from autodrs.methods.crossing import autocross, glider  # noqa: F401  (registers the methods)
