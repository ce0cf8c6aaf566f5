"""``python -m autodrs``: the same command line as the ``autodrs`` script."""

from autodrs.cli import main

main()
