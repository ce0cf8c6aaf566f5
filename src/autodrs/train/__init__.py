"""Training: the trainer, losses, metrics and data-parallel launch.

Once imported, this package is the attribute ``autodrs.train``, where the API's function
of that name is expected; calling the package calls the function (``_Callable``)."""

import sys
import types
from typing import Any


class _Callable(types.ModuleType):
    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        from autodrs.api import train

        return train(*args, **kwargs)


sys.modules[__name__].__class__ = _Callable
