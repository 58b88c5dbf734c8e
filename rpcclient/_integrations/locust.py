"""Locust load tests that drive rpcclient: :class:`RPCUser` and :class:`LocustReporter`.

Locust (https://locust.io) runs simulated users as greenlets and spreads them
over many machines (``--master`` / ``--worker``); each user here gets its own
:class:`rpcclient.Client` and every call it makes lands in Locust's
statistics, whichever way it was made: ``client.call``, a service proxy,
``call_many``. The reporting is an rpcclient hook (:class:`LocustReporter`),
not a wrapper around ``call``, so nothing about a call changes under load.

What a Locust row says (Locust keys rows by type and name):

- **Type** (``request_type``) is the client's transport name (``gevent``,
  ``requests``, ``urllib3``) unless the user class sets ``request_type``. An
  A/B run therefore reads off one table: two user classes with different
  ``transport`` in one run, or ``RPCCLIENT_TRANSPORT=requests`` on some
  workers and ``gevent`` on others.
- **Name** is ``service.method``.
- **Failures** show the rpcclient error by class and message
  (``RemoteError('remote ValueError (HTTP 500): ...')``, ``ReadTimeout(...)``);
  the request id stays out of the text so equal failures share one row.
- **Size** is the response body's bytes (``CallEvent.received``; 0 when no
  answer came).
- A call cut short by the user being stopped (``GreenletExit``) is not
  reported: it neither succeeded nor failed. Calls refused before anything
  was prepared (``InvalidRequest`` for a bad name or argument,
  ``ClientClosed``) never reach hooks; they surface as exceptions of the task.

Importing this module imports :mod:`locust`, which monkey-patches the whole
process (``gevent.monkey.patch_all``). That is why ``import rpcclient`` never
imports it. The ``locust`` command imports Locust before the locustfile, so
the patching comes first; a script that runs users itself (Locust's
``run_single_user``) must import ``locust`` before ``rpcclient``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any, ClassVar

import locust
from gevent import GreenletExit
from locust.exception import LocustError

from .._core.observe import CallEvent, Hook
from .._core.timeouts import Timeout
from .._public import Client

__all__ = ["LocustReporter", "RPCUser"]

# The process or the user is going away: the call did not finish, and its
# outcome says nothing about the system under test.
_NOT_AN_OUTCOME = (GreenletExit, KeyboardInterrupt, SystemExit)


class LocustReporter(Hook):
    """An rpcclient hook that fires Locust's ``request`` event once per call.

    ``environment`` is the Locust ``Environment`` (``user.environment``).
    Each finished call fires ``request`` with ``request_type`` (the given one,
    else the transport's name), ``name`` (``service.method``),
    ``response_time`` (ms, the whole call with its retries and backoffs),
    ``response_length`` (response body bytes), ``response``
    (the decoded result, None on failure), ``exception`` (the error, None on
    success), ``start_time`` (epoch seconds), ``url`` (the endpoint of the
    last attempt) and ``context``: ``context()``'s dict plus ``transport``,
    ``endpoint``, ``request_id`` and ``attempts``.

    Calls interrupted by ``GreenletExit`` (a stopped user) are not reported.
    It runs in the calling greenlet, as every hook does, and adds no switch
    of its own (Locust's statistics listener does not switch either).
    """

    def __init__(
        self,
        environment: Any,
        *,
        request_type: str | None = None,
        context: Callable[[], Mapping[str, Any]] | None = None,
    ) -> None:
        self._request = environment.events.request
        self._request_type = request_type
        self._context = context

    def after_call(self, event: CallEvent) -> None:
        error = event.error
        if isinstance(error, _NOT_AN_OUTCOME):
            return
        extra = self._context() if self._context is not None else {}
        self._request.fire(
            request_type=self._request_type or event.transport,
            name=event.name,
            response_time=event.elapsed * 1000.0,
            response_length=event.received,
            response=event.result if error is None else None,
            exception=error,
            start_time=time.time() - event.elapsed,
            url=event.endpoint,
            context={
                **extra,
                "transport": event.transport,
                "endpoint": event.endpoint,
                "request_id": event.request_id,
                "attempts": event.attempt,
            },
        )


class RPCUser(locust.User):
    """A Locust user with an rpcclient ``client`` built from the host (``--host``).

    Subclass it, write ``@task`` methods that call ``self.client``, and set
    the client through class attributes:

    ``transport``
        ``"gevent"``, ``"requests"``, ``"urllib3"`` or a registered name;
        None (the default) reads ``RPCCLIENT_TRANSPORT``, else ``"gevent"``.
    ``timeout``, ``pool_size``
        as for :class:`rpcclient.Client` (defaults: its defaults).
    ``client_options``
        any other ``Client`` keyword arguments (``retry``, ``headers``,
        ``hooks``...); a key given here wins over the attributes above. Values
        are shared by every user of the class: a ``Transport`` instance here
        would be closed for all by the first user to stop, so name a
        transport (``register_transport``) instead.
    ``request_type``
        the Type column of Locust's table; None (the default) shows the
        transport's name.

    Each user owns its client (its own connections, as each ``HttpUser`` owns
    a session). The client is closed when the user stops (``on_stop``; a
    subclass that overrides it must call ``super().on_stop()``) and, in any
    case, when the user's greenlet ends, even after ``on_start`` raised.
    Raises ``LocustError`` when no host is set.
    """

    abstract = True

    transport: str | None = None
    timeout: Timeout | float | None = Timeout()
    pool_size: int = 10
    client_options: ClassVar[Mapping[str, Any]] = {}
    request_type: str | None = None

    client: Client
    """The user's :class:`rpcclient.Client`; every call it makes is reported."""

    def __init__(self, environment: Any) -> None:
        super().__init__(environment)
        if not self.host:
            raise LocustError(
                "RPCUser needs the server's base URL: set the host attribute of the "
                "user class or pass --host (e.g. --host http://127.0.0.1:8000)"
            )
        options: dict[str, Any] = {
            "transport": self.transport,
            "timeout": self.timeout,
            "pool_size": self.pool_size,
            **self.client_options,
        }
        self.client = Client(self.host, **options)
        reporter = LocustReporter(environment, request_type=self.request_type, context=self.context)
        self.client.add_hook(reporter)

    def start(self, group: Any) -> Any:
        greenlet = super().start(group)
        # Locust calls on_stop only when the user is stopped; a user whose
        # on_start raised just dies, and its sockets must not outlive it.
        greenlet.link(self._close_client)
        return greenlet

    def _close_client(self, _greenlet: Any) -> None:
        self.client.close()

    def on_stop(self) -> None:
        """Close the client: its pooled connections go now, busy ones when their call ends."""
        self.client.close()
