"""``python -m bench ARGS`` runs the ``bench`` command line (the same as the ``bench`` script)."""

from bench.cli import main

raise SystemExit(main())
