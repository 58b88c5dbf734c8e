"""The public ``Client`` and ``GeventTransport``: ordinary Python classes over compiled cores.

Everything they do is in :class:`rpcclient._client.ClientCore` and
:class:`rpcclient._gevent_transport.GeventTransportCore`, which the compiled
build makes native classes: their instances have no ``__dict__`` and their
methods cannot be replaced. These subclasses stay interpreted (the build
leaves this module out), so they behave as Python code expects:
``unittest.mock.patch.object(client, "call")`` or ``(client.transport,
"send")``, patching the class, attributes of one's own, subclasses. The work
itself still runs in the cores.
"""

from __future__ import annotations

from ._client import ClientCore
from ._gevent_transport import GeventTransportCore

__all__ = ["Client", "GeventTransport"]


class Client(ClientCore):
    __doc__ = ClientCore.__doc__


class GeventTransport(GeventTransportCore):
    __doc__ = GeventTransportCore.__doc__
