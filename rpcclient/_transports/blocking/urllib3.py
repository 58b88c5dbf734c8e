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
becomes urllib3's ``ssl_context``, with ``cert_reqs`` taken from the
context itself (urllib3 writes ``cert_reqs`` into the context it is given)
and no host name check of urllib3's own when the context has it off.

Bounds, hooks and the mapping of foreign errors are shared with the
requests transport: see :mod:`rpcclient._transports.blocking.common`.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import urllib3
from urllib3.response import BaseHTTPResponse

from ..._core.models import Request
from ..._core.timeouts import Deadline
from ..base import Transport, register_transport
from .common import BlockingTransport, context_pool_options, socket_timeout

__all__ = ["Urllib3Transport"]


class Urllib3Transport(BlockingTransport):
    """A ``urllib3.PoolManager`` behind the transport seam (see the module docstring)."""

    name = "urllib3"

    def _new_engine(self) -> urllib3.PoolManager:
        tls = self.tls
        context = tls.custom_context
        options: dict[str, Any]
        if context is not None:  # it overrides every other TLS option
            options = context_pool_options(context)
        else:
            cert_file, key_file = tls.cert if isinstance(tls.cert, tuple) else (tls.cert, None)
            options = {
                "cert_reqs": "CERT_REQUIRED" if tls.verify else "CERT_NONE",
                "ca_certs": tls.ca_certs,
                "cert_file": cert_file,
                "key_file": key_file,
            }
        manager = urllib3.PoolManager(
            num_pools=self.pool_connections,
            maxsize=self.pool_size,
            block=True,
            retries=False,
            **options,
        )
        manager.pool_classes_by_scheme = self._pools.classes
        return manager

    def _close_engine(self, engine: urllib3.PoolManager) -> None:
        engine.clear()

    def _open(
        self,
        request: Request,
        deadline: Deadline,
        body: bytes | Iterable[bytes] | None,
        chunked: bool,
        headers: dict[str, str],
    ) -> BaseHTTPResponse:
        endpoint = request.endpoint
        pool = self._engine.connection_from_host(endpoint.host, endpoint.port, endpoint.scheme)
        raw: BaseHTTPResponse = pool.urlopen(
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
        return raw


def _factory(**options: Any) -> Transport:
    return Urllib3Transport(**options)


register_transport("urllib3", _factory)
