"""The ``requests`` transport: the old client, kept for A/B comparisons and as a fallback.

``Client(url, transport="requests")`` sends every request through one
``requests.Session`` per client, with a pooled ``HTTPAdapter``
(``pool_maxsize=pool_size``, ``pool_block=True``, ``max_retries=0``:
requests' own retries are off, retries belong to the Client). Its wire
behaviour is requests' own and deliberately left alone: the head and the
body leave in two writes, with requests' default headers (``Accept``,
``Connection``) next to the client's. ``Accept-Encoding`` is sent only
when the caller sets one (as on every transport); a compressed answer is
decoded within ``max_response_size``.

**Cooperative only under** ``gevent.monkey.patch_all()``: requests blocks
on stdlib sockets, so in a process that is not monkey-patched each call
blocks the whole hub. Patched, it yields like any gevent code and every
bound holds. Unpatched, the bounds fall back to requests' own socket-level
timeouts (connect, and read per ``recv``): a server dripping bytes can then
stretch a call past its read and total bounds. Unpatched, use a client from
one thread only: the pool bound is a gevent semaphore.

The session does not read the environment (``trust_env = False``): no
proxies from ``HTTP(S)_PROXY``, no ``.netrc`` credentials, no
``REQUESTS_CA_BUNDLE``: what a call does depends on the Client's options
only. It keeps no cookies either (a policy refusing all), so no call carries
state from an earlier one. TLS: ``TLSConfig.verify``/``ca_certs`` become
requests' ``verify`` (certifi's bundle when no ``ca_certs``, as requests
does) and ``cert`` its ``cert``; a ``TLSConfig(context=...)`` becomes
the ``ssl_context`` of the adapter's pools and overrides the rest: the
adapter then takes the verify mode from the context and loads no CA bundle
into it (requests would add certifi's). With ``verify=False`` urllib3 warns
on every request, as it always did.

Bounds, hooks and the mapping of foreign errors are shared with the urllib3
transport: see :mod:`rpcclient._transports.blocking.common`.
"""

from __future__ import annotations

import http.cookiejar
import ssl
from collections.abc import Iterable
from typing import Any

import requests
import requests.adapters
from urllib3.response import BaseHTTPResponse

from ..._core.models import Request
from ..._core.timeouts import Deadline
from ..base import Transport, register_transport
from .common import BlockingTransport, context_pool_options, socket_timeout

__all__ = ["RequestsTransport"]


class _Adapter(requests.adapters.HTTPAdapter):
    """requests' adapter, with urllib3 pools that carry our hooks (and a user's SSLContext)."""

    def __init__(
        self, classes: dict[str, Any], ssl_context: ssl.SSLContext | None = None, **kw: Any
    ) -> None:
        self._pool_classes = classes
        self._ssl_context = ssl_context
        super().__init__(**kw)

    def init_poolmanager(
        self, connections: int, maxsize: int, block: bool = False, **pool_kwargs: Any
    ) -> None:
        super().init_poolmanager(connections, maxsize, block, **pool_kwargs)
        self.poolmanager.pool_classes_by_scheme = self._pool_classes

    # With a user's SSLContext, the context decides: requests would otherwise
    # set the verify mode from ``verify`` and load certifi's bundle into it.
    def build_connection_pool_key_attributes(
        self, request: Any, verify: Any, cert: Any = None
    ) -> Any:
        host, pool_kwargs = super().build_connection_pool_key_attributes(request, verify, cert)
        context = self._ssl_context
        if context is None:
            return host, pool_kwargs
        return host, context_pool_options(context)

    def cert_verify(self, conn: Any, url: str, verify: Any, cert: Any) -> None:
        context = self._ssl_context
        if context is None:
            super().cert_verify(conn, url, verify, cert)  # type: ignore[no-untyped-call]
            return
        conn.cert_reqs = context.verify_mode
        conn.ca_certs = conn.ca_cert_dir = conn.cert_file = conn.key_file = None


class RequestsTransport(BlockingTransport):
    """A ``requests.Session`` behind the transport seam (see the module docstring)."""

    name = "requests"

    def _new_engine(self) -> requests.Session:
        session = requests.Session()
        session.trust_env = False
        session.cookies.set_policy(http.cookiejar.DefaultCookiePolicy(allowed_domains=[]))
        adapter = _Adapter(
            self._pools.classes,
            self.tls.custom_context,
            pool_connections=self.pool_connections,
            pool_maxsize=self.pool_size,
            max_retries=0,
            pool_block=True,
        )
        session.mount("http://", adapter)
        session.mount("https://", adapter)
        tls = self.tls
        session.verify = tls.ca_certs if tls.verify and tls.ca_certs else tls.verify
        session.cert = tls.cert
        return session

    def _close_engine(self, engine: requests.Session) -> None:
        engine.close()

    def _open(
        self,
        request: Request,
        deadline: Deadline,
        body: bytes | Iterable[bytes] | None,
        chunked: bool,
        headers: dict[str, str],
    ) -> BaseHTTPResponse:
        del chunked  # requests chunks iterables itself
        timeouts = (socket_timeout(deadline.connect_for()), socket_timeout(deadline.read_for()))
        answer = self._engine.request(
            request.method,
            request.url,
            data=body,
            headers=headers,
            timeout=timeouts,
            stream=True,
            allow_redirects=False,
        )
        raw: BaseHTTPResponse = answer.raw
        return raw


def _factory(**options: Any) -> Transport:
    return RequestsTransport(**options)


register_transport("requests", _factory)
