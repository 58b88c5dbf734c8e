"""``python -m rpcclient COMMAND ...``: the same as the ``rpcclient`` console script."""

from ._tools.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
