"""Search methods, one module each, grouped by component. Importing this package
registers every method with ``autodrs.search.base.METHODS``."""
# ruff: noqa: I001  (one import line appended per method, in any order)
from autodrs.methods import hparams  # noqa: F401, E402
from autodrs.methods.training import autoloss, lambdaopt, optim  # noqa: F401
from autodrs.methods import embedding  # noqa: F401, E402
from autodrs.methods import interaction  # noqa: F401, E402
from autodrs.methods import selection  # noqa: F401, E402
from autodrs.methods import crossing  # noqa: F401, E402
from autodrs.methods import blocks  # noqa: F401, E402
from autodrs.methods import comprehensive  # noqa: F401, E402
from autodrs.methods import transfer  # noqa: F401, E402
from autodrs.methods import sequence  # noqa: F401, E402
from autodrs.methods import multitask  # noqa: F401, E402
