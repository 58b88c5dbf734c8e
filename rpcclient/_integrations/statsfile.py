"""The saved-stats file: :func:`dump_stats` writes the JSON ``rpcclient stats`` reads."""

from __future__ import annotations

import json
import os
import tempfile
from typing import Any

__all__ = ["dump_stats"]


def dump_stats(client: Any, path: str | os.PathLike[str]) -> None:
    """Write ``client.stats()`` as JSON to ``path``, atomically.

    The file is written beside ``path`` and renamed over it, so a reader
    never sees half of it. Values JSON cannot carry are written as strings.
    Raises OSError when the directory is not writable.
    """
    data = json.dumps(client.stats(), indent=2, sort_keys=True, default=str)
    directory = os.path.dirname(os.fspath(path)) or "."
    fd, tmp = tempfile.mkstemp(prefix=".rpcclient-stats-", dir=directory)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(data + "\n")
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise
