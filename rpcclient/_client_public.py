"""The public ``Client``: an ordinary Python class over the compiled core.

Everything a Client does is in :class:`rpcclient._client.ClientCore`, which
the compiled build makes a native class: its instances have no ``__dict__``
and its methods cannot be replaced. This subclass stays interpreted (the
build leaves this module out), so a Client behaves as Python code expects:
``unittest.mock.patch.object(client, "call")`` and on the class, attributes
of one's own, subclasses. The calls themselves still run in the core.
"""

from __future__ import annotations

from ._client import ClientCore

__all__ = ["Client"]


class Client(ClientCore):
    __doc__ = ClientCore.__doc__
