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

A call that is not idempotent is hedged only when the host of its first
attempt advertised deduplication (``X-Rpc-Dedup``): each hedge carries that
scope (``X-Rpc-Attempt``, ``X-Rpc-Dedup-Scope``, ``X-Rpc-Dedup-Age-Ms``, as a
deduplicated re-send does), goes only to a host of the same scope, and only
while the call is younger than the window minus ``DEDUP_MARGIN``; the
server then runs the call at most once (a copy arriving while the first
runs waits for its answer). Its failed attempts let the next hedge go only
where a deduplicated re-send would be allowed.

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

from .._core.balance import EndpointGroup, Host
from .._core.models import Request, Response, reduce_by_init_fields
from .._core.observe import REQUEST_IDS, CallEvent, run_hooks
from .._core.retry import DEDUP_MARGIN, dedup_resend_scope
from .._protocol import REQUEST_ID, decode_response
from ..exceptions import ClientClosed, ConnectError, InvalidRequest, RPCError

if TYPE_CHECKING:
    from .._core.client import ClientCore
    from .._core.retry import Retry
    from .._core.timeouts import Deadline

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

    An idempotent call; or a deduplicated one: a host of its service has
    advertised ``X-Rpc-Dedup`` (its hedges then go only to hosts of the
    first attempt's scope, which run the call at most once; see
    :func:`hedged_call`).
    """
    if idempotent:
        return True
    route = client._routes.get(name)
    if route is None:
        try:
            route = client._route(name)
        except RPCError:
            return False  # the plain path raises it for the call
    return any(h.dedup_scope is not None for h in route[0].hosts)


def check_transport(hedge: Hedge | None, transport_name: str) -> None:
    """Refuse hedging on a transport whose exchanges cannot be cancelled safely."""
    if hedge is not None and transport_name in _UNHEDGEABLE:
        raise ValueError(
            f"hedged calls need the gevent transport, not {transport_name!r}: an attempt "
            "that loses is cancelled mid-exchange, which only the gevent transport "
            "guarantees to end by closing its connection"
        )


class _Superseded(BaseException):
    """Thrown into a caller whose first attempt a hedge has settled.

    A BaseException, like the GreenletExit of a kill: the transport's
    ``finally`` closes the connection of the interrupted exchange and nothing
    in it takes this for an error of its own.
    """


#: what settles a call: a success, or an answer the retry rules call final
_WIN, _FINAL, _RETRY = 1, 2, 3


class _Attempt:
    __slots__ = (
        "consumed",
        "error",
        "event",
        "followed",
        "host",
        "job",
        "probe",
        "response",
        "started",
        "verdict",
    )

    def __init__(self, host: Host, probe: bool) -> None:
        self.host = host
        self.probe = probe  # this attempt is the host's probe after a rest (pick)
        self.started = perf_counter()
        self.job: gevent.Greenlet | None = None  # None: run in the caller's greenlet
        self.response: Response | None = None
        self.error: RPCError | None = None
        self.verdict = 0  # _WIN, _FINAL or _RETRY once it ended (0: not yet, or cut)
        self.consumed = False  # its outcome was taken by the caller
        self.followed = False  # its retryable failure already launched the next hedge
        self.event: CallEvent | None = None  # its own copy of the call's, with hooks


class _Hedged:
    """The state of one hedged call; its only owner is :func:`hedged_call`.

    The first attempt runs in the caller's greenlet (no spawn, no queue while
    no hedge is needed); a hub timer launches each hedge in a greenlet of its
    own. A hedge that settles the call while the first attempt still runs
    throws :class:`_Superseded` into the caller (as a ``gevent.Timeout``
    would); one that fails retryably lets the next go at once. Every attempt's
    outcome is judged where it ends (:meth:`finish`), so the caller only reads
    verdicts.
    """

    __slots__ = (
        "attempts",
        "body",
        "caller",
        "client",
        "deadline",
        "event",
        "group",
        "hedge",
        "hedges",
        "idempotent",
        "in_first",
        "name",
        "own",
        "path",
        "policy",
        "results",
        "scope",
        "started",
        "template",
        "timer",
        "wait",
        "window",
    )

    def __init__(  # noqa: PLR0917 - the call's inputs, spelled out
        self,
        client: ClientCore,
        name: str,
        deadline: Deadline,
        hedge: Hedge,
        policy: Retry,
        idempotent: bool,
        template: Request,
        own: list[tuple[bytes, bytes]],
        wait: float,
    ) -> None:
        self.client = client
        self.name = name
        self.deadline = deadline
        self.hedge = hedge
        self.policy = policy
        self.idempotent = idempotent
        self.template = template
        body = template.body
        assert isinstance(body, bytes)  # prepare() encodes to bytes
        self.body = body
        self.group: EndpointGroup = client._routes[name][0]
        self.path = client._routes[name][1]
        self.own = own
        self.wait = wait
        self.attempts: list[_Attempt] = []
        self.results: Queue[_Attempt] | None = None  # made with the first hedge
        self.hedges = 0
        self.started = perf_counter()
        #: a call that is not idempotent is hedged only under the dedup scope its
        #: first host advertised, to hosts of that scope, which run it at most once
        self.scope: str | None = None
        self.window = 0.0
        self.caller = gevent.getcurrent()
        self.in_first = False  # the caller is inside its first attempt's send
        self.timer: Any = None
        self.event: CallEvent | None = None  # the call's, when the client has hooks

    # -- attempts --------------------------------------------------------------------
    def launch(self, spawn: bool) -> tuple[_Attempt, Request] | None:
        """Pick a host and build an attempt's request (see the module docstring);
        ``spawn``: send it in a greenlet of its own (a hedge). None: no host may
        take it."""
        attempts = self.attempts
        group = self.group
        idempotent = self.idempotent
        tried = [a.host for a in attempts]
        # a copy of a non-idempotent call may exist on a server: one in flight, or
        # one that ended with an error that may have reached it
        copy = not idempotent and any(
            not a.consumed or a.error is None or a.error.may_have_reached_server for a in attempts
        )
        probe = False
        if not copy:
            host = group.pick(tried)
            # pick marks a rested host probing for the one attempt it gives it to
            probe = host is not None and host.probing
        elif self.scope is None:
            return None  # its host does not deduplicate: never a second copy
        else:
            host = group.pick_scope(self.scope, tried, attempts[-1].host)
            if host.dedup_scope != self.scope:
                # pick_scope's fallback, the last attempt's host, no longer
                # advertises the scope (another call's answer said so): as on
                # the plain path, no copy goes to a host that may run it again
                return None
        if host is None:
            return None
        if len(group.hosts) > 1 and any(a.host is host for a in attempts if not a.consumed):
            if probe:
                group.probe_ended(host, False)  # not sent: the next call probes it
            return None
        if not idempotent and not copy:
            self.scope, self.window = host.dedup_scope, host.dedup_window  # this copy's
        endpoint = host.endpoint
        request_headers = self.own
        deadline = self.deadline
        if self.client._deadline_header and deadline.expires is not None:
            left = deadline.expires - monotonic()
            ms = int(left * 1000) if left > 0 else 0
            request_headers = [*request_headers, (b"X-Rpc-Timeout-Ms", b"%d" % ms)]
        if copy:
            assert self.scope is not None
            age = perf_counter() - self.started
            if not age < self.window - DEDUP_MARGIN:
                return None  # the server may no longer hold the first copy's record
            request_headers = [
                *request_headers,
                (b"X-Rpc-Attempt", b"%d" % (len(attempts) + 1)),
                (b"X-Rpc-Dedup-Scope", self.scope.encode()),
                (b"X-Rpc-Dedup-Age-Ms", b"%d" % int(age * 1000)),
            ]
        base = endpoint.base_path
        request = Request(
            endpoint,
            "POST",
            base + self.path if base else self.path,
            request_headers,
            self.body,
            self.name,
            self.template.fixed_headers,
            self.template.cache_key,
        )
        attempt = _Attempt(host, probe)
        host.outstanding += 1
        host.calls += 1
        attempts.append(attempt)
        if spawn:
            if self.results is None:
                self.results = Queue()
            attempt.job = gevent.spawn(self.run, attempt, request)
        return attempt, request

    def hedge_now(self) -> bool:
        """Send one more attempt, if the policy, the deadline, the budget and a host allow."""
        if len(self.attempts) >= self.hedge.max_attempts or self.deadline.expired():
            return False
        if not self.group.budget.withdraw():
            return False
        if self.launch(True) is None:
            self.group.budget.refund()  # no host could take it: nothing was spent
            return False
        self.hedges += 1
        return True

    def run(self, attempt: _Attempt, request: Request) -> None:
        """A hedge's greenlet: send, judge, hand the outcome to the caller."""
        try:
            request = self.before_attempt(attempt, request)
            attempt.response = self.client._transport.send(request, self.deadline)
        except RPCError as exc:
            attempt.error = exc
        except BaseException as exc:  # killed: another attempt settled the call
            self.after_cut(attempt, exc)
            raise
        self.finish(attempt)
        assert self.results is not None
        self.results.put(attempt)
        if self.in_first:
            if attempt.verdict == _RETRY:
                attempt.followed = True
                self.on_timer()  # A6: a retryable failure lets the next go at once
            else:
                gevent.get_hub().loop.run_callback(self.interrupt)

    def interrupt(self) -> None:
        """(A hub callback.) Cut the caller's first attempt, if it still runs."""
        if self.in_first:
            self.in_first = False  # one throw per call: a second winner finds it out
            self.caller.throw(_Superseded())

    def on_timer(self) -> None:
        """(The hedge timer's callback, in the hub.) Launch a hedge; re-arm."""
        if self.in_first and self.hedge_now() and len(self.attempts) < self.hedge.max_attempts:
            self.arm()

    def arm(self) -> None:
        timer = self.timer
        if timer is not None:
            timer.stop()
            timer.close()
        left = self.deadline.remaining()
        if left is not None and left <= self.wait:
            self.timer = None  # no hedge could start before the deadline
            return
        timer = self.timer = gevent.get_hub().loop.timer(self.wait)
        timer.start(self.on_timer)

    def disarm(self) -> None:
        timer = self.timer
        if timer is not None:
            self.timer = None
            timer.stop()
            timer.close()

    def before_attempt(self, attempt: _Attempt, request: Request) -> Request:
        """Run the ``before_attempt`` hooks (in the attempt's own greenlet, never
        the hub's) on the attempt's own event; the request with their headers."""
        event = self.event
        if event is None:
            return request
        # attempts run at once: each gets its own event, a copy of the call's
        # (scratch too), so a hook sees one attempt's fields at a time
        own = attempt.event = CallEvent(
            event.name, event.request_id, event.idempotent, event.transport
        )
        own.scratch = dict(event.scratch)
        headers = self.client._before_attempt(
            own, self.attempts.index(attempt) + 1, request.endpoint, request.headers,
            self.template.fixed_headers,
        )  # fmt: skip
        if headers is request.headers:
            return request
        return Request(
            request.endpoint,
            request.method,
            request.target,
            headers,
            request.body,
            request.name,
            request.fixed_headers,
            request.cache_key,
        )

    def after_cut(self, attempt: _Attempt, cause: BaseException) -> None:
        """``after_attempt`` for an attempt cut short (a kill, the caller's own
        timeout, or ``_Superseded``: reported as a GreenletExit)."""
        if attempt.event is None:
            return
        if isinstance(cause, _Superseded):
            cause = gevent.GreenletExit("another attempt settled the call")
        self.client._after_attempt(attempt.event, attempt.started, None, cause)

    def finish(self, attempt: _Attempt) -> None:
        """Judge an ended attempt (``verdict``) and tell the host group of it."""
        from .._core.client import _connected

        client = self.client
        host = attempt.host
        response = attempt.response
        error = attempt.error
        if response is not None:
            host.connect_failures = 0
            advert = response.headers.dedup
            if advert != host.dedup_header:  # (None both: never advertised)
                host.note_dedup(advert)
            if attempt is self.attempts[0]:  # the estimate is of first attempts
                client._hedge_windows.add(self.name, perf_counter() - attempt.started)
            if 200 <= response.status < 300:
                attempt.verdict = _WIN
            else:
                try:
                    decode_response(response, client._codec, self.name, client._error_decoder)
                except RPCError as exc:
                    error = attempt.error = exc
        ok = attempt.verdict == _WIN
        group = self.group
        if group.tracking:
            group.observe(host, attempt.started, ok, error)
        if isinstance(error, ConnectError):
            group.connect_failed(host, attempt.probe)
        if attempt.probe and host.probing:
            group.probe_ended(host, ok or _connected(error), perf_counter() - attempt.started)
        if attempt.event is not None:
            client._after_attempt(attempt.event, attempt.started, response, error)
        if ok:
            return
        assert error is not None
        host.failures += 1
        error.with_context(name=self.name, endpoint=host.endpoint.url)
        error.attempts = len(self.attempts)
        safe = self.idempotent or (
            dedup_resend_scope(
                error, False, self.scope, self.window, perf_counter() - self.started, self.scope
            )
            is not None
        )
        attempt.verdict = _RETRY if self.policy.retryable(error, safe) else _FINAL

    def cancel_the_rest(self) -> None:
        """Kill every attempt still running; count a cut first attempt as slow."""
        self.disarm()
        attempts = self.attempts
        for attempt in attempts:
            if attempt.consumed:
                continue
            job = attempt.job
            if job is not None and not job.dead:
                job.kill(block=True)  # the transport closes its connection
            attempt.host.outstanding -= 1
            if attempt.probe and attempt.host.probing:
                # cancelled: no verdict on the host; the next call probes it again
                self.group.probe_ended(attempt.host, False)
            if attempt is attempts[0] and not attempt.verdict:
                # cut: it would have taken longer than the hedge delay. Kept as
                # "longer than anything" (only its side of the percentile
                # matters): its elapsed time would ratchet the estimate up, and
                # leaving it out would let it drift down
                self.client._hedge_windows.add(self.name, math.inf)


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
    from .._core.client import ClientCore

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
            "hedge= given for a call that is not idempotent, to a service no host of "
            "which has advertised deduplication: a hedge may run it twice "
            "(pass idempotent=True if it is safe)",
            name=name,
        )
    check_transport(hedge, client._transport.name)
    if client._closed:
        raise ClientClosed("client is closed", name=name)
    policy = client._retry if retry is None else retry
    if request_id is None:
        request_id = REQUEST_IDS.next()
    elif not REQUEST_ID.match(request_id):
        raise InvalidRequest(f"invalid request id {request_id!r}", name=name)
    template = client.prepare(name, args, headers)  # every check, before any I/O
    group: EndpointGroup = client._routes[name][0]
    group.budget.deposit()
    stats = client._stats if client._stats.enabled else None
    call = _Hedged(
        client,
        name,
        deadline,
        hedge,
        policy,
        idempotent,
        template,
        [*template.headers, (b"X-Request-Id", request_id.encode())],
        hedge.wait(client._hedge_windows, name),
    )
    winner: _Attempt | None = None
    failure: BaseException | None = None
    cut: BaseException | None = None  # what ended the first attempt in the caller
    event = None
    if client._has_hooks:
        event = call.event = CallEvent(name, request_id, idempotent, client._transport.name)
        run_hooks(client._hooks.before_call, event)
    try:
        launched = call.launch(False)
        if launched is None:
            raise ClientCore._all_out(group, name, 1, request_id, False)
        first, request = launched
        request = call.before_attempt(first, request)
        call.arm()
        call.in_first = True
        try:
            first.response = client._transport.send(request, deadline)
        except RPCError as exc:
            first.error = exc
        except BaseException as exc:  # noqa: BLE001 - re-raised below, after the hooks
            cut = exc  # _Superseded; or the caller's own timeout, a kill
        finally:
            call.in_first = False
            call.disarm()
        if cut is not None:
            # the hooks run only now: while in_first, a hook that blocks could
            # take a second _Superseded (a second winner) or launch hedges
            call.after_cut(first, cut)
            if not isinstance(cut, _Superseded):
                raise cut
            # a hedge settled the call: its outcome is queued
        done = first
        if first.response is not None or first.error is not None:
            call.finish(first)
        else:
            done = _take(call)  # the hedge that cut it
        while True:
            done.consumed = True
            done.host.outstanding -= 1
            if done.verdict == _WIN:
                winner = done
                assert done.response is not None
                result = client._codec.unpack(done.response.body, name=name)
                if event is not None:
                    event.result = result
                return result
            error = done.error
            assert error is not None
            error.request_id = request_id
            error.attempts = len(call.attempts)
            if done.verdict == _FINAL:
                winner = done  # a final answer settles the call
                raise error
            # a retryable failure: the next hedge goes at once (A6), unless its own
            # greenlet sent it already
            if not (done.followed or call.hedge_now()) and not _pending(call):
                raise error
            done = _take(call, error)
    except BaseException as exc:
        failure = exc
        raise
    finally:
        call.cancel_the_rest()
        if stats is not None:
            _record(call, stats, winner, failure)
        if event is not None:
            event.elapsed = perf_counter() - call.started
            event.error = failure
            event.attempt = len(call.attempts)
            last = winner
            if last is None and call.attempts:
                last = call.attempts[-1]
            event.endpoint = "" if last is None else last.host.endpoint.url
            response = None if winner is None else winner.response
            event.received = 0 if response is None else len(response.body)
            event.status = None if response is None else response.status
            run_hooks(client._hooks.after_call, event)
        # each would keep a cycle (this frame, the exception, its traceback)
        # and with it the interrupted exchange's frames, until the cyclic GC
        failure = cut = None


