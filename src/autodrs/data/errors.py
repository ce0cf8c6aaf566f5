"""Errors raised for bad input data."""


class DataError(ValueError):
    """The input data cannot be used as given; the message names the problem."""
