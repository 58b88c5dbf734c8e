"""Exactly-once calls, server side: the dedup stores and the rules of issue 15.

A call with a valid ``X-Request-Id`` is recorded under that id for the store's
``window``: first in flight, then done with the answer to replay. The rules
(the wire contract, README "Exactly-once calls (server)"):

- same id, same fingerprint (blake2b of PATH_INFO and body), done: the stored
  answer is replayed with ``X-Rpc-Replayed: 1``, the handler does not run;
- same id, in flight: wait for the first execution (bounded by the request's
  deadline and the store's lease), then replay; else ``503 DuplicateInFlight``;
- same id, another fingerprint: ``409 RequestIdReused`` (not run);
- ``X-Rpc-Dedup-Scope`` naming another store (or none here): ``503
  DedupScopeMismatch`` (not run);
- a re-send (``X-Rpc-Attempt >= 2``) whose record may have expired or been
  evicted, a done record whose answer was too large to keep, an in-flight
  record past its lease: ``409 OutcomeUnknown`` (not run, never run twice).

Everything is bounded: records by count and answer bytes (memory), key TTL =
window (Redis), each wait by the deadline and the lease.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import gevent
import gevent.event
import msgpack

from .._protocol import ECHOED_REQUEST_ID

if TYPE_CHECKING:
    from ._engine.app import RPCApp, _Method

__all__ = ["DedupStore", "MemoryDedupStore", "RedisDedupStore", "Record", "call_once"]

_SCOPE_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._-")
#: a record's fixed cost counted against max_bytes besides its answer (key, fingerprint, slots)
RECORD_OVERHEAD = 256
#: the bounded backoff of a duplicate polling a shared store (seconds)
POLL_FIRST, POLL_MAX = 0.005, 0.05

_log = logging.getLogger("rpcclient.server")

NEW, IN_FLIGHT, DONE = "new", "in_flight", "done"


@dataclass
class Record:
    """What a store knows about one request id."""

    state: str  #: NEW (just claimed by this caller), IN_FLIGHT or DONE
    fingerprint: bytes
    status: int = 0
    #: the answer body (result or error envelope); None when not kept (too large)
    body: bytes | None = None
    #: IN_FLIGHT past its lease: the first execution's worker may be gone
    lease_over: bool = False


class DedupStore(Protocol):
    """A store of request-id records; every method bounded in time and space."""

    #: names the store on the wire (``[A-Za-z0-9._-]{1,64}``)
    scope: str
    #: seconds a record is kept after its call arrived
    window: float

    def claim(self, key: str, fingerprint: bytes) -> Record:
        """Atomically: record ``key`` in flight and return state NEW, or
        return the existing record."""
        ...

    def wait(self, key: str, timeout: float) -> Record | None:
        """The record once it is DONE or past its lease, or as it is after
        ``timeout`` seconds; None when it vanished."""
        ...

    def complete(self, key: str, status: int, body: bytes | None) -> None:
        """Record the answer of the execution that claimed ``key`` (None: ran,
        answer not kept) and wake its waiting duplicates."""
        ...

    def discard(self, key: str) -> None:
        """Forget a claim whose call did not run."""
        ...

    def evicted_since(self, arrived: float) -> bool:
        """Whether a record that arrived at or after ``arrived`` (a
        :func:`time.monotonic` time) was evicted before its window ended."""
        ...


def _check_window(window: float) -> float:
    if isinstance(window, bool) or not isinstance(window, int | float) or not window > 0:
        raise ValueError(f"window must be a positive number of seconds, not {window!r}")
    return float(window)


def _check_positive(name: str, value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive int, not {value!r}")
    return value


def _check_scope(scope: str) -> str:
    if not isinstance(scope, str) or not 1 <= len(scope) <= 64 or set(scope) - _SCOPE_CHARS:
        raise ValueError(f"a dedup scope must match [A-Za-z0-9._-]{{1,64}}, not {scope!r}")
    return scope


class _MemRecord:
    __slots__ = ("arrived", "body", "done", "event", "fingerprint", "size", "status")

    def __init__(self, fingerprint: bytes, arrived: float) -> None:
        self.fingerprint = fingerprint
        self.arrived = arrived
        self.done = False
        self.status = 0
        self.body: bytes | None = None
        self.size = RECORD_OVERHEAD
        self.event: gevent.event.Event | None = gevent.event.Event()

    def snapshot(self, state: str | None = None) -> Record:
        return Record(
            state or (DONE if self.done else IN_FLIGHT), self.fingerprint, self.status, self.body
        )


class MemoryDedupStore:
    """The in-process store: one per process, so its scope is random per process.

    Holds at most ``max_entries`` records and ``max_bytes`` (answers plus
    :data:`RECORD_OVERHEAD` each); past either it evicts in arrival order and
    remembers the arrival time of the newest record evicted (the eviction
    horizon: a re-send that arrived after it gets ``OutcomeUnknown``). An
    answer above ``max_answer_bytes`` is not kept. Records expire ``window``
    seconds after arrival. In-flight duplicates wait on a gevent Event.
    """

    def __init__(
        self,
        window: float = 60.0,
        max_entries: int = 100_000,
        max_bytes: int = 64 * 1024 * 1024,
        max_answer_bytes: int = 1024 * 1024,
    ) -> None:
        self.window = _check_window(window)
        self.max_entries = _check_positive("max_entries", max_entries)
        self.max_bytes = _check_positive("max_bytes", max_bytes)
        self.max_answer_bytes = _check_positive("max_answer_bytes", max_answer_bytes)
        self.scope = "mem-" + secrets.token_hex(8)
        self._records: OrderedDict[str, _MemRecord] = OrderedDict()
        self._bytes = 0
        #: monotonic arrival of the newest record evicted early (not by expiry)
        self._horizon = float("-inf")
        self.evictions = 0
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._records)

    @property
    def size(self) -> int:
        """The bytes counted against ``max_bytes`` now."""
        return self._bytes

    def _drop_oldest(self, early: bool) -> None:
        _, rec = self._records.popitem(last=False)
        self._bytes -= rec.size
        if early:
            self._horizon = max(self._horizon, rec.arrived)
            self.evictions += 1
        if rec.event is not None:  # waiters find the record gone: OutcomeUnknown
            rec.event.set()

    def _expire(self, now: float) -> None:
        records = self._records
        while records and next(iter(records.values())).arrived <= now - self.window:
            self._drop_oldest(early=False)

    def claim(self, key: str, fingerprint: bytes) -> Record:
        now = time.monotonic()
        with self._lock:
            self._expire(now)
            rec = self._records.get(key)
            if rec is not None:
                return rec.snapshot()
            while len(self._records) >= self.max_entries or (
                self._records and self._bytes + RECORD_OVERHEAD > self.max_bytes
            ):
                self._drop_oldest(early=True)
            rec = _MemRecord(fingerprint, now)
            self._records[key] = rec
            self._bytes += rec.size
            return rec.snapshot(NEW)

    def wait(self, key: str, timeout: float) -> Record | None:
        rec = self._records.get(key)
        if rec is None:
            return None
        if rec.event is not None and timeout > 0:
            rec.event.wait(timeout)
        if self._records.get(key) is not rec:
            return None
        return rec.snapshot()

    def complete(self, key: str, status: int, body: bytes | None) -> None:
        with self._lock:
            rec = self._records.get(key)
            if rec is None or rec.done:
                return  # evicted while it ran: nothing to replay
            if body is not None and len(body) > self.max_answer_bytes:
                body = None
            rec.done, rec.status, rec.body = True, status, body
            if body is not None:
                rec.size += len(body)
                self._bytes += len(body)
            event, rec.event = rec.event, None
            # the answer may push past max_bytes: evict oldest, never this one
            while self._bytes > self.max_bytes and len(self._records) > 1:
                if next(iter(self._records)) == key:
                    break
                self._drop_oldest(early=True)
            if self._bytes > self.max_bytes and rec.body is not None:
                self._bytes -= len(rec.body)
                rec.size -= len(rec.body)
                rec.body = None
        if event is not None:
            event.set()

    def discard(self, key: str) -> None:
        with self._lock:
            rec = self._records.pop(key, None)
            if rec is not None:
                self._bytes -= rec.size
                if rec.event is not None:
                    rec.event.set()

    def evicted_since(self, arrived: float) -> bool:
        return self._horizon >= arrived


# -- Redis -----------------------------------------------------------------------------

# KEYS[1] the record; ARGV[1] the done record. Writes only over an in-flight
# record (never resurrects an expired key, never overwrites a done one) and
# keeps its TTL (window from arrival).
_COMPLETE = """
local cur = redis.call('GET', KEYS[1])
if not cur then return 0 end
if string.byte(cur, 2) ~= 0xa1 or string.sub(cur, 3, 3) ~= 'f' then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'KEEPTTL')
return 1
"""


class RedisDedupStore:
    """A store shared by every worker process and host using one Redis database.

    ``client_or_url``: a ``redis.Redis`` or a ``redis://`` / ``unix://`` URL.
    Keys are ``prefix + request id`` with TTL ``window`` (ms, from arrival).
    A record is a small msgpack array: ``["f", fingerprint, lease_until_ms]``
    in flight, ``["d", fingerprint, status, body or nil]`` done. The claim is
    ``SET NX PX``; the done record is written by a Lua script only over an
    in-flight one. An in-flight record past ``lease`` seconds means the first
    worker may be gone: duplicates get ``OutcomeUnknown``. Duplicates poll
    with a bounded backoff (5 to 50 ms). Answers above ``max_answer_bytes``
    are not kept. ``name`` is the scope (default derived from the server
    address, database and prefix). The lease uses the wall clock: hosts
    sharing a store need clocks within a small fraction of ``lease``.
    Redis must not evict these keys (``maxmemory-policy noeviction`` or
    ``volatile-ttl`` with headroom): an evicted record turns a duplicate into
    a second execution, and this store cannot see evictions.
    """

    def __init__(
        self,
        client_or_url: Any,
        *,
        prefix: str = "rpcclient:dedup:",
        window: float = 60.0,
        lease: float = 30.0,
        name: str | None = None,
        max_answer_bytes: int = 1024 * 1024,
    ) -> None:
        import redis

        self.window = _check_window(window)
        self.lease = _check_window(lease)
        self.max_answer_bytes = _check_positive("max_answer_bytes", max_answer_bytes)
        if not isinstance(prefix, str):
            raise TypeError(f"prefix must be a str, not {prefix!r}")
        self.prefix = prefix
        if isinstance(client_or_url, str):
            self.redis: Any = redis.Redis.from_url(client_or_url)
        elif isinstance(client_or_url, redis.Redis):
            self.redis = client_or_url
        else:
            raise TypeError(f"expected a redis.Redis or a redis URL, not {client_or_url!r}")
        if name is None:
            name = self._shared_scope()
        self.scope = _check_scope(name)
        self._complete = self.redis.register_script(_COMPLETE)

    def _shared_scope(self) -> str:
        """The scope kept in Redis itself (``prefix + "scope"``, no TTL): the first
        store to start on this database and prefix draws it, every other one
        reads it. Two Redis servers never share one, whatever address reaches them."""
        mine = "redis-" + secrets.token_hex(8)
        key = self.prefix + "scope"
        self.redis.set(key, mine, nx=True)
        raw = self.redis.get(key)
        if raw is None:  # pragma: no cover - deleted in between
            raise RuntimeError(f"dedup scope key {key!r} vanished")
        return str(raw.decode("ascii", "replace"))

    def _key(self, key: str) -> str:
        return self.prefix + key

    def _parse(self, raw: bytes | None) -> Record | None:
        if raw is None:
            return None
        value = msgpack.unpackb(raw, raw=False)
        if value[0] == "f":
            return Record(IN_FLIGHT, value[1], lease_over=time.time() * 1000 >= value[2])
        return Record(DONE, value[1], value[2], value[3])

    def claim(self, key: str, fingerprint: bytes) -> Record:
        lease_until = int((time.time() + self.lease) * 1000)
        blob = msgpack.packb(["f", fingerprint, lease_until])
        for _ in range(3):  # the record may expire between SET NX and GET
            if self.redis.set(self._key(key), blob, nx=True, px=int(self.window * 1000)):
                return Record(NEW, fingerprint)
            rec = self._parse(self.redis.get(self._key(key)))
            if rec is not None:
                return rec
        raise RuntimeError(f"dedup record {key!r} kept vanishing")  # pragma: no cover

    def wait(self, key: str, timeout: float) -> Record | None:
        end = time.monotonic() + max(0.0, timeout)
        pause = POLL_FIRST
        while True:
            rec = self._parse(self.redis.get(self._key(key)))
            if rec is None or rec.state == DONE or rec.lease_over:
                return rec
            left = end - time.monotonic()
            if left <= 0:
                return rec
            gevent.sleep(min(pause, left))
            pause = min(pause * 2, POLL_MAX)

    def complete(self, key: str, status: int, body: bytes | None) -> None:
        rec = self._parse(self.redis.get(self._key(key)))
        if rec is None:
            return
        if body is not None and len(body) > self.max_answer_bytes:
            body = None
        self._complete(
            keys=[self._key(key)], args=[msgpack.packb(["d", rec.fingerprint, status, body])]
        )

    def discard(self, key: str) -> None:
        self.redis.delete(self._key(key))

    def evicted_since(self, arrived: float) -> bool:
        return False  # Redis evicts nothing under the required maxmemory-policy


# -- the RPCApp hook ---------------------------------------------------------------------


def _header_int(environ: dict[str, Any], name: str, default: int) -> int:
    from ._engine.app import _Reject

    text = environ.get(name)
    if text is None:
        return default
    text = text.strip()
    if not text.isdigit() or len(text) > 12:
        header = name[5:].replace("_", "-").title()
        raise _Reject(400, "BadRequest", f"{header} must be a non-negative integer: {text[:40]!r}")
    return int(text)


def advert(store: DedupStore) -> tuple[str, str]:
    """The ``X-Rpc-Dedup`` header a dedup-enabled app puts on every answer."""
    window = store.window
    shown = str(int(window)) if window == int(window) else f"{window:g}"
    return ("X-Rpc-Dedup", f"{_check_scope(store.scope)}; window={shown}")


def call_once(  # noqa: PLR0917 - the hook passes what _serve holds
    app: RPCApp,
    environ: dict[str, Any],
    headers: list[tuple[str, str]],
    method: _Method,
    data: bytes,
    deadline: float | None,
) -> bytes:
    """``app._call(method, data, deadline)`` at most once per request id.

    Returns the result body (200) or raises the app's ``_Reject`` (also for
    a replayed error); the rules are the module's.
    """
    from ._engine.app import _Reject

    store: DedupStore | None = app.dedup
    scope = environ.get("HTTP_X_RPC_DEDUP_SCOPE")
    if scope is not None and (store is None or scope.strip() != store.scope):
        raise _Reject(
            503,
            "DedupScopeMismatch",
            f"this server cannot know the first attempt (dedup scope {scope[:64]!r} is not "
            "this server's); the call was not run",
            {"not_run": True},
        )
    key = environ.get("HTTP_X_REQUEST_ID")
    if store is None or not key or not ECHOED_REQUEST_ID.match(key):
        return app._call(method, data, deadline)
    attempt = _header_int(environ, "HTTP_X_RPC_ATTEMPT", 1)
    age_ms = _header_int(environ, "HTTP_X_RPC_DEDUP_AGE_MS", 0)
    fingerprint = hashlib.blake2b(
        environ.get("PATH_INFO", "").encode("utf-8", "surrogateescape") + b"\0" + data,
        digest_size=16,
    ).digest()
    try:
        rec = store.claim(key, fingerprint)
    except Exception as exc:  # noqa: BLE001 - a store down (Redis full, gone): shed, not run
        _log.error("dedup store %s failed to claim: %r", store.scope, exc)
        raise _Reject(
            503,
            "Unavailable",
            "the dedup store is unavailable; the call was not run",
            {"not_run": True},
        ) from None
    if rec.state == NEW:
        if attempt >= 2 and (
            age_ms >= store.window * 1000 or store.evicted_since(time.monotonic() - age_ms / 1000.0)
        ):
            store.discard(key)
            raise _outcome_unknown("its record may have expired or been evicted")
        return _run(app, store=store, key=key, method=method, data=data, deadline=deadline)
    if rec.fingerprint != fingerprint:
        raise _Reject(
            409,
            "RequestIdReused",
            f"request id {key!r} was used for another call; this one was not run",
            {"not_run": True},
        )
    if rec.state == IN_FLIGHT and not rec.lease_over:
        limit = store.window if deadline is None else deadline - time.monotonic()
        waited = store.wait(key, limit)
        if waited is None:
            raise _outcome_unknown("its record was evicted while it ran")
        rec = waited
    if rec.state == IN_FLIGHT:
        if rec.lease_over:
            raise _outcome_unknown("the first execution outlived its lease")
        raise _Reject(
            503,
            "DuplicateInFlight",
            f"request id {key!r} is still running; its answer was not ready in time",
            {"in_flight": True},
        )
    if rec.body is None:
        raise _outcome_unknown("it ran but its answer was too large to keep")
    headers.append(("X-Rpc-Replayed", "1"))
    if rec.status == 200:
        return rec.body
    err = app.codec.unpack(rec.body)["error"]
    raise _Reject(rec.status, err["type"], err["message"], err["data"])


def _outcome_unknown(why: str) -> Exception:
    from ._engine.app import _Reject

    return _Reject(
        409,
        "OutcomeUnknown",
        f"a re-send whose first attempt may have run: {why}; not run again",
        {"outcome_unknown": True},
    )


def _run(
    app: RPCApp,
    *,
    store: DedupStore,
    key: str,
    method: _Method,
    data: bytes,
    deadline: float | None,
) -> bytes:
    from ._engine.app import _Reject

    try:
        body = app._call(method, data, deadline)
    except _Reject as rej:
        _complete(store, key, rej.status, app._envelope(rej.type, rej.message, rej.data))
        raise
    except BaseException:
        _complete(store, key, 500, None)  # killed mid-run: it may have run, nothing to replay
        raise
    _complete(store, key, 200, body)
    return body


def _complete(store: DedupStore, key: str, status: int, body: bytes | None) -> None:
    """Record an answer; a store failure here must not lose the answer of a call that ran
    (its duplicates then see the lease end: OutcomeUnknown)."""
    try:
        store.complete(key, status, body)
    except Exception as exc:  # noqa: BLE001 - logged; the caller still gets its answer
        _log.error("dedup store %s failed to record %r: %r", store.scope, key, exc)
