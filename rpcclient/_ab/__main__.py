"""``python -m rpcclient._ab``: the same as ``rpcclient ab``."""

from rpcclient._ab.cli import main

raise SystemExit(main())
