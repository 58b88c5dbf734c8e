"""The Client: ``client.call("service.method", args)`` and service proxies.

A Client turns a call into a prepared, validated :class:`Request`, hands it to
its transport with the call's :class:`Deadline`, and decodes the answer. It
holds no per-call state, so one Client is safe to share across any number of
greenlets; its caches (routes, heads) only ever grow to a bound.

Everything that can be checked is checked before a connection is taken:
the name, each header, the arguments' encodability, the request size.
"""

from __future__ import annotations

import math
import random
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from time import monotonic, perf_counter
from typing import Any, Final, Self

import gevent
from mypy_extensions import mypyc_attr

from .._config import (
    DEFAULT_IDLE_TIMEOUT,
    DEFAULT_MAX_CONNECTION_AGE,
    DEFAULT_MAX_HEAD_SIZE,
    DEFAULT_MAX_RESPONSE_SIZE,
    DEFAULT_POOL_SIZE,
    TLSConfig,
)
from .._policy.hedge import Hedge, LatencyWindows, check_transport, hedged_call
from .._policy.outlier import OutlierEjection
from .._protocol import (
    DEFAULT_PATH_TEMPLATE,
    REQUEST_ID,
    ErrorDecoder,
    check_path_template,
    decode_error_envelope,
    decode_response,
    split_name,
)
from .._transports.base import Transport, build_transport
from .._version import __version__
from ..exceptions import (
    ClientClosed,
    ConnectError,
    InvalidRequest,
    PoolTimeout,
    RequestTooLarge,
    RPCError,
)
from .balance import EndpointGroup, Host, ResolvingGroup, resolve_addresses
from .codec import DEFAULT_CODEC, Codec
from .models import FRAMING_HEADERS, Endpoint, Request, Response, check_header, check_header_pair
from .observe import REQUEST_IDS, CallEvent, HookSet, Stats, run_hooks
from .retry import Retry, RetryBudget, decide_retry, dedup_resend_scope, was_not_run
from .timeouts import Deadline, Timeout

__all__ = ["ServiceProxy"]  # Client: rpcclient._public

MIB: Final = 1024 * 1024
_ROUTE_CACHE_MAX: Final = 10_000
#: headers the client writes itself, and where the caller sets them instead
_OWN_HEADERS: Final = {
    b"x-request-id": "pass request_id= to the call instead",
    b"x-rpc-timeout-ms": "the client sends the call's remaining time (deadline_header=False "
    "turns it off)",
}


