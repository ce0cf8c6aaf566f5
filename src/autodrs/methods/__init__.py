"""Search methods, one module each, grouped by component. Importing this package
registers every method with ``autodrs.search.base.METHODS``."""
