"""How many calls a dead host costs: 20 greenlets against a live and a SYN-dropping host.

    python bench/eject_probe.py                  # this tree, 5 s
    python bench/eject_probe.py /tmp/other_tree  # rpcclient imported from another tree

The dead host is a loopback listener whose accept queue is full, so the
kernel drops every SYN and each connect waits its whole bound (0.2 s here);
``cooldown=0.5``. Prints how many attempts went to it, how many waited the
connect bound, the most in flight at once, and how often it was ejected.
"""

from __future__ import annotations

import socket
import sys
import time
from typing import Any

if len(sys.argv) > 1:
    sys.path.insert(0, sys.argv[1])

import gevent

import rpcclient
from rpcclient import Client, Hook, Timeout
from rpcclient.example import app
from rpcclient.server import serve


class Watch(Hook):
    def __init__(self, url: str) -> None:
        self.url = url
        self.attempts = self.waited = self.now = self.peak = 0

    def before_attempt(self, event: Any) -> None:
        if event.endpoint == self.url:
            self.attempts += 1
            self.now += 1
            self.peak = max(self.peak, self.now)

    def after_attempt(self, event: Any) -> None:
        if event.endpoint == self.url:
            self.now -= 1
            self.waited += isinstance(event.error, rpcclient.ConnectTimeout)


def main() -> None:
    server = serve(app, "127.0.0.1", 0)
    good = "http://{}:{}".format(*server.address[:2])
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    filler = socket.socket()
    filler.connect(listener.getsockname())  # the queue's one place, never accepted
    dead = f"http://127.0.0.1:{listener.getsockname()[1]}"
    watch = Watch(dead)
    client = Client(
        {"math": [dead, good]}, timeout=Timeout(connect=0.2, total=3), cooldown=0.5, hooks=[watch]
    )
    stop = time.monotonic() + 5

    def worker() -> None:
        while time.monotonic() < stop:
            try:
                client.call("math.add", [1, 2])
            except rpcclient.RPCError:
                pass
            gevent.sleep(0.001)

    gevent.joinall([gevent.spawn(worker) for _ in range(20)])
    (host,) = [h for h in client.stats()["groups"]["math"]["hosts"] if h["url"] == dead]
    print(
        f"{rpcclient.__file__}: attempts at the dead host {watch.attempts}, waited the "
        f"connect bound {watch.waited}, most at once {watch.peak}, ejections {host['ejections']}"
    )
    client.close()
    server.stop()
    filler.close()
    listener.close()


if __name__ == "__main__":
    main()