@mypyc_attr(allow_interpreted_subclasses=True)  # rpcclient.Client is its subclass
class ClientCore:
    """A msgpack RPC client over pooled keep-alive HTTP/1.1.

    ``call`` raises only :mod:`rpcclient.exceptions` errors (and the caller's
    own ``gevent.Timeout``/``GreenletExit``), and never re-sends a call that
    may have run unless it is idempotent; an error's ``may_have_reached_server``
    is True when any attempt may have reached the server. A Client may be
    shared by greenlets and by OS threads (the gevent transport keeps one set
    of pools per thread, see rpcclient._transports.threads).

    Every argument is checked here, before any connection exists; a refused
    one raises and leaves nothing open. Where the error is not named below,
    a value of the wrong type raises TypeError and one out of range
    ValueError. Sizes are bytes, times seconds.

    Where calls go:

    ``endpoints`` (required)
        One base URL for every service (``"http://h:8001"``, ``https://``
        too, a base path allowed), a list of them, or a mapping ``{"user":
        "http://h1:8001", "billing": ["http://h2:8001", "http://h3:8001"],
        "*": ...}`` (``"*"``: every other service). Refused with
        InvalidRequest: anything else, an empty list, a URL that is not
        ``http(s)://``, a service name that could not start a call name.
    ``transport`` (None)
        ``"gevent"``, ``"requests"``, ``"urllib3"`` (or a name given to
        :func:`register_transport`), a ready :class:`Transport` (the client
        closes it), or None: the ``RPCCLIENT_TRANSPORT`` environment
        variable, else ``"gevent"``. An unknown name or a missing optional
        library: ValueError.
    ``path_template`` (``"/{service}/{method}"``)
        The request target after the endpoint's base path: starts with
        ``/``, plain ASCII path characters, no fields but ``{service}`` and
        ``{method}`` as they are (InvalidRequest otherwise).
    ``balance`` (``"p2c"``)
        How a host of a group is picked: ``"p2c"``, of two random hosts the
        one with fewer calls in flight; ``"p2c-ewma"``, the lower peak-EWMA
        latency times calls in flight (see rpcclient._core.balance). Anything
        else: ValueError.
    ``spread_dns`` (None: off), ``resolver`` (None: gevent's)
        ``spread_dns=30.0`` turns each DNS name into one host per address it
        resolves to, re-resolved every 30 s; ``resolver(host, port) -> [ip,
        ...]`` replaces gevent's lookup. ``spread_dns`` must be a finite
        number > 0 and needs the gevent transport (ValueError);
        ``resolver`` must be callable.

    How long, how often:

    ``timeout`` (``Timeout()``: connect 2, read 10, pool 2, total 10)
        A :class:`Timeout`, a number of seconds for every bound, or None for
        no bound at all; a call's ``timeout=`` replaces it. Refused as
        :class:`Timeout` refuses (a bound <= 0, infinite or NaN: ValueError).
    ``retry`` (``Retry()``: 3 attempts)
        The :class:`Retry` policy (``NO_RETRY``: none); anything else:
        TypeError. Its rules are rpcclient._core.retry's and README's "Retries".
    ``idempotent`` (empty)
        Names (``"service.method"``) of the methods that may be re-sent after
        they may have run, and that ``hedge`` may hedge; a malformed name:
        InvalidRequest (so is a bare string: its characters are no names).
    ``hedge`` (None: off)
        A :class:`Hedge`: the client's idempotent calls are sent again when
        slow (see rpcclient._policy.hedge). Not a Hedge: TypeError; a transport
        other than gevent: ValueError (only it can cancel a losing attempt).
    ``deadline_header`` (True)
        Send the call's remaining time as ``X-Rpc-Timeout-Ms`` (the bundled
        server's ``current_deadline()``); False sends nothing.

    Hosts:

    ``eject_after`` (5), ``cooldown`` (10.0)
        A host that fails to connect ``eject_after`` times in a row (an int
        >= 1) rests for ``cooldown`` seconds (a finite number >= 0), then one
        call at a time probes it back.
    ``outlier_ejection`` (``OutlierEjection()``; None: off)
        Also eject hosts by success rate, failure percentage and latency
        against their peers (an :class:`OutlierEjection`, else TypeError;
        see rpcclient._policy.outlier).

    Connections, handed to the transport the client builds (a ready
    :class:`Transport` has its own; the sizes and times are checked all the
    same):

    ``pool_size`` (10)
        Connections per endpoint (and thread, on gevent): an int >= 1, else
        ValueError from the transport.
    ``idle_timeout`` (1.5), ``max_connection_age`` (300.0)
        A pooled connection idle that long, or that old, is closed, not
        reused; None: no bound; else a finite number > 0. The idle default
        sits below common servers' keep-alive timeouts.
    ``max_request_size``, ``max_response_size`` (64 MiB each), ``max_head_size`` (64 KiB)
        Ints >= 1. A larger request body raises RequestTooLarge before any
        I/O; a larger answer's body or head, ResponseTooLarge.

    What travels:

    ``headers`` (None)
        Sent with every call, after ``User-Agent`` and ``Content-Type`` (which
        they may replace); a call's own ``headers=`` replace them by name.
        InvalidRequest for CR, LF or NUL, a header the transport writes
        (``Content-Length``, ``Connection``...) or one the client writes
        (``X-Request-Id``, ``X-Rpc-Timeout-Ms``).
    ``codec`` (``DEFAULT_CODEC``)
        The :class:`Codec` (or a subclass) that packs arguments and unpacks
        results; anything else: TypeError.
    ``error_decoder`` (``decode_error_envelope``)
        ``error_decoder(status, headers, body, codec, name) -> RPCError |
        None`` turns a non-2xx answer into the error raised (None: an
        HTTPStatusError); must be callable (TypeError).

    TLS (``https://`` endpoints), on every transport:

    ``verify`` (True), ``ca_certs`` (None), ``cert`` (None)
        Check the chain and host name (against the system store or the
        ``ca_certs`` file); ``cert`` is a client certificate (``"cert.pem"``
        or ``("cert.pem", "key.pem")``). The files are read when the first
        ``https://`` connection needs them, not here.
    ``tls`` (None)
        A :class:`TLSConfig` instead of the three above (for example a ready
        ``ssl.SSLContext``: ``TLSConfig(context=ctx)``). Not a TLSConfig:
        TypeError; with any of the three changed: ValueError.

    Observing:

    ``stats`` (True)
        Keep per-method and per-host figures for :meth:`stats`; False saves
        their cost on every call.
    ``hooks`` (empty)
        Objects with any of :class:`Hook`'s methods (``before_call``,
        ``before_attempt``, ``after_attempt``, ``after_call``), run in order;
        an object with none of them is ignored, an exception a hook raises
        is logged, never raised (:meth:`add_hook` adds one later).
    """

    def __init__(
        self,
        endpoints: str | Sequence[str] | Mapping[str, str | Sequence[str]],
        *,
        transport: str | Transport | None = None,
        timeout: Timeout | float | None = Timeout(),  # noqa: B008 - immutable
        retry: Retry = Retry(),  # noqa: B008 - immutable
        idempotent: Iterable[str] = (),
        hedge: Hedge | None = None,
        pool_size: int = DEFAULT_POOL_SIZE,
        headers: Mapping[str, str] | None = None,
        codec: Codec = DEFAULT_CODEC,
        error_decoder: ErrorDecoder = decode_error_envelope,
        path_template: str = DEFAULT_PATH_TEMPLATE,
        max_request_size: int = 64 * MIB,
        max_response_size: int = DEFAULT_MAX_RESPONSE_SIZE,
        max_head_size: int = DEFAULT_MAX_HEAD_SIZE,
        idle_timeout: float | None = DEFAULT_IDLE_TIMEOUT,
        max_connection_age: float | None = DEFAULT_MAX_CONNECTION_AGE,
        eject_after: int = 5,
        cooldown: float = 10.0,
        outlier_ejection: OutlierEjection | None = OutlierEjection(),  # noqa: B008 - immutable
        balance: str = "p2c",
        spread_dns: float | None = None,
        resolver: Callable[[str, int], Sequence[str]] | None = None,
        deadline_header: bool = True,
        stats: bool = True,
        hooks: Sequence[Any] = (),
        verify: bool = True,
        ca_certs: str | None = None,
        cert: str | tuple[str, str] | None = None,
        tls: TLSConfig | None = None,
    ) -> None:
        if tls is None:
            tls = TLSConfig(verify=verify, ca_certs=ca_certs, cert=cert)
        elif not isinstance(tls, TLSConfig):
            raise TypeError(f"tls must be a rpcclient.TLSConfig, not {tls!r}")
        elif verify is not True or ca_certs is not None or cert is not None:
            raise ValueError("give either tls= or verify/ca_certs/cert, not both")
        if not isinstance(retry, Retry):
            raise TypeError(f"retry must be a rpcclient.Retry, not {retry!r}")
        if not isinstance(codec, Codec):
            raise TypeError(f"codec must be a rpcclient.Codec, not {codec!r}")
        if not callable(error_decoder):
            raise TypeError(f"error_decoder must be callable, not {error_decoder!r}")
        if resolver is not None and not callable(resolver):
            raise TypeError(f"resolver must be callable or None, not {resolver!r}")
        for option, size in (
            ("max_request_size", max_request_size),
            ("max_response_size", max_response_size),
            ("max_head_size", max_head_size),
            ("eject_after", eject_after),
        ):
            _check_count(option, size)
        _check_seconds("idle_timeout", idle_timeout, none=True)
        _check_seconds("max_connection_age", max_connection_age, none=True)
        _check_seconds("spread_dns", spread_dns, none=True)
        _check_seconds("cooldown", cooldown, zero=True)
        self._timeout = Timeout.coerce(timeout)
        self._retry = retry
        if hedge is not None and not isinstance(hedge, Hedge):
            raise TypeError(f"hedge must be a rpcclient.Hedge, not {hedge!r}")
        self._hedge = hedge
        self._hedge_windows = LatencyWindows()
        self._idempotent = frozenset(idempotent)
        for name in self._idempotent:
            split_name(name)
        self._groups = self._parse_endpoints(
            endpoints,
            retry,
            eject_after,
            cooldown,
            spread_dns=spread_dns,
            resolver=resolver,
            outlier=outlier_ejection,
            balance=balance,
        )
        self._codec = codec
        self._error_decoder = error_decoder
        self._path_template = check_path_template(path_template)
        self._deadline_header = deadline_header
        self._stats = Stats(enabled=stats)
        self._hook_list = list(hooks)
        self._hooks = HookSet(self._hook_list)
        self._has_hooks = bool(self._hooks)  # HookSet.__bool__ is a Python call
        self.max_request_size = max_request_size
        fixed = [("User-Agent", f"rpcclient/{__version__}"), ("Content-Type", codec.content_type)]
        fixed += list((headers or {}).items())
        self._fixed_headers = tuple(
            _check_user_header(None, check_header(k, v)) for k, v in _dedupe(fixed)
        )
        #: lower-cased names of the fixed headers, which a call's own replace
        self._fixed_names = frozenset(k.lower() for k, _ in self._fixed_headers)
        self._routes: dict[str, tuple[EndpointGroup, str]] = {}
        self._closed = False
        self._transport = build_transport(
            transport,
            {
                "pool_size": pool_size,
                "idle_timeout": idle_timeout,
                "max_connection_age": max_connection_age,
                "max_response_size": max_response_size,
                "max_head_size": max_head_size,
                "tls": tls,
            },
        )
        try:
            check_transport(hedge, self._transport.name)
        except ValueError:
            self._transport.close()
            raise
        if spread_dns is not None and self._transport.name in ("requests", "urllib3"):
            # they connect to the URL's host themselves: spreading would be a pretence
            self._transport.close()
            raise ValueError(f"spread_dns needs the gevent transport, not {self._transport.name!r}")

    @staticmethod
    def _parse_endpoints(
        endpoints: str | Sequence[str] | Mapping[str, str | Sequence[str]],
        retry: Retry,
        eject_after: int,
        cooldown: float,
        *,
        spread_dns: float | None = None,
        resolver: Callable[[str, int], Sequence[str]] | None = None,
        outlier: OutlierEjection | None = None,
        balance: str = "p2c",
    ) -> dict[str, EndpointGroup]:
        if isinstance(endpoints, str) or (
            isinstance(endpoints, Sequence) and not isinstance(endpoints, Mapping)
        ):
            endpoints = {"*": endpoints}  # type: ignore[dict-item]
        if not isinstance(endpoints, Mapping) or not endpoints:
            raise InvalidRequest("endpoints must be a base URL, a list of them, or a mapping")
        groups: dict[str, EndpointGroup] = {}
        for service, urls in endpoints.items():
            if service != "*":
                split_name(f"{service}.m")  # the same rule as in names
            url_list = [urls] if isinstance(urls, str) else list(urls)
            if not url_list:
                raise InvalidRequest(f"no endpoint URL for service {service!r}")
            budget = RetryBudget(retry.budget_ratio, retry.budget_min_per_second)
            parsed = [Endpoint.parse(u) for u in url_list]
            if spread_dns is not None:
                groups[service] = ResolvingGroup(
                    parsed,
                    budget,
                    refresh=spread_dns,
                    resolver=resolver or resolve_addresses,
                    eject_after=eject_after,
                    cooldown=cooldown,
                    outlier=outlier,
                    balance=balance,
                )
            else:
                groups[service] = EndpointGroup(
                    parsed,
                    budget,
                    eject_after=eject_after,
                    cooldown=cooldown,
                    outlier=outlier,
                    balance=balance,
                )
        return groups

    # -- calls --------------------------------------------------------------
    @property
    def transport(self) -> Transport:
        return self._transport

    @property
    def timeout(self) -> Timeout:
        return self._timeout

    @property
    def retry(self) -> Retry:
        return self._retry

    def call(
        self,
        name: str,
        args: Any = None,
        *,
        timeout: Timeout | float | None = None,
        headers: Mapping[str, str] | None = None,
        idempotent: bool | None = None,
        retry: Retry | None = None,
        request_id: str | None = None,
        hedge: Hedge | None = None,
    ) -> Any:
        """Call ``name`` (``"service.method"``) with ``args`` and return its result.

        ``args`` travels as one msgpack value: a list for positional arguments,
        a dict for keyword arguments, None for none. ``timeout`` and ``retry``
        replace the client's for this call; ``headers`` are added to it;
        ``idempotent=True`` allows re-sending it after a failure that may have
        happened after the server ran it. ``request_id`` is sent as
        ``X-Request-Id`` (one is generated when not given). Raises
        :class:`InvalidRequest` before any I/O for bad input; every error
        carries ``attempts`` and ``request_id``. ``hedge`` (a :class:`Hedge`)
        hedges this call, which must be idempotent (the client's ``hedge``
        applies to its idempotent calls only; see rpcclient._policy.hedge).
        """
        bounds = self._timeout if timeout is None else Timeout.coerce(timeout)
        total = bounds.total  # Timeout.start() inlined: one Python frame less per call
        deadline = Deadline(bounds, None if total is None else monotonic() + total)
        if hedge is not None or self._hedge is not None:
            return hedged_call(
                self, name, args, deadline, headers, idempotent, retry, request_id, hedge
            )
        # the core's own _call, not looked up on the (interpreted) subclass: a private
        # step nobody overrides, and the lookup would cost a dict search per call
        return ClientCore._call(self, name, args, deadline, headers, idempotent, retry, request_id)

    def _call(  # noqa: PLR0917 - internal, positional for speed
        self,
        name: str,
        args: Any,
        deadline: Deadline,
        headers: Mapping[str, str] | None,
        idempotent: bool | None,
        retry: Retry | None,
        request_id: str | None = None,
    ) -> Any:
        """One call on the plain path: prepare, then attempts until one settles it.

        The success path reads top to bottom and calls nothing it does not
        need; every other way goes through a named slow path, entered only
        when it applies: :func:`_resend_headers` (a deduplicated re-send),
        :meth:`_hooked_headers` (hooks), :func:`_attempt_failed` (an error's
        context and its host's figures), :meth:`_retry_or_raise` (the retry
        rules and their actions), :func:`_after_call` (hooks). A hedged call
        never comes here: ``call`` routes it to rpcclient._policy.hedge
        (which comes back here for a call the client's hedge may not hedge).
        """
        if self._closed:
            raise ClientClosed("client is closed", name=name if isinstance(name, str) else None)
        route = self._routes.get(name)
        if route is None:
            route = self._route(name)
        group, path = route
        body = self._codec.pack(args, name=name)
        if len(body) > self.max_request_size:
            raise self._too_large(name, len(body))
        fixed = self._fixed_headers
        cache_key: object = self
        if headers:
            extra = self._check_headers(name, headers)
            if not self._fixed_names.isdisjoint([k.lower() for k, _ in extra]):
                # the call's own replace the client's of the same name: a one-off head
                fixed = self._fixed_without(extra)
                cache_key = None
        else:
            extra = []
        if request_id is None:
            request_id = REQUEST_IDS.next()
        elif not REQUEST_ID.match(request_id):
            raise InvalidRequest(f"invalid request id {request_id!r}", name=name)
        extra.append((b"X-Request-Id", request_id.encode()))
        policy = self._retry if retry is None else retry
        if idempotent is None:
            idempotent = name in self._idempotent
        hooks = self._hooks  # this call's, whatever add_hook does meanwhile
        event = None
        if self._has_hooks:
            event = CallEvent(name, request_id, idempotent, self._transport.name)
            run_hooks(hooks.before_call, event)
        group.budget.deposit()
        transport = self._transport
        stats = self._stats if self._stats.enabled else None
        expires = deadline.expires if self._deadline_header else None
        # the first attempt is timed from the call's start: one clock read less,
        # and the call and its host share one histogram bucket (Stats.record)
        started = attempt_started = perf_counter()
        received = 0
        attempt = 0
        ok = False
        host: Host | None = None
        counted = False  # whether the last attempt is already in its host's figures
        reached = False  # whether an earlier attempt may have reached the server
        dedup_scope: str | None = None  # set once re-sent for the server to deduplicate
        try:
            tried: list[Host] = []
            while True:
                attempt += 1
                if dedup_scope is None:
                    host = group.pick(tried)
                    if host is None:
                        raise self._all_out(group, name, attempt, request_id, reached)
                    # pick marks a rested host probing for the one attempt it gives it
                    # to: only that attempt may end the probe (another one in flight to
                    # the same host since before its ejection must not)
                    probe = host.probing
                else:  # a deduplicated re-send: only a host of that scope knows the call
                    assert host is not None  # the host of the attempt that ended
                    host = group.pick_scope(dedup_scope, tried, host)
                    probe = False
                endpoint = host.endpoint
                request_headers = extra
                if expires is not None:
                    left = expires - monotonic()
                    ms = int(left * 1000) if left > 0 else 0
                    request_headers = [*extra, (b"X-Rpc-Timeout-Ms", b"%d" % ms)]
                if dedup_scope is not None:
                    request_headers = _resend_headers(
                        request_headers, attempt, dedup_scope, started
                    )
                if event is not None:
                    request_headers = self._hooked_headers(
                        event,
                        attempt,
                        endpoint,
                        request_headers,
                        fixed,
                        group,
                        host,
                        probe,
                        reached,
                    )
                base = endpoint.base_path
                request = Request(
                    endpoint,
                    "POST",
                    base + path if base else path,
                    request_headers,
                    body,
                    name,
                    fixed,
                    cache_key,
                )
                host.outstanding += 1
                host.calls += 1
                if attempt > 1:
                    attempt_started = perf_counter()
                response = None
                attempt_error: BaseException | None = None
                counted = False
                try:
                    response = transport.send(request, deadline)
                    dedup = response.headers.dedup
                    if dedup != host.dedup_header:  # (None both: never advertised)
                        host.note_dedup(dedup)
                    if 200 <= response.status < 300:
                        result = self._codec.unpack(response.body, name=name)
                    else:
                        decode_response(response, self._codec, name, self._error_decoder)
                    received = len(response.body)
                    host.connect_failures = 0
                    ok = True
                    if event is not None:
                        event.result = result
                    return result
                except RPCError as exc:
                    attempt_error = exc
                    _attempt_failed(
                        exc, name, request_id, attempt, host, stats, attempt_started, len(body)
                    )
                    counted = stats is not None  # _attempt_failed put it in its host's figures
                    resend = None
                    if host.dedup_scope is not None and not idempotent:
                        resend = dedup_resend_scope(
                            exc,
                            idempotent,
                            host.dedup_scope,
                            host.dedup_window,
                            perf_counter() - started,
                            dedup_scope,
                        )
                    # returns only when another attempt may start (it raises exc otherwise)
                    self._retry_or_raise(
                        exc,
                        policy,
                        attempt,
                        idempotent or resend is not None,
                        group,
                        host,
                        probe,
                        deadline,
                        reached,
                    )
                    if exc.may_have_reached_server and not was_not_run(exc):
                        reached = True  # (a 503 "not run" says it did not)
                    if resend is not None:
                        dedup_scope = resend
                        if stats is not None:
                            stats.method(name).dedup_resends += 1
                    tried.append(host)
                finally:
                    host.outstanding -= 1
                    if group.tracking:  # outcome and latency (rpcclient._core.balance)
                        group.observe(host, attempt_started, ok, attempt_error)
                    if probe and host.probing:  # this attempt's probe, still open
                        group.probe_ended(
                            host, ok or _connected(attempt_error), perf_counter() - attempt_started
                        )
                    if event is not None:
                        if attempt_error is None and not ok:
                            attempt_error = sys.exc_info()[1]  # the caller's Timeout, a kill
                        self._after_attempt(event, attempt_started, response, attempt_error)
        finally:
            # while an exception propagates, sys.exc_info() is that exception
            failure = None if ok else sys.exc_info()[1]
            ended = perf_counter()
            elapsed = ended - started
            if stats is not None:
                stats.record(
                    name,
                    None if host is None or counted else host.endpoint.url,
                    elapsed,
                    elapsed if attempt == 1 else ended - attempt_started,
                    None if failure is None else type(failure).__name__,
                    len(body),
                    received,
                    attempt - 1,
                )
            if event is not None:
                _after_call(hooks, event, elapsed, failure, received)

    def _retry_or_raise(  # noqa: PLR0917 - internal, positional for speed
        self,
        exc: RPCError,
        policy: Retry,
        attempt: int,
        resendable: bool,
        group: EndpointGroup,
        host: Host,
        probe: bool,
        deadline: Deadline,
        reached: bool,
    ) -> None:
        """After a failed attempt: do what the retry rules ask, or raise ``exc``.

        Returns when another attempt may start. The decision is
        :func:`rpcclient._core.retry.decide_retry`'s (pure; ``resendable``: the
        call is idempotent or may be re-sent for the server to deduplicate);
        the actions are here, each a statement of its own, in this order: a
        host that failed to connect is counted against (and maybe ejected),
        the backoff is slept, a deadline that passed during the sleep ends the
        call, and the retry takes a token of the group's budget (none left:
        ``exc``'s message says so). ``exc`` is raised as it is (its
        ``__cause__`` is the transport's own error), with
        ``may_have_reached_server`` set when an earlier attempt (``reached``)
        may have reached the server: the call's verdict, not this attempt's.
        """
        if isinstance(exc, ConnectError):
            group.connect_failed(host, probe)
        decision = decide_retry(
            policy, exc, attempt, resendable, deadline.remaining(), random.random()
        )
        if decision.refused is None:
            if decision.delay > 0:
                gevent.sleep(decision.delay)
            if not deadline.expired():  # the sleep did not overrun it
                token = group.budget.withdraw()
                if token:
                    return
                exc.message += " (retry budget of the service exhausted)"
        if reached:
            exc.may_have_reached_server = True
        raise exc

    def _hooked_headers(  # noqa: PLR0917 - internal, positional for speed
        self,
        event: CallEvent,
        attempt: int,
        endpoint: Endpoint,
        request_headers: list[tuple[bytes, bytes]],
        fixed: tuple[tuple[bytes, bytes], ...],
        group: EndpointGroup,
        host: Host,
        probe: bool,
        reached: bool,
    ) -> list[tuple[bytes, bytes]]:
        """:meth:`_before_attempt` for the plain path: what fails there ends the
        call before the attempt, with the host's probe handed to the next call
        and the error's context set as an attempt's would be."""
        try:
            return self._before_attempt(event, attempt, endpoint, request_headers, fixed)
        except BaseException as exc:
            if probe:  # no attempt: the next call probes it
                group.probe_ended(host, False)
            if isinstance(exc, RPCError):
                exc.attempts = attempt
                exc.request_id = event.request_id
                exc.may_have_reached_server = reached
            raise

    @staticmethod
    def _all_out(
        group: EndpointGroup, name: str, attempt: int, request_id: str, reached: bool
    ) -> ConnectError:
        urls = ", ".join(h.endpoint.url for h in group.hosts)
        exc = ConnectError(
            f"every host of the service is resting after failed connects and each is "
            f"being probed ({urls}): failing fast",
            name=name,
            may_have_reached_server=reached,
            attempts=attempt,
        )
        exc.request_id = request_id
        return exc

    def _before_attempt(
        self,
        event: CallEvent,
        attempt: int,
        endpoint: Endpoint,
        request_headers: list[tuple[bytes, bytes]],
        fixed: tuple[tuple[bytes, bytes], ...],
    ) -> list[tuple[bytes, bytes]]:
        event.attempt = attempt
        event.endpoint = endpoint.url
        event.headers = []
        event.error = None
        event.status = None
        run_hooks(self._hooks.before_attempt, event)
        if not event.headers:
            return request_headers
        # checked like the caller's own: a hook may add headers, never a line
        # break, a framing header or a second copy of one already there
        taken = {k.lower() for k, _ in (*fixed, *request_headers)}
        added = []
        items: Any = event.headers  # whatever a hook appended: checked here, not cast
        for item in items:
            try:
                k, v = item
            except (TypeError, ValueError):
                raise InvalidRequest(
                    f"a before_attempt hook added {item!r}, not a (name, value) pair",
                    name=event.name,
                ) from None
            pair = _check_user_header(event.name, check_header_pair(k, v))
            low = pair[0].lower()
            if low in taken:
                raise InvalidRequest(
                    f"a before_attempt hook added header {pair[0].decode()!r}, "
                    "which the request already has",
                    name=event.name,
                )
            taken.add(low)
            added.append(pair)
        return [*request_headers, *added]

    def _after_attempt(
        self,
        event: CallEvent,
        started: float,
        response: Response | None,
        failure: BaseException | None,
    ) -> None:
        event.elapsed = perf_counter() - started
        event.error = failure
        event.status = None if response is None else response.status
        run_hooks(self._hooks.after_attempt, event)

    def call_many(
        self,
        calls: Iterable[tuple[str, Any] | tuple[str, Any, Mapping[str, Any]]],
        *,
        timeout: Timeout | float | None = None,
    ) -> list[Any]:
        """Run calls concurrently, one greenlet each, under ONE shared deadline.

        ``calls`` are ``(name, args)`` or ``(name, args, options)`` with
        options ``headers``/``idempotent``/``retry`` (another option:
        TypeError). ``timeout`` (a :class:`Timeout` or seconds; None: the
        client's) bounds them all together. Returns, in order, each call's
        result or the :class:`RPCError` it raised (returned, not raised). A
        bad name raises InvalidRequest before anything is sent.
        """
        deadline = (self._timeout if timeout is None else Timeout.coerce(timeout)).start()
        jobs = []
        prepared = []
        for item in calls:
            name, args, *rest = item
            options = dict(rest[0]) if rest else {}
            unknown = set(options) - {"headers", "idempotent", "retry"}
            if unknown:
                raise TypeError(f"unknown call options for {name!r}: {sorted(unknown)}")
            if name not in self._routes:
                self._route(name)
            prepared.append((name, args, options))
        for name, args, options in prepared:
            jobs.append(
                gevent.spawn(
                    self._call_returning_error,
                    name,
                    args,
                    deadline,
                    options.get("headers"),
                    options.get("idempotent"),
                    options.get("retry"),
                )
            )
        try:
            gevent.joinall(jobs, raise_error=True)
        finally:
            gevent.killall([j for j in jobs if not j.dead], block=True)
        return [j.value for j in jobs]

    def _call_returning_error(self, *args: Any) -> Any:
        try:
            return self._call(*args)
        except RPCError as exc:
            return exc

    def prepare(
        self, name: str, args: Any = None, headers: Mapping[str, str] | None = None
    ) -> Request:
        """The validated Request a call's first attempt would send (for tests).

        ``name``, ``args`` and ``headers`` as for :meth:`call`, refused the
        same way (InvalidRequest, RequestTooLarge; ClientClosed once closed);
        nothing is sent and no request id is drawn.
        """
        if self._closed:
            raise ClientClosed("client is closed", name=name if isinstance(name, str) else None)
        group, path = self._routes.get(name) or self._route(name)
        endpoint = group.hosts[0].endpoint
        extra = self._check_headers(name, headers) if headers else []
        replaces = not self._fixed_names.isdisjoint([k.lower() for k, _ in extra])
        return Request(
            endpoint=endpoint,
            method="POST",
            target=endpoint.base_path + path,
            headers=extra,
            body=self._encode(name, args),
            name=name,
            fixed_headers=self._fixed_without(extra) if replaces else self._fixed_headers,
            cache_key=None if replaces else self,
        )

    def _encode(self, name: str, args: Any) -> bytes:
        body = self._codec.pack(args, name=name)
        if len(body) > self.max_request_size:
            raise self._too_large(name, len(body))
        return body

    def _too_large(self, name: str, size: int) -> RequestTooLarge:
        """The error for a body of ``size`` bytes above max_request_size (packed
        once: the size is the packed body's, which is not packed again)."""
        return RequestTooLarge(
            f"request body of {size} bytes is above max_request_size ({self.max_request_size})",
            name=name,
        )

    @staticmethod
    def _check_headers(name: str, headers: Mapping[str, str]) -> list[tuple[bytes, bytes]]:
        checked = []
        seen = set()
        for k, v in headers.items():
            try:
                pair = _check_user_header(name, check_header(k, v))
            except InvalidRequest as exc:
                exc.with_context(name=name)
                raise
            low = pair[0].lower()
            if low in seen:
                raise InvalidRequest(f"header {k!r} given twice", name=name)
            seen.add(low)
            checked.append(pair)
        return checked

    def _fixed_without(self, headers: list[tuple[bytes, bytes]]) -> tuple[tuple[bytes, bytes], ...]:
        """The client's fixed headers less those a call's own headers replace."""
        replaced = {k.lower() for k, _ in headers}
        return tuple(pair for pair in self._fixed_headers if pair[0].lower() not in replaced)

    def _route(self, name: str) -> tuple[EndpointGroup, str]:
        service, method = split_name(name)
        group = self._groups.get(service) or self._groups.get("*")
        if group is None:
            raise InvalidRequest(
                f"no endpoint for service {service!r} (known: {sorted(self._groups)})",
                name=name,
            )
        path = self._path_template.format(service=service, method=method)
        if len(self._routes) >= _ROUTE_CACHE_MAX:
            self._routes.clear()
        route = self._routes[name] = (group, path)
        return route

    def service(self, service: str, *, methods: Iterable[str] | None = None) -> ServiceProxy:
        """A proxy: ``client.service("user").get_profile(42)``.

        ``service`` must be a valid service name (InvalidRequest). With
        ``methods``, only those names are callable: a typo raises
        AttributeError instead of a remote MethodNotFound.
        """
        return ServiceProxy(self, service, methods)

    # -- life cycle ---------------------------------------------------------
    def close(self) -> None:
        """Close the transport and its connections; later calls raise ClientClosed."""
        if not self._closed:
            self._closed = True
            self._transport.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def add_hook(self, hook: Any) -> None:
        """Add ``hook`` (an object with any of :class:`Hook`'s methods) after
        the existing ones; it sees the calls that start after this returns."""
        self._hook_list.append(hook)
        self._hooks = HookSet(self._hook_list)
        self._has_hooks = bool(self._hooks)

    def stats(self) -> dict[str, Any]:
        """Call figures, pool and host state as plain data (see ``rpcclient.report``)."""
        return {
            "closed": self._closed,
            "transport": self._transport.name,
            "stats": self._stats.snapshot(),
            "groups": {
                service: {
                    "hosts": group.stats(),
                    "retry_budget": {
                        "balance": round(group.budget.balance, 2),
                        "refused": group.budget.refused,
                    },
                }
                for service, group in self._groups.items()
            },
            **self._transport.stats(),
        }

    def __repr__(self) -> str:
        groups = ", ".join(f"{k}={v!r}" for k, v in self._groups.items())
        closed = " closed" if self._closed else ""
        return f"<Client {groups} transport={self._transport!r}{closed}>"


def _connected(error: BaseException | None) -> bool:
    """Whether an attempt that ended with ``error`` got a connection to its host."""
    return isinstance(error, RPCError) and not isinstance(
        error, ConnectError | PoolTimeout | ClientClosed | InvalidRequest
    )


def _attempt_failed(  # noqa: PLR0917 - internal, positional for speed
    exc: RPCError,
    name: str,
    request_id: str,
    attempt: int,
    host: Host,
    stats: Stats | None,
    started: float,
    body_size: int,
) -> None:
    """An attempt to ``host`` ended with ``exc``: the error gets the call's
    context, the host the failure (in its stats now, before any backoff: the
    call's own figures come when it ends)."""
    host.failures += 1
    url = host.endpoint.url
    exc.with_context(name=name, endpoint=url)
    exc.attempts = attempt
    exc.request_id = request_id
    if stats is not None:
        stats.host(url).add(perf_counter() - started, type(exc).__name__, body_size, 0)


def _resend_headers(
    headers: list[tuple[bytes, bytes]], attempt: int, scope: str, started: float
) -> list[tuple[bytes, bytes]]:
    """``headers`` and what a deduplicated re-send carries (retry rule 5): the
    attempt's number, the scope and the call's age since its first attempt."""
    age_ms = int((perf_counter() - started) * 1000)
    return [
        *headers,
        (b"X-Rpc-Attempt", b"%d" % attempt),
        (b"X-Rpc-Dedup-Scope", scope.encode()),
        (b"X-Rpc-Dedup-Age-Ms", b"%d" % age_ms),
    ]


def _after_call(
    hooks: HookSet, event: CallEvent, elapsed: float, failure: BaseException | None, received: int
) -> None:
    """The call's end for its hooks (``hooks``: the set it started with)."""
    event.elapsed = elapsed
    event.error = failure
    event.received = received
    run_hooks(hooks.after_call, event)


def _check_count(option: str, value: object) -> None:
    """Refuse a size or count that is not an int >= 1."""
    if not isinstance(value, int):
        raise TypeError(f"{option} must be an int >= 1, not {value!r}")
    if value < 1:
        raise ValueError(f"{option} must be an int >= 1, not {value!r}")


def _check_seconds(option: str, value: object, *, none: bool = False, zero: bool = False) -> None:
    """Refuse a duration that is not a finite number > 0 (>= 0 with ``zero``;
    None allowed with ``none``)."""
    if value is None and none:
        return
    if not isinstance(value, int | float):
        raise TypeError(f"{option} must be a number of seconds, not {value!r}")
    if not (value >= 0 if zero else value > 0) or math.isinf(value):  # also NaN
        bound = ">= 0" if zero else "> 0"
        raise ValueError(f"{option} must be a finite number {bound}, not {value!r}")


def _check_user_header(name: str | None, pair: tuple[bytes, bytes]) -> tuple[bytes, bytes]:
    """Refuse a header the transport or the client writes itself (see README, Names)."""
    low = pair[0].lower()
    if low in FRAMING_HEADERS:
        raise InvalidRequest(
            f"header {pair[0].decode()!r} is the transport's to write (it frames the "
            "request or manages the connection)",
            name=name,
        )
    why = _OWN_HEADERS.get(low)
    if why is not None:
        raise InvalidRequest(f"header {pair[0].decode()!r} is the client's own: {why}", name=name)
    return pair