def _pending(call: _Hedged) -> bool:
    return any(not a.consumed for a in call.attempts)


def _take(call: _Hedged, error: RPCError | None = None) -> _Attempt:
    """The next ended hedge; launching more while none ends within the wait.

    ``error``: the failure that leaves the call waiting (raised when nothing
    is left in flight and no hedge may go)."""
    results = call.results
    deadline = call.deadline
    hedging = True
    while True:
        if not _pending(call):
            assert error is not None
            raise error
        assert results is not None
        timeout: float | None = call.wait if hedging else None
        left = deadline.remaining()
        if left is not None and left > 0:
            timeout = left if timeout is None else min(timeout, left)
        try:
            got: _Attempt = results.get(timeout=timeout)
        except Empty:
            if hedging and call.hedge_now():
                continue
            hedging = False
            # wait for the ones in flight: each is bounded by the deadline inside
            # the transport
            got = results.get()
        return got


def _record(
    call: _Hedged, stats: Any, winner: _Attempt | None, failure: BaseException | None
) -> None:
    elapsed = perf_counter() - call.started
    name = call.name
    host_url = None if winner is None else winner.host.endpoint.url
    stats.record(
        name,
        None,
        elapsed,
        elapsed,
        None if failure is None else type(failure).__name__,
        len(call.body),
        0 if winner is None or winner.response is None else len(winner.response.body),
        0,  # hedges are counted apart
    )
    counter = stats.method(name)
    counter.hedges += call.hedges
    if winner is not None and winner is not call.attempts[0] and failure is None:
        counter.hedges_won += 1
    if host_url is not None:
        assert winner is not None
        stats.host(host_url).add(
            perf_counter() - winner.started,
            None if failure is None else type(failure).__name__,
            len(call.body),
            0,
        )
