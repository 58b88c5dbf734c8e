"""The clients of the bench matrix, and the body of one bench arm process.

Every client has ``call() -> result``: one ``echo.echo`` call
(``POST /echo/echo``, msgpack body ``[payload]``) on pooled keep-alive
connections, the result decoded from msgpack. ``pool_size`` bounds the
connections; greenlets beyond it wait for one. The peers encode the
arguments on every call, as the code that uses them does (``requests.post(url,
data=msgpack.packb(args))``); only the floor sends one pre-built request.

Kinds (:data:`KINDS`):

``rpcclient``
    ``rpcclient.Client`` as users get it: gevent transport, default timeouts
    (one ``gevent.Timeout`` per call), stats on.
``requests``
    A ``requests.Session`` with a blocking pool of ``pool_size`` (the process
    is gevent-patched).
``urllib3``
    ``urllib3.PoolManager`` with a blocking pool (gevent-patched process).
``geventhttpclient``
    geventhttpclient's own ``HTTPClient`` (its default timeouts).
``floor``
    The floor: raw gevent sockets, one pre-built request sent with one
    ``sendall``, the answer read until its Content-Length body is complete
    (no header parsing beyond that), LIFO idle list + semaphore, no timeouts.
``floor-nagle``, ``floor-split``, ``floor-split-nagle``
    The floor with Nagle left on, with head and body in two sends, or both
    (``bench_split.py``).
``floor-fifo``
    The floor with first-come-first-served slots (:class:`FifoSlots`) in
    place of gevent's ``Semaphore``, which lets a greenlet that just released
    a slot take it straight back while others wait (``bench_standing.py``:
    how much of the concurrent gap to the floor is fairness, which
    rpcclient's pool keeps on purpose).
``floor-fifo-send``
    First come, first served too, but the releaser sends the next waiter's
    request on the connection and arms its read wait
    (:class:`SendingFifoFloor`): the waiter is woken once, by its answer, not
    first by a hub callback for the slot. A design study for rpcclient's
    pool, not what it does today.

Run as a process by the bench scripts (``ARM_BOOT``): the config is a JSON
argument, the figures of :func:`rpcclient._tools.ab.measure` come back as one JSON
line on stdout. ``requests`` and ``urllib3`` arms are patched first thing.
"""

from __future__ import annotations

import os
import socket
import sys
from typing import Any
from urllib.parse import urlsplit

import msgpack

#: every client kind, in the order tables list them
KINDS = (
    "rpcclient",
    "requests",
    "urllib3",
    "geventhttpclient",
    "floor",
    "floor-nagle",
    "floor-split",
    "floor-split-nagle",
    "floor-fifo",
    "floor-fifo-send",
)
PATCHED_KINDS = frozenset({"requests", "urllib3"})
PATH = "/echo/echo"
CONTENT_TYPE = "application/x-msgpack"

# Patches (when the kind needs it) before anything else imports socket.
ARM_BOOT = """\
import json, sys
config = json.loads(sys.argv[1])
if config["patch"]:
    from gevent import monkey
    monkey.patch_all()
sys.path.insert(0, config["bench_dir"])
import floor_client
sys.exit(floor_client.arm_main(config))
"""


