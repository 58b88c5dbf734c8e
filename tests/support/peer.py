"""A scripted hostile HTTP/1.1 peer in its own process, and a starvation ticker.

The peer runs apart from the client (``python -m tests.support.peer``, one
thread per connection), so a flood keeps coming while the client parses:
in the client's own process a server greenlet would only run when the
client yields, which is what these tests check it does.

Each request chooses its answer by headers (hex-encoded bytes):

- no ``X-Case`` (or ``probe``): ``200`` whose msgpack body is
  ``[connection number, request number on it]``, the ``X-Request-Id``
  echoed, keep-alive;
- ``echo``: the request body back, the id echoed;
- ``late-duplicate``: as ``echo``, then the same answer again 0.5-3 ms later;
- ``flood``: ``X-Prefix`` once, then ``X-Unit`` again and again until the
  client goes;
- ``script``: the request's body is a msgpack map (:meth:`Peer.script`):
  ``answer`` bytes, then ``late`` bytes after ``late_ms`` ms, then ``then``:
  ``keep`` (read the next request), ``close``, or ``hang`` (wait for the
  client to close).

``GET /stats`` answers ``{"connections": n}`` (that connection not counted).
"""

from __future__ import annotations

import contextlib
import os
import random
import socket
import subprocess
import sys
import threading
import time
from typing import Any, Final

import msgpack

from .offcpu import paused


def _read_request(
    sock: socket.socket, buf: bytearray
) -> tuple[bytes, dict[bytes, bytes], bytes] | None:
    while b"\r\n\r\n" not in buf:
        data = sock.recv(65536)
        if not data:
            return None
        buf += data
    end = buf.index(b"\r\n\r\n")
    head = bytes(buf[:end])
    del buf[: end + 4]
    lines = head.split(b"\r\n")
    fields: dict[bytes, bytes] = {}
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        fields[name.strip().lower()] = value.strip()
    length = int(fields.get(b"content-length", b"0"))
    while len(buf) < length:
        data = sock.recv(65536)
        if not data:
            return None
        buf += data
    body = bytes(buf[:length])
    del buf[:length]
    return lines[0], fields, body


def _answer(body: bytes, request_id: bytes, extra: bytes = b"") -> bytes:
    head = (
        b"HTTP/1.1 200 OK\r\nContent-Type: application/x-msgpack\r\n"
        b"Content-Length: %d\r\nX-Request-Id: %s\r\n%s\r\n" % (len(body), request_id, extra)
    )
    return head + body


