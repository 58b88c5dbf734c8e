"""Waiting for a condition the test cannot be told of: polled, with a bound."""

from __future__ import annotations

import time
from collections.abc import Callable

import gevent


def wait_for(check: Callable[[], object], seconds: float, every: float = 0.01) -> bool:
    """Poll ``check()`` every ``every`` s until it is true (True) or ``seconds`` have
    passed (False): a bound, not an assertion, so the caller says what failed.
    ``check`` runs once more after the bound, so a condition met late still counts."""
    end = time.monotonic() + seconds
    while not check():
        if time.monotonic() > end:
            return False
        gevent.sleep(every)
    return True