def _host_port(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    assert parts.hostname is not None
    return parts.hostname, parts.port or 80


class RpcclientArm:
    def __init__(self, url: str, pool_size: int, payload: bytes) -> None:
        import rpcclient

        self.client = rpcclient.Client(url, pool_size=pool_size)
        self.args = [payload]

    def call(self) -> Any:
        return self.client.call("echo.echo", self.args)

    def close(self) -> None:
        self.client.close()


class RequestsArm:
    def __init__(self, url: str, pool_size: int, payload: bytes) -> None:
        import requests
        from requests.adapters import HTTPAdapter

        self.session = requests.Session()
        adapter = HTTPAdapter(pool_connections=1, pool_maxsize=pool_size, pool_block=True)
        self.session.mount("http://", adapter)
        self.url = url.rstrip("/") + PATH
        self.args = [payload]
        self.headers = {"Content-Type": CONTENT_TYPE}

    def call(self) -> Any:
        body = msgpack.packb(self.args)
        response = self.session.post(self.url, data=body, headers=self.headers)
        if response.status_code != 200:
            raise RuntimeError(f"HTTP {response.status_code}")
        return msgpack.unpackb(response.content)

    def close(self) -> None:
        self.session.close()


class Urllib3Arm:
    def __init__(self, url: str, pool_size: int, payload: bytes) -> None:
        import urllib3

        self.manager = urllib3.PoolManager(maxsize=pool_size, block=True, retries=False)
        self.url = url.rstrip("/") + PATH
        self.args = [payload]
        self.headers = {"Content-Type": CONTENT_TYPE}

    def call(self) -> Any:
        body = msgpack.packb(self.args)
        response = self.manager.request("POST", self.url, body=body, headers=self.headers)
        if response.status != 200:
            raise RuntimeError(f"HTTP {response.status}")
        return msgpack.unpackb(response.data)

    def close(self) -> None:
        self.manager.clear()


class GeventHTTPClientArm:
    def __init__(self, url: str, pool_size: int, payload: bytes) -> None:
        from geventhttpclient import HTTPClient

        host, port = _host_port(url)
        self.client = HTTPClient(host, port, concurrency=pool_size)
        self.args = [payload]
        self.headers = {"Content-Type": CONTENT_TYPE}

    def call(self) -> Any:
        body = msgpack.packb(self.args)  # bytes: its one-send path
        response = self.client.post(PATH, body=body, headers=self.headers)
        data = response.read()  # releases the connection when the body is complete
        if response.status_code != 200:
            raise RuntimeError(f"HTTP {response.status_code}")
        return msgpack.unpackb(data)

    def close(self) -> None:
        self.client.close()


class FifoSlots:
    """``pool_size`` slots handed out first come, first served (no barging).

    The least a fair slot queue costs: a waiter is resumed by a hub callback
    when a slot is handed to it. Bench-only: no timeout, no kill handling.
    """

    def __init__(self, size: int) -> None:
        from collections import deque

        self.free = size
        self.waiters: Any = deque()

    def acquire(self) -> None:
        if self.free and not self.waiters:
            self.free -= 1
            return
        from gevent.hub import Waiter

        waiter = Waiter()
        self.waiters.append(waiter)
        waiter.get()  # returns holding the slot its releaser handed over

    def release(self) -> None:
        if self.waiters:
            waiter = self.waiters.popleft()
            waiter.hub.loop.run_callback(waiter.switch, None)
        else:
            self.free += 1


class FloorArm:
    """The floor (see the module docstring); ``split``/``nagle``/``fifo`` make the variants."""

    def __init__(
        self,
        url: str,
        pool_size: int,
        payload: bytes,
        *,
        split: bool = False,
        nagle: bool = False,
        fifo: bool = False,
    ) -> None:
        import gevent.lock
        import gevent.socket

        self._socket = gevent.socket.socket
        self.address = _host_port(url)
        body = msgpack.packb([payload])
        self.head = (
            b"POST %s HTTP/1.1\r\nHost: %s:%d\r\nContent-Type: %s\r\nContent-Length: %d\r\n\r\n"
            % (PATH.encode(), self.address[0].encode(), self.address[1], CONTENT_TYPE.encode(),
               len(body))
        )  # fmt: skip
        self.body = body
        self.request = self.head + body
        self.split = split
        self.nagle = nagle
        self.idle: list[Any] = []
        self.slots: Any = FifoSlots(pool_size) if fifo else gevent.lock.Semaphore(pool_size)

    def _connect(self) -> Any:
        sock = self._socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.connect(self.address)
        if not self.nagle:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return sock

    def call(self) -> Any:
        self.slots.acquire()
        try:
            sock = self.idle.pop() if self.idle else self._connect()
            try:
                if self.split:
                    sock.sendall(self.head)
                    sock.sendall(self.body)
                else:
                    sock.sendall(self.request)
                body = _read_answer(sock)
            except BaseException:
                sock.close()  # a half-read answer never goes back
                raise
            self.idle.append(sock)
            return msgpack.unpackb(body)
        finally:
            self.slots.release()

    def close(self) -> None:
        while self.idle:
            self.idle.pop().close()


class SendingFifoFloor(FloorArm):
    """The floor with FIFO slots where a released connection carries the next request.

    A waiter queues its ``Waiter``; the greenlet that finishes with a
    connection sends the oldest waiter's request on it and starts the
    socket's read watcher with that waiter's ``switch``, so the waiter wakes
    once, when its answer is readable. Bench-only: every request here is the
    same pre-built one, and there is no timeout, kill or error handling.
    """

    def __init__(self, url: str, pool_size: int, payload: bytes) -> None:
        from collections import deque

        super().__init__(url, pool_size, payload)
        self.free = pool_size
        self.waiters: Any = deque()

    def call(self) -> Any:
        if self.free and not self.waiters:
            self.free -= 1
            sock = self.idle.pop() if self.idle else self._connect()
            sock.sendall(self.request)
        else:
            from gevent.hub import Waiter

            waiter = Waiter()
            self.waiters.append(waiter)
            sock = waiter.get()  # our request is on it, and its answer is readable
            sock._read_event.stop()
        body = _read_answer(sock)
        if self.waiters:
            waiter = self.waiters.popleft()
            sock.sendall(self.request)  # the next waiter's request
            sock._read_event.start(waiter.switch, sock)
        else:
            self.idle.append(sock)
            self.free += 1
        return msgpack.unpackb(body)


def _read_answer(sock: Any) -> bytes:
    # Minimal: find the end of the head, take Content-Length, read the body.
    buf = sock.recv(65536)
    end = buf.find(b"\r\n\r\n")
    while end < 0:
        more = sock.recv(65536)
        if not more:
            raise EOFError("closed in the head")
        buf += more
        end = buf.find(b"\r\n\r\n")
    at = buf.find(b"Content-Length: ", 0, end)
    if at < 0:
        at = buf.lower().find(b"content-length: ", 0, end)
    length = int(buf[at + 16 : buf.find(b"\r\n", at)])
    total = end + 4 + length
    if len(buf) < total:
        parts = [buf]
        have = len(buf)
        while have < total:
            more = sock.recv(max(65536, total - have))
            if not more:
                raise EOFError("closed in the body")
            parts.append(more)
            have += len(more)
        buf = b"".join(parts)
    return buf[end + 4 : total]  # type: ignore[no-any-return]


def make_client(kind: str, url: str, pool_size: int, payload: bytes) -> Any:
    """A client of ``kind`` (see :data:`KINDS`) for ``url``; ValueError if unknown."""
    if kind == "rpcclient":
        return RpcclientArm(url, pool_size, payload)
    if kind == "requests":
        return RequestsArm(url, pool_size, payload)
    if kind == "urllib3":
        return Urllib3Arm(url, pool_size, payload)
    if kind == "geventhttpclient":
        return GeventHTTPClientArm(url, pool_size, payload)
    if kind == "floor-fifo-send":
        return SendingFifoFloor(url, pool_size, payload)
    if kind.startswith("floor"):
        flags = set(kind.split("-")[1:])
        if not flags <= {"split", "nagle", "fifo"}:
            raise ValueError(f"unknown client kind {kind!r}")
        return FloorArm(
            url,
            pool_size,
            payload,
            split="split" in flags,
            nagle="nagle" in flags,
            fifo="fifo" in flags,
        )
    raise ValueError(f"unknown client kind {kind!r} (known: {', '.join(KINDS)})")


def _mark(what: str) -> None:
    # A syscall strace can see, bracketing the measured calls (ENOENT is expected).
    try:
        os.stat(f"/rpcclient-bench-mark-{what}")
    except OSError:
        pass


def arm_main(config: dict[str, Any]) -> int:
    """One measured run of ``config["kind"]``; prints the figures as one JSON line."""
    import json

    from rpcclient._tools.ab import measure

    if config.get("cpu") is not None:
        os.sched_setaffinity(0, {config["cpu"]})
    payload = b"x" * config["body_size"]
    client = make_client(config["kind"], config["url"], config["pool_size"], payload)
    try:
        first = client.call()
        if config.get("check_echo") and first != payload:
            print(f"{config['kind']}: echo answered something else", file=sys.stderr)
            return 1
        result = measure(
            client.call,
            calls=config.get("calls"),
            duration=config.get("duration"),
            concurrency=config["concurrency"],
            warmup=config.get("warmup", 100),
            counters_url=config["url"] if config.get("counters", True) else None,
            mark=_mark if config.get("mark") else None,
        )
    finally:
        client.close()
    if not config.get("keep_latencies"):
        result.pop("latencies_s")
    sys.stdout.write(json.dumps(result) + "\n")
    return 0
