"""The ``urllib3`` transport: urllib3's connection pools behind the transport seam.

``Client(url, transport="urllib3")`` sends every request through one
``urllib3.PoolManager`` per client, with ``maxsize=pool_size``,
``block=True`` (never more than ``pool_size`` connections per endpoint) and
``retries=False`` (urllib3 neither retries nor follows redirects: retries
belong to the Client). Its wire behaviour is urllib3's own and left alone:
the head and the body leave in two writes.

Like the requests transport it is **cooperative only under**
``gevent.monkey.patch_all()``; unpatched, each call blocks the hub and only
urllib3's socket-level timeouts bound it (connect, and read per ``recv``:
urllib3's own ``total`` does not stop a slow drip either, our
``gevent.Timeout`` does, when patched). Unpatched, use a client from one
thread only: the pool bound is a gevent semaphore.

TLS: ``TLSConfig.verify`` becomes ``cert_reqs`` (``CERT_REQUIRED`` or
``CERT_NONE``), ``ca_certs`` urllib3's ``ca_certs`` (else the system
store), ``cert`` its ``cert_file``/``key_file``; a ``TLSConfig(context=...)``
is not used here.

Bounds, hooks and the mapping of foreign errors are shared with the
requests transport: see :mod:`rpcclient._blocking_common`.
"""

from __future__ import annotations

from typing import Any

import urllib3

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

__all__ = ["Urllib3Transport"]

MIB = 1024 * 1024


class Urllib3Transport(Transport):
    """A ``urllib3.PoolManager`` behind the transport seam (see the module docstring).

    ``pool_size`` bounds connections (and concurrent calls) per endpoint;
    ``pool_connections`` is how many endpoints' pools the manager keeps.
    The other options mean what they mean for the gevent transport.
    """

    name = "urllib3"

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
        self._manager = self._new_manager()
        track_for_fork(self)

    def _new_manager(self) -> urllib3.PoolManager:
        tls = self.tls
        cert_file, key_file = tls.cert if isinstance(tls.cert, tuple) else (tls.cert, None)
        manager = urllib3.PoolManager(
            num_pools=self.pool_connections,
            maxsize=self.pool_size,
            block=True,
            retries=False,
            cert_reqs="CERT_REQUIRED" if tls.verify else "CERT_NONE",
            ca_certs=tls.ca_certs,
            cert_file=cert_file,
            key_file=key_file,
        )
        manager.pool_classes_by_scheme = self._pools.classes
        return manager

    # -- the seam -----------------------------------------------------------
    def send(self, request: Request, deadline: Deadline) -> Response:
        """Send one request; see :class:`~rpcclient._transport.Transport`."""
        endpoint = request.endpoint
        body, chunked = request_body(request.body)
        headers = {
            name.decode("latin-1"): value.decode("latin-1")
            for name, value in (*request.fixed_headers, *request.headers)
        }
        with exchange(request, deadline, self._slots, self) as ex:
            pool = self._manager.connection_from_host(endpoint.host, endpoint.port, endpoint.scheme)
            raw = pool.urlopen(
                request.method,
                request.target,
                body=body,
                headers=headers,
                retries=False,
                redirect=False,
                assert_same_host=False,
                timeout=urllib3.Timeout(
                    connect=socket_timeout(deadline.connect_for()),
                    read=socket_timeout(deadline.read_for()),
                ),
                release_conn=False,
                chunked=chunked,
                preload_content=False,
                decode_content=True,
            )
            ex.raw = raw
            return read_answer(raw, ex, request, self.max_response_size, self.max_head_size)

    def close(self) -> None:
        """Close idle connections now, busy ones when their call ends."""
        if not self.closed:
            self.closed = True
            self._manager.clear()
            self._pools.close()  # urllib3 2.x leaves cleared pools to the GC

    def _reset_after_fork(self) -> None:
        # In a forked child: drop the parent's pools and slots and start anew.
        old_pools, self._pools = self._pools, PoolFamily(self.idle_timeout, self.max_connection_age)
        old, self._manager = self._manager, self._new_manager()
        self._slots.reset()
        old.clear()
        old_pools.close()

    def stats(self) -> dict[str, Any]:
        return {"transport": self.name, "pools": self._slots.stats()}

    def __repr__(self) -> str:
        pools = ", ".join(f"{k}={v}" for k, v in self._slots.stats().items())
        return f"<Urllib3Transport{' closed' if self.closed else ''} pools=[{pools}]>"


def _factory(**options: Any) -> Transport:
    return Urllib3Transport(**options)


register_transport("urllib3", _factory)
