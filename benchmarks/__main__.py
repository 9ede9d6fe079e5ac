"""``python -m benchmarks``: see :func:`benchmarks.cli.main`."""

from benchmarks.cli import main

main()
