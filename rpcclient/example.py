"""The example app of the README, also the server the test suite calls.

Run it with ``rpcclient serve rpcclient.example:app --bind 127.0.0.1:8000``.
Services: ``echo.echo``, ``math.add``, ``user.get_profile`` and the
``debug.*`` helpers tests use (sleep, fail, large answers, the deadline a
handler sees, and a counter of runs for exactly-once checks).
"""

from __future__ import annotations

import itertools
import time
from typing import Any

import gevent

from .server._engine.app import RPCApp, current_deadline

__all__ = ["MAX_LARGE", "app"]

#: the largest answer ``debug.large`` makes
MAX_LARGE = 64 * 1024 * 1024

app = RPCApp()


@app.register("echo.echo")
def echo(value: Any) -> Any:
    """Return ``value`` unchanged."""
    return value


@app.register("math.add")
def add(a: Any, b: Any) -> Any:
    """Return ``a + b``."""
    return a + b


class Users:
    """The ``user`` service: a fixed, made-up directory."""

    def get_profile(self, user_id: int) -> dict[str, Any]:
        """Return the profile of ``user_id``."""
        return {"id": user_id, "name": f"user{user_id}", "active": True, "tags": ["example"]}


app.add_service("user", Users())


@app.register("debug.sleep")
def sleep(seconds: float) -> float:
    """Sleep cooperatively for ``seconds``, then return them."""
    gevent.sleep(seconds)
    return seconds


@app.register("debug.fail")
def fail(message: str = "failed on purpose") -> None:
    """Raise ``ValueError(message)``: the server answers 500, type ``ValueError``."""
    raise ValueError(message)


@app.register("debug.large")
def large(n: int) -> bytes:
    """Return ``n`` bytes (``0 <= n <= MAX_LARGE``, else ``ValueError``)."""
    if not isinstance(n, int) or not 0 <= n <= MAX_LARGE:
        raise ValueError(f"n must be an int from 0 to {MAX_LARGE}, not {n!r}")
    return b"x" * n


@app.register("debug.deadline")
def deadline() -> float | None:
    """The milliseconds left of the client's budget (``X-Rpc-Timeout-Ms``), or None."""
    when = current_deadline()
    if when is None:
        return None
    return round((when - time.monotonic()) * 1000.0, 3)


_runs = itertools.count(1)


@app.register("debug.count")
def count() -> int:
    """How many times ``debug.count`` has run in this process, this run included."""
    return next(_runs)
