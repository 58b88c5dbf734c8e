"""Timeouts as an immutable value, and the per-call deadline derived from it.

What each bound covers (the same on every transport):

``connect``
    TCP connect plus TLS handshake of a new connection. Expiry: ConnectTimeout
    (never sent).
``read``
    From the first byte of the request written to the last byte of the answer:
    the whole exchange, not one ``recv``, so a server that drips a byte at a
    time cannot stretch it. Expiry: ReadTimeout (may have reached the server).
``pool``
    The wait for a free pooled connection when the pool is full. Expiry:
    PoolTimeout (never sent).
``total``
    The whole call: pool wait, connect, send, read (and, with retries, every
    attempt and backoff). Each phase's bound is cut to what is left of it, and
    its expiry raises the error of the phase it cut (PoolTimeout,
    ConnectTimeout or ReadTimeout).

``None`` means no bound for that part. A :class:`Deadline` is built once per
call from a Timeout and the clock; transports ask it how long each phase may
take.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from time import monotonic
from typing import Any

from .models import reduce_by_init_fields

__all__ = ["Deadline", "Timeout"]


def _check(name: str, value: float | None) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"Timeout.{name} must be a number of seconds or None, not {value!r}")
    if not value > 0 or math.isinf(value) or math.isnan(value):
        raise ValueError(f"Timeout.{name} must be a finite number > 0 or None, not {value!r}")


@dataclass(frozen=True, slots=True)
class Timeout:
    """Bounds of one call, in seconds (see the module docstring).

    Defaults suit a web tier calling RPC servers on its own network: a slow
    connect fails fast, a call gets 10 s in all.
    """

    connect: float | None = 2.0
    read: float | None = 10.0
    pool: float | None = 2.0
    total: float | None = 10.0

    def __post_init__(self) -> None:
        for name in ("connect", "read", "pool", "total"):
            _check(name, getattr(self, name))

    @classmethod
    def coerce(cls, value: Timeout | float | int | None) -> Timeout:
        """A Timeout from a Timeout, a number (every bound at once) or None (no bounds)."""
        if isinstance(value, Timeout):
            return value
        if value is None:
            return cls(connect=None, read=None, pool=None, total=None)
        return cls(connect=value, read=value, pool=value, total=value)

    def with_(self, **changes: Any) -> Timeout:
        """A copy with some bounds changed: ``t.with_(read=30)``."""
        return replace(self, **changes)

    def start(self, now: float | None = None) -> Deadline:
        """The deadline of a call starting at ``now`` (a ``time.monotonic()``
        instant; None: the clock now)."""
        if now is None:
            now = monotonic()
        return Deadline(self, None if self.total is None else now + self.total)

    def __reduce__(self) -> tuple[Any, ...]:
        return reduce_by_init_fields(self)


class Deadline:
    """One call's clock: the Timeout plus the absolute end of the call.

    ``timeout`` is the call's :class:`Timeout`; ``expires`` is a
    ``time.monotonic()`` instant or None. The ``*_for`` methods give how long
    a phase may still take: the phase's own bound cut to the time left,
    ``None`` for unbounded, and never below zero.
    """

    __slots__ = ("expires", "timeout")

    def __init__(self, timeout: Timeout, expires: float | None) -> None:
        self.timeout = timeout
        self.expires = expires

    def remaining(self) -> float | None:
        if self.expires is None:
            return None
        return max(0.0, self.expires - monotonic())

    def expired(self) -> bool:
        return self.expires is not None and monotonic() >= self.expires

    def _cut(self, bound: float | None) -> float | None:
        if self.expires is None:
            return bound
        left = max(0.0, self.expires - monotonic())
        return left if bound is None or left < bound else bound

    def pool_for(self) -> float | None:
        return self._cut(self.timeout.pool)

    def connect_for(self) -> float | None:
        return self._cut(self.timeout.connect)

    def read_for(self) -> float | None:
        # _cut() inlined: this runs on every call
        bound = self.timeout.read
        if self.expires is None:
            return bound
        left = self.expires - monotonic()
        if left <= 0.0:
            return 0.0
        return left if bound is None or left < bound else bound

    def __repr__(self) -> str:
        return f"Deadline(remaining={self.remaining()!r}, timeout={self.timeout!r})"
