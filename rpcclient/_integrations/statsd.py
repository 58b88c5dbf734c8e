"""StatsD / DogStatsD metrics for every call, shipped by a background greenlet.

:class:`StatsdReporter` is a :class:`~rpcclient._core.observe.Hook`. Its rules:

- The calling greenlet pays for one tuple and one deque append per call
  (``after_call``) and never blocks. Formatting, batching and the UDP send
  happen in one flusher greenlet, every ``flush_interval`` seconds, or sooner
  once the buffer is half full.
- The buffer is bounded (``max_buffer`` calls). A call that finds it full is
  not reported and counts in :attr:`~StatsdReporter.dropped`: an agent that is
  gone or slow never makes memory grow.
- Nothing raises into a call. A failed send (the ICMP "port unreachable" a
  connected UDP socket reports, an unresolvable agent host) counts in
  :attr:`~StatsdReporter.send_errors` and its metrics are lost.
- Per call: a timer ``{prefix}.call.latency`` in milliseconds and a counter
  ``{prefix}.call.count``. Counters are summed per tag set in each flush: the
  same totals in fewer bytes.
- DogStatsD tags (``dogstatsd=True``): ``service``, ``method``, ``server``
  (``host:port`` of the endpoint the last attempt went to), ``status`` (``ok``
  or the error's class name), ``transport``, ``variant`` (when set), then the
  static ``tags``. The endpoint's tag is ``server``, not ``host``: the Datadog
  agent reads a ``host:`` tag as the name of the reporting machine and would
  file the metric under the RPC server instead.
- Plain StatsD (``dogstatsd=False``) has no tags, so ``variant``, ``service``,
  ``method`` and ``status`` are folded into the name:
  ``{prefix}[.{variant}].{service}.{method}.{status}.latency`` (and
  ``.count``), each part reduced to ``[A-Za-z0-9_-]``. ``server``,
  ``transport`` and the static ``tags`` are dropped: per-host paths multiply
  the number of series; put fixed dimensions into ``prefix``.
- A datagram is newline-joined lines of at most ``max_datagram`` bytes (1432
  by default: the DogStatsD client default, safe below a 1500-byte MTU). A
  single line longer than that goes alone.
- Fork-safe: a child starts with an empty buffer, its own socket and its own
  flusher (:mod:`rpcclient._fork`); what the parent had not sent yet is the
  parent's to send, so nothing is reported twice.
- :meth:`~StatsdReporter.close` sends what is buffered and stops the flusher.
  Without it, metrics of the last ``flush_interval`` are lost at exit.

The socket is gevent's, so the reporter works with or without monkey-patching.
Use one reporter per OS thread that runs a gevent hub: the flusher runs in the
hub of the thread that made the first call.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import re
import socket
import weakref
from collections import deque
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

import gevent
import gevent.event
import gevent.socket

from .._core.observe import CallEvent, Hook
from .._fork import on_fork_in_child

__all__ = ["StatsdReporter"]

log = logging.getLogger("rpcclient.statsd")

#: seconds close() waits for the flusher to finish its last send
_CLOSE_WAIT = 2.0
#: seconds one UDP send may wait for buffer space before it counts as failed
_SEND_TIMEOUT = 1.0
#: datagrams sent before the flusher lets other greenlets run
_DATAGRAMS_PER_YIELD = 32
#: formatted tag sets kept; past this the cache starts over (bounds memory
#: when method names or error classes are unbounded)
_CACHE_MAX = 4096

# The DogStatsD line grammar: name:value|type|#tag:value,tag:value
_BAD_NAME = re.compile(r"[:|@#,\s]")
_BAD_TAG = re.compile(r"[|#,\s]")
_PATH_PART = re.compile(r"[^A-Za-z0-9_\-]")

# (name, endpoint URL, status, transport) -> (latency head, count head, tail)
_Key = tuple[str, str, str, str]
_Format = tuple[str, str, str]


class StatsdReporter(Hook):
    """Send a timer and a counter per call to a StatsD or DogStatsD agent over UDP.

    ``host``/``port``: the agent. ``prefix``: the start of every metric name.
    ``tags``: static DogStatsD tags added to every metric (dropped with plain
    StatsD). ``variant``: a label for A/B comparisons (``variant:b``). Raises
    ValueError at construction for a prefix, tag or variant the line format
    cannot carry, and never afterwards: see the module docstring for what is
    sent, batched, dropped and counted.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 8125,
        *,
        prefix: str = "rpcclient",
        tags: Mapping[str, str] | None = None,
        variant: str | None = None,
        flush_interval: float = 0.5,
        max_buffer: int = 10_000,
        dogstatsd: bool = True,
        max_datagram: int = 1432,
    ) -> None:
        if not prefix or _BAD_NAME.search(prefix):
            raise ValueError(f"prefix must be non-empty, without ':|@#,' or spaces: {prefix!r}")
        static = dict(tags or {})
        for key, value in [*static.items(), ("variant", variant or "")]:
            if not key or ":" in key or _BAD_TAG.search(f"{key}{value}"):
                raise ValueError(
                    f"tag {key!r}={value!r}: a non-empty key without ':', and no '|#,' "
                    "or spaces in either"
                )
        if flush_interval <= 0 or max_buffer < 1 or max_datagram < 64:
            raise ValueError("flush_interval must be > 0, max_buffer >= 1, max_datagram >= 64")
        self.host = host
        self.port = port
        self.prefix = prefix
        self.tags = static
        self.variant = variant
        self.flush_interval = flush_interval
        self.max_buffer = max_buffer
        self.dogstatsd = dogstatsd
        self.max_datagram = max_datagram
        #: calls not reported: the buffer was full, or the reporter closed
        self.dropped = 0
        #: datagrams (or socket set-ups) that failed; their metrics are lost
        self.send_errors = 0
        #: datagrams sent
        self.datagrams = 0
        self._static_tail = "".join(f",{k}:{v}" for k, v in static.items())
        if variant:
            self._static_tail = f",variant:{variant}{self._static_tail}"
        self._formats: dict[_Key, _Format] = {}
        self._pending: deque[tuple[str, str, str, str, float]] = deque()
        self._wake_at = max(1, max_buffer // 2)
        self._wake = gevent.event.Event()
        self._greenlet: gevent.Greenlet[Any, Any] | None = None
        self._generation = 0  # bumped in a forked child: the old flusher stops
        self._sock: Any = None
        self._closed = False
        _LIVE.add(self)

    # -- the calling greenlet: O(1), never blocks, never raises -------------------
    def after_call(self, event: CallEvent) -> None:
        """Queue the call's metrics; counts a drop when the buffer is full."""
        pending = self._pending
        if len(pending) >= self.max_buffer or self._closed:
            self.dropped += 1
            return
        error = event.error
        status = "ok" if error is None else type(error).__name__
        pending.append((event.name, event.endpoint, status, event.transport, event.elapsed))
        if self._greenlet is None:
            # started on first use, not in __init__: a reporter made at import
            # time in a process that then forks never runs a flusher it will lose
            self._greenlet = gevent.spawn(self._run, self._generation)
        elif len(pending) == self._wake_at:
            self._wake.set()

    # -- the flusher greenlet ---------------------------------------------------
    def _run(self, generation: int) -> None:
        wake = self._wake
        while True:
            wake.wait(self.flush_interval)
            wake.clear()
            if generation != self._generation:
                return  # we are a parent's flusher that survived a fork
            try:
                self.flush()
            except Exception:
                # a dead flusher would turn every later call into a drop
                log.exception("statsd flush failed; buffered metrics lost")
            if self._closed:
                return

    def flush(self) -> None:
        """Format and send everything buffered now, in the calling greenlet.

        The flusher calls this on its own; call it yourself only to send
        before something that would lose the buffer. Never raises for
        network errors (they count in ``send_errors``).
        """
        pending = self._pending
        if not pending:
            return
        generation = self._generation
        lines: list[str] = []
        counts: dict[_Key, int] = {}
        popleft = pending.popleft
        # No switch happens in this loop, so calls cannot interleave with it.
        for _ in range(len(pending)):
            name, endpoint, status, transport, elapsed = popleft()
            key = (name, endpoint, status, transport)
            latency_head, _, tail = self._format(key)
            lines.append(f"{latency_head}:{elapsed * 1000.0:.3f}|ms{tail}")
            counts[key] = counts.get(key, 0) + 1
        for key, n in counts.items():
            _, count_head, tail = self._format(key)
            lines.append(f"{count_head}:{n}|c{tail}")
        self._send_lines(lines, generation)

    def _format(self, key: _Key) -> _Format:
        cached = self._formats.get(key)
        if cached is not None:
            return cached
        name, endpoint, status, transport = key
        service, _, method = name.partition(".")
        if self.dogstatsd:
            server = urlsplit(endpoint).netloc or "unknown"
            tail = (
                f"|#service:{_tag(service)},method:{_tag(method)},server:{_tag(server)},"
                f"status:{_tag(status)},transport:{_tag(transport)}{self._static_tail}"
            )
            head = f"{self.prefix}.call"
            fmt = (f"{head}.latency", f"{head}.count", tail)
        else:
            parts = [self.variant] if self.variant else []
            parts += [service, method, status]
            head = ".".join([self.prefix, *(_PATH_PART.sub("_", p) or "_" for p in parts)])
            fmt = (f"{head}.latency", f"{head}.count", "")
        if len(self._formats) >= _CACHE_MAX:
            self._formats.clear()
        self._formats[key] = fmt
        return fmt

    def _send_lines(self, lines: list[str], generation: int) -> None:
        batch: list[bytes] = []
        size = 0
        sent = 0
        for line in lines:
            data = line.encode("utf-8", "replace")
            if batch and size + 1 + len(data) > self.max_datagram:
                self._send(b"\n".join(batch))
                sent += 1
                batch, size = [], 0
                if sent % _DATAGRAMS_PER_YIELD == 0:
                    gevent.sleep(0)  # a large backlog must not starve the calls
                    if generation != self._generation:
                        return
            size += len(data) + (1 if batch else 0)
            batch.append(data)
        if batch:
            self._send(b"\n".join(batch))

    def _send(self, datagram: bytes) -> None:
        sock = self._socket()
        if sock is None:
            return
        try:
            sock.send(datagram)
        except OSError as exc:  # ECONNREFUSED after an ICMP unreachable, timeouts
            self._failed("send", exc)
        else:
            self.datagrams += 1

    def _socket(self) -> Any:
        if self._sock is not None:
            return self._sock
        try:
            family, address = _resolve(self.host, self.port)
            sock = gevent.socket.socket(family, socket.SOCK_DGRAM)
            try:
                sock.settimeout(_SEND_TIMEOUT)
                # connected: one resolution per socket, and refusals get reported
                sock.connect(address)
            except OSError:
                sock.close()
                raise
        except OSError as exc:  # gaierror included; retried at the next flush
            self._failed("set up", exc)
            return None
        self._sock = sock
        return sock

    def _failed(self, what: str, exc: OSError) -> None:
        self.send_errors += 1
        # the first failure is worth a line; a dead agent must not flood the log
        level = logging.WARNING if self.send_errors == 1 else logging.DEBUG
        log.log(level, "statsd %s to %s:%s failed: %s", what, self.host, self.port, exc)

    # -- life cycle -------------------------------------------------------------
    def close(self) -> None:
        """Send what is buffered, stop the flusher, close the socket.

        Later calls count as dropped. Safe to call twice.
        """
        if self._closed:
            return
        self._closed = True
        flusher = self._greenlet
        if flusher is not None and not flusher.dead:
            self._wake.set()
            flusher.join(timeout=_CLOSE_WAIT)
            if not flusher.dead:
                flusher.kill(block=False)
        self.flush()  # what the flusher did not take, or all when it never ran
        self._close_socket()

    def _close_socket(self) -> None:
        sock, self._sock = self._sock, None
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.close()

    def _after_fork_in_child(self) -> None:
        self._generation += 1
        self._greenlet = None
        self._pending = deque()
        self._wake = gevent.event.Event()
        self._close_socket()
        self.dropped = self.send_errors = self.datagrams = 0

    def __enter__(self) -> StatsdReporter:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        kind = "dogstatsd" if self.dogstatsd else "statsd"
        state = " closed" if self._closed else ""
        return (
            f"<StatsdReporter {kind} {self.host}:{self.port} pending={len(self._pending)} "
            f"dropped={self.dropped} send_errors={self.send_errors} "
            f"datagrams={self.datagrams}{state}>"
        )


def _resolve(host: str, port: int) -> tuple[int, Any]:
    """(family, address) for a UDP socket; a numeric address needs no resolver.

    The common case, an agent on an IP address, thereby never waits on the
    resolver's thread pool (which an unpatched ``os.fork`` leaves unusable in
    the child).
    """
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        family, _, _, _, address = gevent.socket.getaddrinfo(host, port, 0, socket.SOCK_DGRAM)[0]
        return family, address
    if ip.version == 6:
        return socket.AF_INET6, (host, port, 0, 0)
    return socket.AF_INET, (host, port)


def _tag(value: str) -> str:
    return _BAD_TAG.sub("_", value) or "_"


_LIVE: weakref.WeakSet[StatsdReporter] = weakref.WeakSet()


def _reset_all_after_fork() -> None:
    for reporter in list(_LIVE):
        reporter._after_fork_in_child()


_FORK_HOOK = on_fork_in_child(_reset_all_after_fork)  # kept: the registry holds hooks weakly