def _dedupe(headers: list[tuple[str, str]]) -> list[tuple[str, str]]:
    # later entries win, case-insensitively: user headers override defaults
    seen: dict[str, tuple[str, str]] = {}
    for k, v in headers:
        seen[k.lower() if isinstance(k, str) else k] = (k, v)
    return list(seen.values())


class ServiceProxy:
    """Calls into one service by attribute: ``proxy.method(*args)`` or
    ``proxy.method(**kwargs)``.

    Positional arguments travel as a msgpack array, keyword arguments as a
    map, none as nil; both at once raise InvalidRequest. Attributes starting
    with ``_`` are never remote methods, so nothing collides with the proxy's
    own. Per-call options: ``proxy.with_options(timeout=..., headers=...)``.
    """

    __slots__ = ("_client", "_methods", "_options", "_service")

    def __init__(
        self,
        client: ClientCore,
        service: str,
        methods: Iterable[str] | None = None,
        options: dict[str, Any] | None = None,
    ) -> None:
        split_name(f"{service}.m")
        self._client = client
        self._service = service
        self._methods = None if methods is None else frozenset(methods)
        self._options = options or {}

    def with_options(self, **options: Any) -> ServiceProxy:
        unknown = set(options) - {"timeout", "headers", "idempotent", "retry"}
        if unknown:
            raise TypeError(f"unknown call options: {sorted(unknown)}")
        return ServiceProxy(
            self._client, self._service, self._methods, {**self._options, **options}
        )

    def __getattr__(self, method: str) -> Callable[..., Any]:
        if method.startswith("_"):
            raise AttributeError(method)
        if self._methods is not None and method not in self._methods:
            raise AttributeError(
                f"service {self._service!r} has no method {method!r} "
                f"(declared: {sorted(self._methods)})"
            )
        name = f"{self._service}.{method}"
        split_name(name)
        client, options = self._client, self._options

        def remote(*args: Any, **kwargs: Any) -> Any:
            if args and kwargs:
                raise InvalidRequest(
                    "pass positional or keyword arguments, not both: the wire carries "
                    "one msgpack value (an array or a map)",
                    name=name,
                )
            payload = list(args) if args else (kwargs if kwargs else None)
            return client.call(name, payload, **options)

        remote.__name__ = method
        remote.__qualname__ = name
        return remote

    def __repr__(self) -> str:
        return f"<ServiceProxy {self._service!r} of {self._client!r}>"
