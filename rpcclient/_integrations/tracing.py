"""OpenTelemetry spans and W3C trace context for calls, on both sides of the wire.

Optional: ``pip install 'rpcclient[otel]'`` brings ``opentelemetry-api``.
Nothing here imports it until a class is constructed, so ``import rpcclient``
never needs it; constructing either class without it raises ImportError that
names the extra.

:class:`OpenTelemetryHook` (client side) makes, per call:

- a CLIENT span ``{service}/{method}`` (the RPC span-name convention), child
  of whatever span is current in the calling greenlet, with ``rpc.system``,
  ``rpc.service``, ``rpc.method``, ``rpcclient.request_id``; at its end
  ``server.address``/``server.port`` of the last attempt and
  ``rpcclient.attempts``;
- per attempt, a CLIENT span ``POST`` (the HTTP client convention: one span
  per request sent), child of the call span, with ``server.address``,
  ``server.port``, ``http.request.method``, ``rpcclient.attempt`` (1, 2, ...)
  and, on a resend, ``http.request.resend_count``; at its end
  ``http.response.status_code``;
- the attempt span's context injected into that attempt's request headers by
  the propagator (the global one by default: W3C ``traceparent`` and
  ``tracestate``, plus ``baggage``), so the server continues the trace from
  the very request that reached it.

Failure: status ERROR and ``error.type``. On an attempt span that is the HTTP
status code for a 4xx/5xx answer, else the exception's qualified class name
(recorded as an event too): no answer came, or a 2xx did not decode. On the call span it is
the qualified class name of the error the call raised (``rpcclient.exceptions.
RemoteError``), with ``rpcclient.remote_error.type`` for the server's own
class. The hook never makes its spans current: it touches no contextvars, so
it cannot leave a wrong context behind.

The ``rpc.*`` attributes are the long-deployed ones (``rpc.system``,
``rpc.service``, short ``rpc.method``) that trace backends group by; the
incubating convention's ``rpc.system.name`` and fully qualified
``rpc.method`` are not emitted yet. ``rpc.system`` is ``msgpack-http``: this
wire protocol, not the TCP-framed MessagePack-RPC.

:class:`TraceContextMiddleware` (server side) wraps any WSGI app: it extracts
the incoming context and runs the app inside a SERVER span that continues the
trace, current while the app runs (so a handler's own spans and outgoing
calls nest under it). Request-id echo stays the server's job.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from .._core.observe import CallEvent, Hook
from .._protocol import METHOD_NAME, SERVICE_NAME  # the name rules of wire protocol v1
from .._version import __version__
from ..exceptions import RemoteError

if TYPE_CHECKING:
    from opentelemetry.propagators.textmap import TextMapPropagator
    from opentelemetry.trace import Span, TracerProvider

__all__ = ["OTEL_EXTRA", "RPC_SYSTEM", "OpenTelemetryHook", "TraceContextMiddleware"]

OTEL_EXTRA = "rpcclient[otel]"
RPC_SYSTEM = "msgpack-http"

_CALL = "otel.call_span"
_ATTEMPT = "otel.attempt_span"
_DEFAULT_PORTS = {"http": 80, "https": 443}
_ADDRESS_CACHE_MAX = 1024

StartResponse = Callable[..., Any]
WSGIApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]


def _require_otel(what: str) -> None:
    try:
        import opentelemetry.trace  # noqa: F401 - the API: trace, propagate, context
    except ImportError as exc:
        raise ImportError(
            f"{what} needs the OpenTelemetry API: pip install '{OTEL_EXTRA}' "
            f"(or opentelemetry-api) [{exc}]"
        ) from exc


def _error_type(exc: BaseException) -> str:
    cls = type(exc)
    if cls.__module__ == "builtins":
        return cls.__qualname__
    return f"{cls.__module__}.{cls.__qualname__}"


def _fail(span: Span, error_type: str, description: str) -> None:
    from opentelemetry.trace import Status, StatusCode

    span.set_attribute("error.type", error_type)
    span.set_status(Status(StatusCode.ERROR, description))


class OpenTelemetryHook(Hook):
    """Trace every call and every attempt, and propagate the context to the server.

    ``tracer_provider``: where spans go (None: the global provider, looked up
    through the API's proxy, so one set later still applies). ``propagator``:
    what is injected (None: the global propagator at each attempt, which
    ``OTEL_PROPAGATORS`` configures). Raises ImportError naming the ``otel``
    extra when ``opentelemetry-api`` is missing. Spans, attributes and errors:
    see the module docstring.
    """

    def __init__(
        self,
        tracer_provider: TracerProvider | None = None,
        *,
        propagator: TextMapPropagator | None = None,
    ) -> None:
        _require_otel("OpenTelemetryHook")
        from opentelemetry import propagate, trace

        self._tracer = trace.get_tracer("rpcclient", __version__, tracer_provider)
        self._propagator = propagator
        self._addresses: dict[str, tuple[str, int]] = {}
        # bound once rather than imported in each hook: these run on every call
        self._client_kind = trace.SpanKind.CLIENT
        self._in_context = trace.set_span_in_context
        self._global_propagator = propagate.get_global_textmap

    def _address(self, url: str) -> tuple[str, int]:
        address = self._addresses.get(url)
        if address is None:
            parts = urlsplit(url)
            address = (parts.hostname or "", parts.port or _DEFAULT_PORTS.get(parts.scheme, 0))
            if len(self._addresses) >= _ADDRESS_CACHE_MAX:
                self._addresses.clear()
            self._addresses[url] = address
        return address

    def before_call(self, event: CallEvent) -> None:
        """Start the call span (its parent: the span current in the caller)."""
        service, method = event.service, event.method
        event.scratch[_CALL] = self._tracer.start_span(
            f"{service}/{method}",
            kind=self._client_kind,
            attributes={
                "rpc.system": RPC_SYSTEM,
                "rpc.service": service,
                "rpc.method": method,
                "rpcclient.request_id": event.request_id,
            },
        )

    def before_attempt(self, event: CallEvent) -> None:
        """Start the attempt span under the call span; inject its context."""
        call_span = event.scratch.get(_CALL)
        parent = self._in_context(call_span) if call_span is not None else None
        host, port = self._address(event.endpoint)
        attributes: dict[str, str | int] = {
            "rpc.system": RPC_SYSTEM,
            "rpc.service": event.service,
            "rpc.method": event.method,
            "server.address": host,
            "server.port": port,
            "http.request.method": "POST",
            "rpcclient.attempt": event.attempt,
        }
        if event.attempt > 1:
            attributes["http.request.resend_count"] = event.attempt - 1
        span = self._tracer.start_span(
            "POST", context=parent, kind=self._client_kind, attributes=attributes
        )
        event.scratch[_ATTEMPT] = span
        carrier: dict[str, str] = {}
        propagator = self._propagator or self._global_propagator()
        propagator.inject(carrier, context=self._in_context(span))
        # propagators emit header-safe ASCII (baggage is percent-encoded)
        event.headers.extend((k.encode("latin-1"), v.encode("latin-1")) for k, v in carrier.items())

    def after_attempt(self, event: CallEvent) -> None:
        """End the attempt span with the answer's status, or the error."""
        span: Span | None = event.scratch.pop(_ATTEMPT, None)
        if span is None:
            return
        if span.is_recording():
            status, error = event.status, event.error
            if status is not None:
                span.set_attribute("http.response.status_code", status)
            if status is not None and status >= 400:
                # an answer came: the HTTP convention names the error by its
                # status, whether or not its envelope was decoded already
                _fail(span, str(status), f"HTTP {status}")
            elif error is not None:
                span.record_exception(error)
                _fail(span, _error_type(error), f"{type(error).__name__}: {error}")
        span.end()

    def after_call(self, event: CallEvent) -> None:
        """End the call span: ERROR with the call's error class when it failed."""
        span: Span | None = event.scratch.pop(_CALL, None)
        if span is None:
            return
        if span.is_recording():
            if event.endpoint:
                host, port = self._address(event.endpoint)
                span.set_attribute("server.address", host)
                span.set_attribute("server.port", port)
            span.set_attribute("rpcclient.attempts", event.attempt)
            error = event.error
            if error is not None:
                if isinstance(error, RemoteError):
                    span.set_attribute("rpcclient.remote_error.type", error.type)
                span.record_exception(error)
                _fail(span, _error_type(error), f"{type(error).__name__}: {error}")
        span.end()

    def __repr__(self) -> str:
        return f"<OpenTelemetryHook tracer={self._tracer!r}>"


class TraceContextMiddleware:
    """A WSGI middleware: continue the caller's trace in a SERVER span.

    The span is named ``{service}/{method}`` when the path ends in two plain
    segments (wire protocol v1), else after the HTTP method; it is current
    while ``app`` runs and ends when the answer's body is closed. Its status
    is ERROR for a 5xx answer or an exception from ``app`` (re-raised). 4xx
    are the caller's faults and leave it unset. ``tracer_provider`` and
    ``propagator`` as for :class:`OpenTelemetryHook`; ImportError without
    ``opentelemetry-api``.
    """

    def __init__(
        self,
        app: WSGIApp,
        tracer_provider: TracerProvider | None = None,
        *,
        propagator: TextMapPropagator | None = None,
    ) -> None:
        _require_otel("TraceContextMiddleware")
        from opentelemetry import context, propagate, trace

        self.app = app
        self._tracer = trace.get_tracer("rpcclient.server", __version__, tracer_provider)
        self._propagator = propagator
        self._server_kind = trace.SpanKind.SERVER
        self._in_context = trace.set_span_in_context
        self._global_propagator = propagate.get_global_textmap
        self._attach = context.attach
        self._detach = context.detach

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        propagator = self._propagator or self._global_propagator()
        carrier = {}
        for field in propagator.fields:
            value = environ.get("HTTP_" + field.upper().replace("-", "_"))
            if value:
                carrier[field] = value
        parent = propagator.extract(carrier)
        name, attributes = _server_span(environ)
        span = self._tracer.start_span(
            name, context=parent, kind=self._server_kind, attributes=attributes
        )

        def traced_start_response(status: str, headers: Any, exc_info: Any = None) -> Any:
            code = status[:3]
            if code.isdigit():
                span.set_attribute("http.response.status_code", int(code))
                if code == "404":
                    # no such method: a made-up path must not become a span name
                    span.update_name(environ.get("REQUEST_METHOD", "GET"))
                elif int(code) >= 500:
                    _fail(span, code, f"HTTP {code}")
            if exc_info is None:
                return start_response(status, headers)
            return start_response(status, headers, exc_info)

        token = self._attach(self._in_context(span, parent))
        try:
            body = self.app(environ, traced_start_response)
        except BaseException as exc:
            span.record_exception(exc)
            _fail(span, _error_type(exc), f"{type(exc).__name__}: {exc}")
            span.end()
            raise
        finally:
            self._detach(token)
        if isinstance(body, list | tuple):
            span.end()  # already complete: the usual case, RPCApp's included
            return body
        return _EndSpanOnClose(body, span)

    def __repr__(self) -> str:
        return f"<TraceContextMiddleware app={self.app!r}>"


def _server_span(environ: dict[str, Any]) -> tuple[str, dict[str, str | int]]:
    verb = environ.get("REQUEST_METHOD", "GET")
    path = environ.get("PATH_INFO", "") or "/"
    attributes: dict[str, str | int] = {
        "http.request.method": verb,
        "url.path": path,
        "url.scheme": environ.get("wsgi.url_scheme", "http"),
    }
    host = environ.get("HTTP_HOST") or environ.get("SERVER_NAME")
    if host:
        if host.startswith("["):  # [v6]:port
            address, _, rest = host[1:].partition("]")
            port = rest[1:]
        else:
            address, _, port = host.partition(":")
        attributes["server.address"] = address
        if port.isdigit():
            attributes["server.port"] = int(port)
    if environ.get("REMOTE_ADDR"):
        attributes["client.address"] = environ["REMOTE_ADDR"]
    protocol = environ.get("SERVER_PROTOCOL", "")
    if protocol.startswith("HTTP/"):
        attributes["network.protocol.version"] = protocol[5:]
    if environ.get("HTTP_X_REQUEST_ID"):
        attributes["rpcclient.request_id"] = environ["HTTP_X_REQUEST_ID"][:200]
    parts = path.strip("/").split("/")
    if len(parts) >= 2 and SERVICE_NAME.match(parts[-2]) and METHOD_NAME.match(parts[-1]):
        service, method = parts[-2], parts[-1]
        attributes.update({"rpc.system": RPC_SYSTEM, "rpc.service": service, "rpc.method": method})
        return f"{service}/{method}", attributes
    # any other path: the HTTP method alone, so scanners cannot mint span names
    return verb, attributes


class _EndSpanOnClose:
    """A streamed WSGI body whose span ends when the server closes it."""

    def __init__(self, body: Iterable[bytes], span: Span) -> None:
        self._body = body
        self._span = span

    def __iter__(self) -> Iterator[bytes]:
        return iter(self._body)

    def close(self) -> None:
        try:
            close = getattr(self._body, "close", None)
            if close is not None:
                close()
        finally:
            self._span.end()