class _Server:
    def __init__(self) -> None:
        self.connections = 0
        self.lock = threading.Lock()
        self.listener = socket.socket()
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(512)

    def serve(self) -> None:
        while True:
            sock, _ = self.listener.accept()
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            threading.Thread(target=self._connection, args=(sock,), daemon=True).start()

    def _connection(self, sock: socket.socket) -> None:
        number = 0
        counted = False
        buf = bytearray()
        try:
            nth = 0
            while True:
                req = _read_request(sock, buf)
                if req is None:
                    return
                line, fields, body = req
                if line.startswith(b"GET /stats"):
                    stats = msgpack.packb({"connections": self.connections})
                    sock.sendall(_answer(stats, b"stats", b"Connection: close\r\n"))
                    return
                if not counted:
                    counted = True
                    with self.lock:
                        self.connections += 1
                        number = self.connections
                nth += 1
                rid = fields.get(b"x-request-id", b"-")
                case = fields.get(b"x-case", b"probe")
                if case == b"probe":
                    sock.sendall(_answer(msgpack.packb([number, nth]), rid))
                elif case == b"echo":
                    sock.sendall(_answer(body, rid))
                elif case == b"late-duplicate":
                    answer = _answer(body, rid)
                    sock.sendall(answer)
                    time.sleep(random.uniform(0.0005, 0.003))
                    sock.sendall(answer)
                elif case == b"flood":
                    sock.sendall(bytes.fromhex(fields.get(b"x-prefix", b"").decode()))
                    unit = bytes.fromhex(fields[b"x-unit"].decode())
                    block = unit * max(1, 65536 // len(unit))
                    while True:
                        sock.sendall(block)
                elif case == b"script":
                    script = msgpack.unpackb(body)  # see Peer.script
                    sock.sendall(script["answer"])
                    if script["late"]:
                        time.sleep(script["late_ms"] / 1000)
                        sock.sendall(script["late"])
                    then = script["then"].encode()
                    if then == b"close":
                        # a lingering close, as servers do: no reset for bytes
                        # the client may still send, so the client sees the FIN
                        sock.shutdown(socket.SHUT_WR)
                        sock.settimeout(1.0)
                        while sock.recv(65536):
                            pass
                        return
                    if then == b"hang":
                        while sock.recv(65536):
                            pass
                        return
        except OSError:
            pass
        finally:
            with contextlib.suppress(OSError):
                sock.close()


def main() -> None:
    server = _Server()
    print(server.listener.getsockname()[1], flush=True)
    # the peer ends with its parent: stdin closes when the test process goes
    threading.Thread(target=server.serve, daemon=True).start()
    sys.stdin.read()


class Peer:
    """The peer process, started and stopped by ``with Peer() as peer``."""

    def __init__(self) -> None:
        root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.support.peer"],
            cwd=root,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env={**os.environ, "PYTHONPATH": root},
        )
        assert self.proc.stdout is not None
        port = int(self.proc.stdout.readline())
        self.port = port
        self.url = f"http://127.0.0.1:{port}"

    def __enter__(self) -> Peer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self.proc.poll() is None:
            assert self.proc.stdin is not None
            self.proc.stdin.close()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()

    def connections(self) -> int:
        """Connections that carried a request so far (a stats call is not one)."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=5) as sock:
            sock.sendall(b"GET /stats HTTP/1.1\r\nHost: x\r\n\r\n")
            data = b""
            while chunk := sock.recv(65536):
                data += chunk
        return int(msgpack.unpackb(data.partition(b"\r\n\r\n")[2])["connections"])

    @staticmethod
    def flood(prefix: bytes, unit: bytes) -> dict[str, str]:
        """Headers that make the peer send ``prefix`` then ``unit`` until the client goes."""
        return {"X-Case": "flood", "X-Prefix": prefix.hex(), "X-Unit": unit.hex()}

    #: the headers of a scripted call: its script travels as the call's argument
    SCRIPT: Final = {"X-Case": "script"}

    @staticmethod
    def script(
        answer: bytes, *, then: str = "keep", late: bytes = b"", late_ms: int = 0
    ) -> dict[str, Any]:
        """The argument of a call with :attr:`SCRIPT` headers: the peer sends
        ``answer`` (and ``late`` after ``late_ms``), then does ``then``."""
        return {"answer": answer, "then": then, "late": late, "late_ms": late_ms}


class Ticker:
    """A greenlet that wakes every ``period`` s and records the longest wait past it.

    The wait counted is the greenlet's own: each gap between wakes less the
    time the process sat in the kernel's run queue or collected garbage
    meanwhile (:func:`tests.support.offcpu.paused`). A greenlet that keeps the CPU
    without yielding is running, not queued, so starvation still counts in
    full; a loaded machine that keeps the whole process off a CPU does not.
    """

    def __init__(self, period: float = 0.005) -> None:
        import gevent

        self.period = period
        self.worst = 0.0
        self._since = time.monotonic()
        self._since_delay = paused()
        self._last, self._last_delay = self._since, self._since_delay
        self._stop = False
        self._greenlet = gevent.spawn(self._run)
        gevent.sleep(0)

    def _run(self) -> None:
        import gevent

        self._last, self._last_delay = time.monotonic(), paused()
        while not self._stop:
            gevent.sleep(self.period)
            self.worst = max(self.worst, self._waiting())
            self._last, self._last_delay = time.monotonic(), paused()

    def _waiting(self) -> float:
        """How long past its period the greenlet has been kept from running, as of now."""
        now, delay = time.monotonic(), paused()
        last, last_delay = self._last, self._last_delay
        # a wait that began before reset() counts from it
        if self._since > last:
            last, last_delay = self._since, self._since_delay
        return (now - last) - (delay - last_delay) - self.period

    def current(self) -> float:
        """The longest wait so far, the one still going on included.

        Read right after a call, ``worst`` misses a hold-up at the call's end
        (the greenlet has not run since to see it); this does not.
        """
        return max(self.worst, self._waiting())

    def reset(self) -> None:
        """Measure from now on (what ran before, a test's own setup, does not count)."""
        self.worst = 0.0
        self._since_delay = paused()
        self._since = time.monotonic()

    def stop(self) -> float:
        """Stop; the longest time another greenlet kept this one waiting (s)."""
        self._stop = True
        self._greenlet.join(1)
        self._greenlet.kill()
        return self.worst


def ticker_gap(_: Any = None) -> float:  # pragma: no cover - a helper for ad-hoc runs
    ticker = Ticker()
    return ticker.stop()


if __name__ == "__main__":
    main()
