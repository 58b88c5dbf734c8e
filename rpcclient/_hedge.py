"""Hedged calls: a second attempt on another host when the first is slow.

After gRPC's A6 hedging policy: the first attempt goes at once; while no
answer has come ``delay`` seconds after the last attempt went, another goes
to a host with no attempt of this call in flight, up to ``max_attempts`` in
all. The first answer that settles the call wins: a success, or a server
answer the retry rules call final. An attempt failing with a retryable error
lets the next one go at once. The losers' greenlets are killed: the gevent
transport closes a connection whose exchange was interrupted (its ``finally``),
so no unread answer ever goes back to a pool.

Every hedge takes a token from the group's retry budget (none: no hedge), and
every attempt runs under the call's one deadline. Under hedging the retry
policy's ``attempts`` and backoff do not apply (as in A6, where a method has
either a retry or a hedging policy): ``max_attempts`` bounds all attempts.

This module is the hedged path only; the client's default path does not
come here (one ``if`` in ``ClientCore.call``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from time import monotonic, perf_counter
from typing import TYPE_CHECKING, Any, Final

import gevent
from gevent.queue import Empty, Queue

from ._balance import EndpointGroup, Host
from ._models import Request, Response, reduce_by_init_fields
from ._observe import REQUEST_IDS
from ._protocol import decode_response
from .exceptions import ClientClosed, InvalidRequest, RPCError

if TYPE_CHECKING:
    from ._client import ClientCore
    from ._retry import Retry
    from ._timeouts import Deadline

__all__ = ["Hedge"]  # the rest is the client's

#: transports that cannot be interrupted mid-exchange with a known outcome for
#: the connection: their pools are urllib3's, whose handling of a greenlet killed
#: mid-read is not ours to guarantee
_UNHEDGEABLE: Final = ("requests", "urllib3")
_WINDOW: Final = 128  # latency samples kept per method
_REFRESH: Final = 16  # the percentile is recomputed every this many samples
_MAX_METHODS: Final = 1000  # methods with a latency window; then the windows start over


@dataclass(frozen=True, slots=True)
class Hedge:
    """When and how often a slow idempotent call is sent again (an immutable value).

    ``delay`` (seconds) is a fixed wait before each hedge; or, with
    ``delay=None``, the wait is the method's observed attempt latency at
    ``percentile`` (95.0 when not given) over its last 128 first attempts,
    clamped to ``[min_delay, max_delay]``; until ``warmup`` attempts are seen
    it is ``max_delay``. ``max_attempts`` counts every attempt, the first
    included (2 = at most one hedge).
    """

    delay: float | None = None
    max_attempts: int = 2
    percentile: float | None = None
    min_delay: float = 0.001
    max_delay: float = 1.0
    warmup: int = 20

    def __post_init__(self) -> None:
        if isinstance(self.max_attempts, bool) or not isinstance(self.max_attempts, int):
            raise TypeError(f"Hedge.max_attempts must be an int, not {self.max_attempts!r}")
        if not 2 <= self.max_attempts <= 5:
            raise ValueError(f"Hedge.max_attempts must be in [2, 5], not {self.max_attempts!r}")
        if self.delay is not None and self.percentile is not None:
            raise ValueError("give Hedge either delay= (fixed) or percentile=, not both")
        if self.delay is not None and not (
            isinstance(self.delay, int | float) and 0 <= self.delay < math.inf
        ):
            raise ValueError(f"Hedge.delay must be a finite number >= 0, not {self.delay!r}")
        if self.percentile is not None and not (
            isinstance(self.percentile, int | float) and 0 < self.percentile < 100
        ):
            raise ValueError(f"Hedge.percentile must be in (0, 100), not {self.percentile!r}")
        if not 0 <= self.min_delay <= self.max_delay < math.inf:
            raise ValueError(
                f"Hedge needs 0 <= min_delay <= max_delay < inf, not "
                f"{self.min_delay!r}, {self.max_delay!r}"
            )
        if not isinstance(self.warmup, int) or not 1 <= self.warmup <= _WINDOW:
            raise ValueError(f"Hedge.warmup must be an int in [1, {_WINDOW}]")

    def with_(self, **changes: Any) -> Hedge:
        return replace(self, **changes)

    def wait(self, windows: LatencyWindows, name: str) -> float:
        """The wait before each hedge of a call to ``name``, from the
        method's latencies in ``windows`` (the client's)."""
        if self.delay is not None:
            return float(self.delay)
        window = windows.get(name)
        if window is None or window.count < self.warmup:
            return self.max_delay
        q = window.quantile(95.0 if self.percentile is None else self.percentile)
        return min(max(q, self.min_delay), self.max_delay)

    def __reduce__(self) -> tuple[Any, ...]:
        return reduce_by_init_fields(self)


class LatencyWindow:
    """The last ``_WINDOW`` attempt latencies of one method (a fixed ring)."""

    __slots__ = ("_cached", "_q", "_ring", "_since", "count", "index")

    def __init__(self) -> None:
        self._ring = [0.0] * _WINDOW
        self.index = 0
        self.count = 0
        self._since = 0  # samples added since the cached percentile
        self._cached = 0.0
        self._q = -1.0

    def add(self, seconds: float) -> None:
        self._ring[self.index] = seconds
        self.index = (self.index + 1) % _WINDOW
        if self.count < _WINDOW:
            self.count += 1
        self._since += 1

    def quantile(self, q: float) -> float:
        """The latency below which ``q`` percent of the kept samples fall."""
        if self._since >= _REFRESH or q != self._q:
            samples = sorted(self._ring[: self.count])
            rank = min(len(samples) - 1, max(0, math.ceil(q / 100 * len(samples)) - 1))
            self._cached = samples[rank]
            self._q = q
            self._since = 0
        return self._cached


class LatencyWindows:
    """One :class:`LatencyWindow` per method, for at most ``_MAX_METHODS`` methods."""

    __slots__ = ("_windows",)

    def __init__(self) -> None:
        self._windows: dict[str, LatencyWindow] = {}

    def get(self, name: str) -> LatencyWindow | None:
        return self._windows.get(name)

    def add(self, name: str, seconds: float) -> None:
        window = self._windows.get(name)
        if window is None:
            if len(self._windows) >= _MAX_METHODS:
                self._windows.clear()  # bounded: a flood of names starts the estimates over
            window = self._windows[name] = LatencyWindow()
        window.add(seconds)


def may_hedge(client: ClientCore, name: str, idempotent: bool) -> bool:
    """Whether a call may be sent more than once at a time: the one seam.

    Today: an idempotent call. A deduplicated (exactly-once) call may be
    added here once the server advertises deduplication.
    """
    return idempotent


def check_transport(hedge: Hedge | None, transport_name: str) -> None:
    """Refuse hedging on a transport whose exchanges cannot be cancelled safely."""
    if hedge is not None and transport_name in _UNHEDGEABLE:
        raise ValueError(
            f"hedged calls need the gevent transport, not {transport_name!r}: an attempt "
            "that loses is cancelled mid-exchange, which only the gevent transport "
            "guarantees to end by closing its connection"
        )


class _Attempt:
    __slots__ = ("consumed", "error", "host", "job", "response", "started")

    def __init__(self, host: Host) -> None:
        self.host = host
        self.started = perf_counter()
        self.job: gevent.Greenlet | None = None
        self.response: Response | None = None
        self.error: RPCError | None = None
        self.consumed = False  # its outcome was taken from the queue


def hedged_call(  # noqa: PLR0917 - one state machine, read top to bottom
    client: ClientCore,
    name: str,
    args: Any,
    deadline: Deadline,
    headers: Any,
    idempotent: bool | None,
    retry: Retry | None,
    request_id: str | None,
    hedge: Hedge | None,
) -> Any:
    """``ClientCore.call`` for a call that may be hedged (see the module docstring)."""
    from ._client import _REQUEST_ID, ClientCore

    if idempotent is None:
        idempotent = name in client._idempotent
    if hedge is None:
        hedge = client._hedge
        assert hedge is not None
        if not may_hedge(client, name, idempotent):
            # the client's default hedges only what may be hedged
            return ClientCore._call(
                client, name, args, deadline, headers, idempotent, retry, request_id
            )
    elif not isinstance(hedge, Hedge):
        raise TypeError(f"hedge must be a rpcclient.Hedge, not {hedge!r}")
    elif not may_hedge(client, name, idempotent):
        raise InvalidRequest(
            "hedge= given for a call that is not idempotent: a hedge may run it twice "
            "(pass idempotent=True if it is safe)",
            name=name,
        )
    check_transport(hedge, client._transport.name)
    if client._closed:
        raise ClientClosed("client is closed", name=name)
    if client._has_hooks:
        raise InvalidRequest("hedged calls do not run hooks yet: remove hedge= or the hooks")
    policy = client._retry if retry is None else retry
    if request_id is None:
        request_id = REQUEST_IDS.next()
    elif not _REQUEST_ID.match(request_id):
        raise InvalidRequest(f"invalid request id {request_id!r}", name=name)
    template = client.prepare(name, args, headers)  # every check, before any I/O
    body = template.body
    assert isinstance(body, bytes)  # prepare() encodes to bytes
    group: EndpointGroup = client._routes[name][0]
    path = client._routes[name][1]
    own = [*template.headers, (b"X-Request-Id", request_id.encode())]
    transport = client._transport
    windows = client._hedge_windows
    stats = client._stats if client._stats.enabled else None
    wait = hedge.wait(windows, name)
    group.budget.deposit()
    results: Queue[_Attempt] = Queue()
    attempts: list[_Attempt] = []
    pending = 0
    hedges = 0
    started = perf_counter()

    def run(attempt: _Attempt, request: Request) -> None:
        try:
            attempt.response = transport.send(request, deadline)
        except RPCError as exc:
            attempt.error = exc
        results.put(attempt)

    def launch() -> bool:
        # hosts this call tried are avoided; one with an attempt in flight never
        # gets another (pick falls back to a tried host when all were)
        host = group.pick([a.host for a in attempts])
        in_flight = [a.host for a in attempts if not a.consumed]
        if host is None or (host in in_flight and len(group.hosts) > 1):
            return False
        endpoint = host.endpoint
        request_headers = own
        if client._deadline_header and deadline.expires is not None:
            left = deadline.expires - monotonic()
            ms = int(left * 1000) if left > 0 else 0
            request_headers = [*own, (b"X-Rpc-Timeout-Ms", b"%d" % ms)]
        base = endpoint.base_path
        request = Request(
            endpoint,
            "POST",
            base + path if base else path,
            request_headers,
            body,
            name,
            template.fixed_headers,
            template.cache_key,
        )
        attempt = _Attempt(host)
        host.outstanding += 1
        host.calls += 1
        attempt.job = gevent.spawn(run, attempt, request)
        attempts.append(attempt)
        return True

    def hedge_now() -> bool:
        nonlocal pending, hedges
        if len(attempts) >= hedge.max_attempts or deadline.expired():
            return False
        if not group.budget.withdraw():
            return False
        if not launch():
            return False
        pending += 1
        hedges += 1
        return True

    launch()
    pending = 1
    hedging = True  # until max_attempts, the budget or the hosts say no more
    winner: _Attempt | None = None
    failure: BaseException | None = None
    try:
        while True:
            timeout = wait if hedging else None
            left = deadline.remaining()
            if left is not None and left > 0:
                timeout = left if timeout is None else min(timeout, left)
            try:
                done = results.get(timeout=timeout)
            except Empty:
                if hedging and hedge_now():
                    continue
                hedging = False
                # wait for the ones in flight: each is bounded by the deadline
                # inside the transport
                done = results.get()
            done.consumed = True
            pending -= 1
            done.host.outstanding -= 1
            response = done.response
            error = done.error
            if response is not None:
                if done is attempts[0]:  # the estimate is of first attempts (below)
                    windows.add(name, perf_counter() - done.started)
                done.host.connect_failures = 0
                if 200 <= response.status < 300:
                    result = client._codec.unpack(response.body, name=name)
                    winner = done
                    return result
                try:
                    decode_response(response, client._codec, name, client._error_decoder)
                except RPCError as exc:
                    error = exc
            assert error is not None
            done.host.failures += 1
            error.with_context(name=name, endpoint=done.host.endpoint.url)
            error.request_id = request_id
            error.attempts = len(attempts)
            if not policy.retryable(error, idempotent):
                winner = done  # a final answer settles the call
                raise error
            # a retryable failure: the next hedge goes at once (A6)
            if hedging and hedge_now():
                continue
            if pending == 0:
                raise error
    except BaseException as exc:
        failure = exc
        raise
    finally:
        for attempt in attempts:
            job = attempt.job
            if attempt.consumed:
                continue
            if job is not None and not job.dead:
                job.kill(block=True)  # the transport closes its connection
            attempt.host.outstanding -= 1
            if attempt is attempts[0] and attempt.response is None and attempt.error is None:
                # cancelled: it would have taken longer than the hedge delay. Kept
                # as "longer than anything" (only its side of the percentile
                # matters): its elapsed time would ratchet the estimate up, and
                # leaving it out would let it drift down
                windows.add(name, math.inf)
        if stats is not None:
            elapsed = perf_counter() - started
            host_url = None if winner is None else winner.host.endpoint.url
            stats.record(
                name,
                None,
                elapsed,
                elapsed,
                None if failure is None else type(failure).__name__,
                len(body),
                0 if winner is None or winner.response is None else len(winner.response.body),
                0,  # hedges are counted apart
            )
            counter = stats.method(name)
            counter.hedges += hedges
            if winner is not None and winner is not attempts[0] and failure is None:
                counter.hedges_won += 1
            if host_url is not None:
                stats.host(host_url).add(
                    perf_counter() - winner.started,  # type: ignore[union-attr]
                    None if failure is None else type(failure).__name__,
                    len(body),
                    0,
                )
