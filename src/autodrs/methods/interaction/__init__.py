"""Feature-interaction search: which interactions to keep, of which order, and (OptInter)
how each is modelled. Importing this package registers its methods."""

from autodrs.methods.interaction import autofis, optinter

__all__ = ["autofis", "optinter"]
