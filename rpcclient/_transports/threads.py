"""One transport per OS thread: a Client shared by threads (gthread workers,
a ThreadPoolExecutor, mod_wsgi) gets working connections in each of them.

gevent's hub, its sockets' watchers and the pool's waiters belong to the OS
thread that made them: a greenlet of another thread that waits on one fails
with "Cannot switch to a different thread", after its request was written.
So a gevent transport serves the thread that created it, and a call from any
other thread goes to that thread's own transport, made on its first call
with the same options (its own pools, its own deadline watchdog, on that
thread's hub). When the thread ends, its transport is closed; ``close()`` of
the owner closes them all. After a fork each transport drops its inherited
pools by its own fork hook (:mod:`rpcclient._transports.fork`), so the thread that
forked keeps a working, empty one.

The thread is told by the interpreter's own ``get_ident``, not the one
``gevent.monkey`` installs: in a patched process "threads" are greenlets of
one OS thread, which share the hub and need nothing of this.

This module stays interpreted (the compiled build leaves it out): it needs
weak references and ``__del__``, which compiled classes do not support
reliably; the hot path only compares the thread id (one C call).
"""

from __future__ import annotations

import contextlib
import threading
import weakref
from collections.abc import Callable
from functools import partial
from typing import Any

from gevent._hub_local import get_hub_if_exists
from gevent.hub import get_hub
from gevent.monkey import get_original

from .._fork import on_fork_in_child

__all__ = ["PerThread", "creation_lock", "thread_ident"]

#: the OS thread's id, whatever gevent.monkey patched
thread_ident: Callable[[], int] = get_original("_thread", "get_ident")
_ThreadLocal: Any = get_original("_thread", "_local")
_Lock: Any = get_original("_thread", "allocate_lock")


#: taken by an owner while it makes its PerThread: two threads' first calls at
#: once must not make two (the loser's slot would close the transport it gave
#: out). A list, so that a fork can replace a lock another thread held.
_creating: list[Any] = [_Lock()]


def _renew_creating() -> None:
    _creating[0] = _Lock()


_CREATING_FORK_HOOK = on_fork_in_child(_renew_creating)  # held here: hooks are weak


def creation_lock() -> Any:
    """The lock under which an owner makes its :class:`PerThread`."""
    return _creating[0]


def _new_lock(ref: weakref.ref[PerThread]) -> None:
    owner = ref()
    if owner is not None:
        owner._lock = _Lock()  # its own fork hook


class _Slot:
    """One thread's transport; closes it when the thread's locals go (thread end).

    ``hub``: the thread's gevent hub when its transport made it (the thread
    had none before): destroyed with the thread, whose loop would otherwise
    keep two descriptors (epoll, eventfd) open until the process exits.
    """

    __slots__ = ("__weakref__", "hub", "thread", "transport")

    def __init__(self, transport: Any, hub: Any) -> None:
        self.transport = transport
        self.hub = hub
        self.thread = thread_ident()

    def close(self) -> None:
        transport, self.transport = self.transport, None
        if transport is not None:
            # at thread end the hub may be half gone: closing is best effort
            with contextlib.suppress(Exception):
                transport.close()

    def __del__(self) -> None:
        self.close()
        hub, self.hub = self.hub, None
        # only in its own thread as that thread ends (threading has let it go)
        ending = self.thread == thread_ident() and self.thread not in _running_threads()
        if hub is not None and ending:
            with contextlib.suppress(Exception):
                hub.destroy(destroy_loop=True)


def _running_threads() -> Any:
    # threading's registry of live threads; a thread leaves it before its
    # thread-locals are cleared
    return getattr(threading, "_active", ())


class PerThread:
    """The transports one owner made for threads other than its own."""

    __slots__ = ("__weakref__", "_factory", "_fork_hook", "_local", "_lock", "_slots")

    def __init__(self, factory: Callable[[], Any]) -> None:
        self._factory = factory
        self._local = _ThreadLocal()
        self._slots: weakref.WeakSet[_Slot] = weakref.WeakSet()
        self._lock = _Lock()
        # a lock held by another thread at fork time stays held in the child
        self._fork_hook = on_fork_in_child(partial(_new_lock, weakref.ref(self)))

    def get(self) -> Any:
        """This thread's transport, made on its first call."""
        slot = getattr(self._local, "slot", None)
        if slot is None or slot.transport is None:
            # the thread's hub is made here when it has none, so that it can go with it
            hub = get_hub() if get_hub_if_exists() is None else None
            slot = _Slot(self._factory(), hub)
            self._local.slot = slot
            with self._lock:
                self._slots.add(slot)
        return slot.transport

    def transports(self) -> list[Any]:
        with self._lock:
            slots = list(self._slots)
        return [s.transport for s in slots if s.transport is not None]

    def close(self) -> None:
        """Close every thread's transport (idle connections now, busy ones when done)."""
        with self._lock:
            slots = list(self._slots)
        for slot in slots:
            slot.close()

    def __len__(self) -> int:
        return len(self.transports())
