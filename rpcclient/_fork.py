"""What a forked child resets: the one registry of the package's fork hooks.

Every owner of per-process state registers here (pools and their sockets,
the per-thread transports, the request-id prefix, the statsd flushers), so
``os.register_at_fork`` is called once, by this module.

For pools: a child must never use the parent's pooled sockets (both processes would
read the same answers), nor close them politely (a FIN or ``shutdown`` would
end the parent's exchanges too): it drops its copies of the descriptors and
starts anew. Each owner of pools registers a :class:`ForkHook` and keeps it
alive; the hook is tracked weakly, so an owner that is gone is forgotten.

This module stays interpreted on purpose (the compiled build leaves it out):
weak references to mypyc-compiled instances are not reliable, so the hook,
not its compiled owner, is what the weak set holds.
"""

from __future__ import annotations

import os
import weakref
from collections.abc import Callable

__all__ = ["ForkHook", "on_fork_in_child"]


class ForkHook:
    """Calls ``reset`` in a forked child, for as long as it is referenced."""

    __slots__ = ("__weakref__", "reset")

    def __init__(self, reset: Callable[[], None]) -> None:
        self.reset = reset


_hooks: weakref.WeakSet[ForkHook] = weakref.WeakSet()


def on_fork_in_child(reset: Callable[[], None]) -> ForkHook:
    """Register ``reset``; the caller keeps the returned hook as long as it applies.

    ``reset`` should hold what it resets, not its owner: a hook that
    references its owner keeps both alive until the cycle collector runs.
    """
    hook = ForkHook(reset)
    _hooks.add(hook)
    return hook


def _after_fork_in_child() -> None:
    for hook in list(_hooks):
        hook.reset()


if hasattr(os, "register_at_fork"):
    # no per-call getpid(): the child drops every pool it inherited, once
    os.register_at_fork(after_in_child=_after_fork_in_child)
