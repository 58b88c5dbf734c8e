"""The Client: ``client.call("service.method", args)`` and service proxies.

A Client turns a call into a prepared, validated :class:`Request`, hands it to
its transport with the call's :class:`Deadline`, and decodes the answer. It
holds no per-call state, so one Client is safe to share across any number of
greenlets; its caches (routes, heads) only ever grow to a bound.

Everything that can be checked is checked before a connection is taken:
the name, each header, the arguments' encodability, the request size.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from ._codec import DEFAULT_CODEC, Codec
from ._models import Endpoint, Request, check_header
from ._protocol import (
    DEFAULT_PATH_TEMPLATE,
    ErrorDecoder,
    check_path_template,
    decode_error_envelope,
    decode_response,
    split_name,
)
from ._timeouts import Timeout
from ._transport import Transport
from ._version import __version__
from .exceptions import ClientClosed, InvalidRequest, RequestTooLarge, RPCError

__all__ = ["Client", "ServiceProxy", "register_transport"]

MIB = 1024 * 1024
ENV_TRANSPORT = "RPCCLIENT_TRANSPORT"
_ROUTE_CACHE_MAX = 10_000

TransportFactory = Callable[..., Transport]
_TRANSPORTS: dict[str, TransportFactory] = {}


def register_transport(name: str, factory: TransportFactory) -> None:
    """Make ``Client(..., transport=name)`` build ``factory(**options)``.

    ``options`` are ``pool_size``, ``idle_timeout``, ``max_connection_age``,
    ``max_response_size``, ``max_head_size`` and ``tls``.
    """
    _TRANSPORTS[name] = factory


def _gevent_factory(**options: Any) -> Transport:
    from ._gevent_transport import GeventTransport

    return GeventTransport(**options)


register_transport("gevent", _gevent_factory)


def _build_transport(transport: str | Transport | None, options: dict[str, Any]) -> Transport:
    if isinstance(transport, Transport):
        return transport
    name = transport or os.environ.get(ENV_TRANSPORT) or "gevent"
    if name not in _TRANSPORTS:
        # the optional transports register themselves on import
        with contextlib.suppress(ImportError):
            __import__(f"rpcclient._{name}_transport")
    try:
        factory = _TRANSPORTS[name]
    except KeyError:
        known = ", ".join(sorted(_TRANSPORTS))
        raise ValueError(f"unknown transport {name!r} (known: {known})") from None
    return factory(**options)


class Client:
    """A msgpack RPC client over pooled keep-alive HTTP/1.1.

    ``endpoints`` is one base URL for every service (``"http://h:8001"``) or
    a mapping ``{"user": "http://h1:8001", ...}`` (key ``"*"``: every other
    service). ``transport`` is ``"gevent"`` (default), ``"requests"``,
    ``"urllib3"``, a :class:`Transport`, or None to read the
    ``RPCCLIENT_TRANSPORT`` environment variable. ``timeout`` is a
    :class:`Timeout` or a number of seconds for every bound.

    ``call`` raises only :mod:`rpcclient.exceptions` errors (and the caller's
    own ``gevent.Timeout``/``GreenletExit``), and never re-sends a request.
    """

    def __init__(
        self,
        endpoints: str | Mapping[str, str],
        *,
        transport: str | Transport | None = None,
        timeout: Timeout | float | None = Timeout(),  # noqa: B008 - immutable
        pool_size: int = 10,
        headers: Mapping[str, str] | None = None,
        codec: Codec = DEFAULT_CODEC,
        error_decoder: ErrorDecoder = decode_error_envelope,
        path_template: str = DEFAULT_PATH_TEMPLATE,
        max_request_size: int = 64 * MIB,
        max_response_size: int = 64 * MIB,
        max_head_size: int = 64 * 1024,
        idle_timeout: float | None = 1.5,
        max_connection_age: float | None = 300.0,
        verify: bool = True,
        ca_certs: str | None = None,
        cert: str | tuple[str, str] | None = None,
    ) -> None:
        self._endpoints = self._parse_endpoints(endpoints)
        self._timeout = Timeout.coerce(timeout)
        self._codec = codec
        self._error_decoder = error_decoder
        self._path_template = check_path_template(path_template)
        self.max_request_size = max_request_size
        fixed = [("User-Agent", f"rpcclient/{__version__}"), ("Content-Type", codec.content_type)]
        fixed += list((headers or {}).items())
        self._fixed_headers = tuple(check_header(k, v) for k, v in _dedupe(fixed))
        self._routes: dict[str, tuple[Endpoint, str]] = {}
        self._closed = False
        from ._gevent_transport import TLSConfig

        self._transport = _build_transport(
            transport,
            {
                "pool_size": pool_size,
                "idle_timeout": idle_timeout,
                "max_connection_age": max_connection_age,
                "max_response_size": max_response_size,
                "max_head_size": max_head_size,
                "tls": TLSConfig(verify=verify, ca_certs=ca_certs, cert=cert),
            },
        )

    @staticmethod
    def _parse_endpoints(endpoints: str | Mapping[str, str]) -> dict[str, Endpoint]:
        if isinstance(endpoints, str):
            return {"*": Endpoint.parse(endpoints)}
        if not isinstance(endpoints, Mapping) or not endpoints:
            raise InvalidRequest("endpoints must be a base URL or a non-empty mapping")
        parsed = {}
        for service, url in endpoints.items():
            if service != "*":
                split_name(f"{service}.m")  # the same rule as in names
            parsed[service] = Endpoint.parse(url)
        return parsed

    # -- calls --------------------------------------------------------------
    @property
    def transport(self) -> Transport:
        return self._transport

    @property
    def timeout(self) -> Timeout:
        return self._timeout

    def call(
        self,
        name: str,
        args: Any = None,
        *,
        timeout: Timeout | float | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Any:
        """Call ``name`` (``"service.method"``) with ``args`` and return its result.

        ``args`` travels as one msgpack value: a list for positional arguments,
        a dict for keyword arguments, None for none. ``timeout`` replaces the
        client's for this call; ``headers`` are added to this request.
        Raises :class:`InvalidRequest` before any I/O for bad input.
        """
        deadline = (self._timeout if timeout is None else Timeout.coerce(timeout)).start()
        request = self.prepare(name, args, headers)
        try:
            response = self._transport.send(request, deadline)
            return decode_response(response, self._codec, name, self._error_decoder)
        except RPCError as exc:
            raise exc.with_context(name=name, endpoint=request.endpoint.url) from None

    def prepare(
        self, name: str, args: Any = None, headers: Mapping[str, str] | None = None
    ) -> Request:
        """The validated Request a call would send (useful with MockTransport)."""
        if self._closed:
            raise ClientClosed("client is closed", name=name if isinstance(name, str) else None)
        route = self._routes.get(name)
        if route is None:
            route = self._route(name)
        body = self._codec.pack(args, name=name)
        if len(body) > self.max_request_size:
            raise RequestTooLarge(
                f"request body of {len(body)} bytes is above max_request_size "
                f"({self.max_request_size})",
                name=name,
            )
        extra = []
        if headers:
            for k, v in headers.items():
                try:
                    extra.append(check_header(k, v))
                except InvalidRequest as exc:
                    raise exc.with_context(name=name) from None
        endpoint, target = route
        return Request(
            endpoint=endpoint,
            method="POST",
            target=target,
            headers=extra,
            body=body,
            name=name,
            fixed_headers=self._fixed_headers,
            cache_key=self,
        )

    def _route(self, name: str) -> tuple[Endpoint, str]:
        service, method = split_name(name)
        endpoint = self._endpoints.get(service) or self._endpoints.get("*")
        if endpoint is None:
            raise InvalidRequest(
                f"no endpoint for service {service!r} (known: {sorted(self._endpoints)})",
                name=name,
            )
        target = endpoint.base_path + self._path_template.format(service=service, method=method)
        if len(self._routes) >= _ROUTE_CACHE_MAX:
            self._routes.clear()
        route = self._routes[name] = (endpoint, target)
        return route

    def service(self, service: str, *, methods: Iterable[str] | None = None) -> ServiceProxy:
        """A proxy: ``client.service("user").get_profile(42)``.

        With ``methods``, only those names are callable: a typo raises
        AttributeError instead of a remote MethodNotFound.
        """
        return ServiceProxy(self, service, methods)

    # -- life cycle ---------------------------------------------------------
    def close(self) -> None:
        """Close the transport and its connections; later calls raise ClientClosed."""
        if not self._closed:
            self._closed = True
            self._transport.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def stats(self) -> dict[str, Any]:
        return {"closed": self._closed, **self._transport.stats()}

    def __repr__(self) -> str:
        eps = ", ".join(f"{k}={v.url}" for k, v in self._endpoints.items())
        return f"<Client {eps} transport={self._transport!r}{' closed' if self._closed else ''}>"


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
        client: Client,
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
        unknown = set(options) - {"timeout", "headers"}
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
