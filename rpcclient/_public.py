"""The public ``Client`` and ``GeventTransport``: ordinary Python classes over compiled cores.

Everything they do is in :class:`rpcclient._core.client.ClientCore` and
:class:`rpcclient._transports.gevent.transport.GeventTransportCore`, which the compiled
build makes native classes: their instances have no ``__dict__`` and their
methods cannot be replaced. These subclasses stay interpreted (the build
leaves this module out), so they behave as Python code expects:
``unittest.mock.patch.object(client, "call")`` or ``(client.transport,
"send")``, patching the class, attributes of one's own, subclasses. The work
itself still runs in the cores.
"""

from __future__ import annotations

from typing import Any

from ._core.client import ClientCore
from ._transports.base import Transport, register_transport
from ._transports.gevent.transport import GeventTransportCore

__all__ = ["Client", "GeventTransport"]


class Client(ClientCore):
    __doc__ = ClientCore.__doc__


class GeventTransport(GeventTransportCore):
    __doc__ = GeventTransportCore.__doc__


def _gevent(**options: Any) -> Transport:
    return GeventTransport(**options)


register_transport("gevent", _gevent)  # the default transport (rpcclient._transports.base)
