"""``python -m rpcclient._tools.ab``: the same as ``rpcclient ab``."""

from rpcclient._tools.ab.cli import main

raise SystemExit(main())
