"""``python -m worker.cli``: the ``psm`` command line."""

from worker.cli import main

main()
