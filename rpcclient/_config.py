"""What a transport is built with: TLS, pool and size limits, and their defaults.

This module is the one home of the defaults (``Client``, both transport
families and the requests shim take them from here) and of the checks they
share, so a value is refused the same way whichever transport gets it.
Everything here is read at construction; nothing on a call's path.
"""

from __future__ import annotations

import ssl

import gevent.ssl

__all__ = [
    "DEFAULT_IDLE_TIMEOUT",
    "DEFAULT_MAX_CONNECTION_AGE",
    "DEFAULT_MAX_HEAD_SIZE",
    "DEFAULT_MAX_RESPONSE_SIZE",
    "DEFAULT_POOL_SIZE",
    "MIB",
    "TLSConfig",
    "check_pool_size",
]

MIB = 1024 * 1024
#: connections per endpoint (per OS thread for the gevent transport)
DEFAULT_POOL_SIZE = 10
#: seconds a pooled connection may sit idle and still be reused (below common
#: servers' keep-alive timeouts: gunicorn 2 s, nginx 75 s)
DEFAULT_IDLE_TIMEOUT: float | None = 1.5
#: seconds after which a connection is not reused (DNS changes reach us)
DEFAULT_MAX_CONNECTION_AGE: float | None = 300.0
DEFAULT_MAX_RESPONSE_SIZE = 64 * MIB
DEFAULT_MAX_HEAD_SIZE = 64 * 1024


def check_pool_size(size: object) -> int:
    """``size`` if it is an int >= 1 (not a bool), else ValueError naming it."""
    if not isinstance(size, int) or isinstance(size, bool) or size < 1:
        raise ValueError(f"pool size must be an int >= 1, not {size!r}")
    return size


class TLSConfig:
    """How ``https://`` endpoints are verified (immutable after creation).

    ``verify=True`` checks the certificate chain and host name against the
    system store or ``ca_certs``; ``cert`` is a client certificate
    (``"cert.pem"`` or ``("cert.pem", "key.pem")``); ``context`` overrides all,
    on every transport (kept as :attr:`custom_context`). A plain
    ``ssl.SSLContext`` is fine in a process that is not monkey-patched: the
    gevent transport still wraps its sockets in gevent's cooperative
    ``SSLSocket`` (a subclass's own ``wrap_socket`` is used as it is).
    """

    def __init__(
        self,
        *,
        verify: bool = True,
        ca_certs: str | None = None,
        cert: str | tuple[str, str] | None = None,
        context: ssl.SSLContext | None = None,
    ) -> None:
        self.verify = verify
        self.ca_certs = ca_certs
        self.cert = cert
        self.custom_context = context
        self._context = context

    def context(self) -> ssl.SSLContext:
        if self._context is None:
            ctx = gevent.ssl.create_default_context(cafile=self.ca_certs)
            if not self.verify:
                ctx.check_hostname = False
                ctx.verify_mode = ssl.CERT_NONE
            if self.cert is not None:
                if isinstance(self.cert, tuple):
                    ctx.load_cert_chain(self.cert[0], self.cert[1])
                else:
                    ctx.load_cert_chain(self.cert)
            self._context = ctx
        return self._context
