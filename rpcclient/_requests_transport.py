"""The ``requests`` transport: the old client, kept for A/B comparisons and as a fallback.

``Client(url, transport="requests")`` sends every request through one
``requests.Session`` per client, with a pooled ``HTTPAdapter``
(``pool_maxsize=pool_size``, ``pool_block=True``, ``max_retries=0``:
requests' own retries are off, retries belong to the Client). Its wire
behaviour is requests' own and deliberately left alone: the head and the
body leave in two writes, with requests' default headers (``Accept``,
``Accept-Encoding``, ``Connection``) next to the client's.

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
does) and ``cert`` its ``cert``; a ``TLSConfig(context=...)`` is not used
here. With ``verify=False`` urllib3 warns on every request, as it always
did.

Bounds, hooks and the mapping of foreign errors are shared with the urllib3
transport: see :mod:`rpcclient._blocking_common`.
"""

from __future__ import annotations

import http.cookiejar
from typing import Any

import requests
import requests.adapters

from ._blocking_common import (
    EndpointSlots,
    PoolFamily,
    check_options,
    exchange,
    read_answer,
    request_body,
    socket_timeout,
    track_for_fork,
)
from ._client import register_transport
from ._gevent_transport import TLSConfig
from ._models import Request, Response
from ._timeouts import Deadline
from ._transport import Transport

__all__ = ["RequestsTransport"]

MIB = 1024 * 1024


class _Adapter(requests.adapters.HTTPAdapter):
    """requests' adapter, with urllib3 pools that carry our hooks."""

    def __init__(self, classes: dict[str, Any], **kw: Any) -> None:
        self._pool_classes = classes
        super().__init__(**kw)

    def init_poolmanager(
        self, connections: int, maxsize: int, block: bool = False, **pool_kwargs: Any
    ) -> None:
        super().init_poolmanager(connections, maxsize, block, **pool_kwargs)
        self.poolmanager.pool_classes_by_scheme = self._pool_classes


class RequestsTransport(Transport):
    """A ``requests.Session`` behind the transport seam (see the module docstring).

    ``pool_size`` bounds connections (and concurrent calls) per endpoint;
    ``pool_connections`` is how many endpoints' pools the adapter keeps.
    The other options mean what they mean for the gevent transport.
    """

    name = "requests"

    def __init__(
        self,
        *,
        pool_size: int = 10,
        idle_timeout: float | None = 1.5,
        max_connection_age: float | None = 300.0,
        max_response_size: int = 64 * MIB,
        max_head_size: int = 64 * 1024,
        tls: TLSConfig | None = None,
        pool_connections: int = 10,
    ) -> None:
        self.tls = check_options(pool_size, tls, idle_timeout, max_connection_age)
        self.pool_size = pool_size
        self.pool_connections = pool_connections
        self.idle_timeout = idle_timeout
        self.max_connection_age = max_connection_age
        self.max_response_size = max_response_size
        self.max_head_size = max_head_size
        self.closed = False
        self._slots = EndpointSlots(pool_size)
        self._pools = PoolFamily(idle_timeout, max_connection_age)
        self._session = self._new_session()
        track_for_fork(self)

    def _new_session(self) -> requests.Session:
        session = requests.Session()
        session.trust_env = False
        session.cookies.set_policy(http.cookiejar.DefaultCookiePolicy(allowed_domains=[]))
        adapter = _Adapter(
            self._pools.classes,
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

    # -- the seam -----------------------------------------------------------
    def send(self, request: Request, deadline: Deadline) -> Response:
        """Send one request; see :class:`~rpcclient._transport.Transport`."""
        body, _chunked = request_body(request.body)  # requests chunks iterables itself
        headers = {
            name.decode("latin-1"): value.decode("latin-1")
            for name, value in (*request.fixed_headers, *request.headers)
        }
        with exchange(request, deadline, self._slots, self) as ex:
            timeouts = (socket_timeout(deadline.connect_for()), socket_timeout(deadline.read_for()))
            answer = self._session.request(
                request.method,
                request.url,
                data=body,
                headers=headers,
                timeout=timeouts,
                stream=True,
                allow_redirects=False,
            )
            ex.raw = answer.raw
            return read_answer(answer.raw, ex, request, self.max_response_size, self.max_head_size)

    def close(self) -> None:
        """Close idle connections now, busy ones when their call ends."""
        if not self.closed:
            self.closed = True
            self._session.close()
            self._pools.close()  # urllib3 2.x leaves cleared pools to the GC

    def _reset_after_fork(self) -> None:
        # In a forked child: drop the parent's pools and slots and start anew.
        old_pools, self._pools = self._pools, PoolFamily(self.idle_timeout, self.max_connection_age)
        old, self._session = self._session, self._new_session()
        self._slots.reset()
        old.close()
        old_pools.close()

    def stats(self) -> dict[str, Any]:
        return {"transport": self.name, "pools": self._slots.stats()}

    def __repr__(self) -> str:
        pools = ", ".join(f"{k}={v}" for k, v in self._slots.stats().items())
        return f"<RequestsTransport{' closed' if self.closed else ''} pools=[{pools}]>"


def _factory(**options: Any) -> Transport:
    return RequestsTransport(**options)


register_transport("requests", _factory)
