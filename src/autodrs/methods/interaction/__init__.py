"""Feature-interaction search: which interactions to keep, of which order, and (OptInter)
how each is modelled. Importing this package registers its methods."""

from autodrs.methods.interaction import (
    aoanet,
    autofis,
    autogroup,
    autohash,
    bpfis,
    fives,
    optinter,
    pairsearch,
    profit,
)
from autodrs.methods.interaction.space import PairSelectionSpace

__all__ = ["PairSelectionSpace", "aoanet", "autofis", "autogroup", "autohash", "bpfis",
           "fives", "optinter", "pairsearch", "profit"]
