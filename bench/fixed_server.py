"""A minimal fixed-response HTTP/1.1 server, so that the client is the bottleneck.

Raw gevent ``StreamServer``; per connection: TCP_NODELAY, read each request
by its Content-Length, answer one pre-built msgpack response in ONE
``sendall``. It understands nothing else (no chunked bodies, no pipelining
beyond what the buffer holds), which is all the bench clients send.

``--reply-after request`` (default) answers once the whole request is in,
like every real RPC server; ``--reply-after head`` answers as soon as the
head is in and reads the body afterwards (used by ``bench_split.py`` to show
that the Nagle stall needs a server that waits for the body).

TCP counters: ``GET /.rpcclient-ab/tcp-info`` answers the data segments and
bytes received over every other connection (:mod:`rpcclient._tools.ab` protocol),
read from Linux ``TCP_INFO``.

Run: ``python bench/fixed_server.py [--bind 127.0.0.1:0] [--cpu N]``; the
first stdout line is ``fixed_server: serving on http://HOST:PORT``.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys

import gevent
import msgpack
from gevent.server import StreamServer

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from rpcclient._tools.ab import CONTROL_PATH, ConnectionCounters

#: the result every call gets: a 100-byte bytes value, like the default echo
RESULT = b"x" * 100


def build_response(result: object = RESULT) -> bytes:
    body = msgpack.packb(result)
    return (
        b"HTTP/1.1 200 OK\r\nContent-Type: application/x-msgpack\r\n"
        b"Content-Length: %d\r\n\r\n" % len(body)
    ) + body


def _content_length(head: bytes) -> int:
    lowered = head.lower()
    at = lowered.find(b"\r\ncontent-length:")
    if at < 0:
        return 0
    end = lowered.find(b"\r\n", at + 2)
    return int(head[at + 17 : end if end >= 0 else len(head)])


class FixedServer:
    """Answers ``response`` to every request; counts received segments."""

    def __init__(self, response: bytes, reply_after_head: bool = False) -> None:
        self.response = response
        self.reply_after_head = reply_after_head
        self.counters = ConnectionCounters()

    def handle(self, sock: socket.socket, _address: object) -> None:
        key = id(sock)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.counters.opened(key, sock)
        try:
            self._serve(sock, key)
        except OSError:
            pass  # the client went away: nothing to answer
        finally:
            self.counters.closed(key)  # reads TCP_INFO before the close below
            sock.close()

    def _serve(self, sock: socket.socket, key: int) -> None:
        recv, sendall, response = sock.recv, sock.sendall, self.response
        buf = bytearray()
        while True:
            end = buf.find(b"\r\n\r\n")
            while end < 0:
                data = recv(65536)
                if not data:
                    return
                buf += data
                end = buf.find(b"\r\n\r\n")
            head = bytes(buf[:end])
            if head.startswith(b"GET " + CONTROL_PATH.encode()):
                self.counters.mark_control(key)
                body = json.dumps(self.counters.totals()).encode()
                sendall(
                    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                    b"Connection: close\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
                )
                return
            total = end + 4 + _content_length(head)
            if self.reply_after_head:
                sendall(response)
            while len(buf) < total:
                data = recv(max(65536, total - len(buf)))
                if not data:
                    return
                buf += data
            if not self.reply_after_head:
                sendall(response)
            del buf[:total]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--bind", default="127.0.0.1:0", help="HOST:PORT (port 0: any free)")
    parser.add_argument("--cpu", type=int, help="pin to this core")
    parser.add_argument("--reply-after", choices=("request", "head"), default="request")
    args = parser.parse_args(argv)
    if args.cpu is not None:
        os.sched_setaffinity(0, {args.cpu})
    host, _, port = args.bind.rpartition(":")
    app = FixedServer(build_response(), reply_after_head=args.reply_after == "head")
    server = StreamServer((host, int(port)), app.handle)
    server.start()
    parent = os.getppid()
    print(f"fixed_server: serving on http://{host}:{server.address[1]}", flush=True)
    # never outlive whoever started us
    while os.getppid() == parent:
        gevent.sleep(1.0)
    server.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
