"""A DNS name that resolves to several addresses is spread over all of them.

The resolver is injected (a name only this test knows), the servers are
real: one on 127.0.0.1 and one on 127.0.0.2, same port (both loopback).
"""

from __future__ import annotations

import socket
from typing import Any

import gevent
import gevent.server
import msgpack
import pytest

import rpcclient
from rpcclient import Client, Retry
from tests.support.raw import http_response, read_request


class Listener:
    def __init__(self, host: str, port: int) -> None:
        self.heads: list[bytes] = []
        self.socks: set[Any] = set()
        sock = gevent.socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(64)
        self.port = sock.getsockname()[1]
        self.server = gevent.server.StreamServer(sock, self._handle)
        self.server.start()

    def _handle(self, sock: Any, address: Any) -> None:
        self.socks.add(sock)
        buf = bytearray()
        try:
            while (req := read_request(sock, buf)) is not None:
                self.heads.append(req[0])
                sock.sendall(http_response(msgpack.packb(msgpack.unpackb(req[1]))))
        except OSError:
            pass
        finally:
            self.socks.discard(sock)
            sock.close()

    def stop(self) -> None:
        """Stop listening and drop every open connection, like a host going away."""
        self.server.close()
        for sock in list(self.socks):
            sock.close()
        gevent.sleep(0.01)


@pytest.fixture
def two_addresses() -> Any:
    first = Listener("127.0.0.1", 0)
    try:
        second = Listener("127.0.0.2", first.port)
    except OSError as exc:  # 127.0.0.2 is loopback on Linux; say so if not here
        first.stop()
        pytest.skip(f"cannot bind 127.0.0.2: {exc}")
    yield first, second
    first.stop()
    second.stop()


def test_a_name_is_spread_over_its_addresses(two_addresses: Any) -> None:
    first, second = two_addresses
    answers = {"svc.test": ["127.0.0.1", "127.0.0.2"]}
    url = f"http://svc.test:{first.port}"
    client = Client(url, spread_dns=30.0, resolver=lambda host, port: answers[host])
    jobs = [gevent.spawn(client.call, "echo.echo", i) for i in range(40)]
    gevent.joinall(jobs, raise_error=True)
    assert sorted(j.value for j in jobs) == list(range(40))
    assert first.heads and second.heads  # both addresses took calls
    assert all(b"Host: svc.test:%d" % first.port in h for h in first.heads + second.heads)
    hosts = client.stats()["groups"]["*"]["hosts"]
    assert sorted(h["url"] for h in hosts) == [
        f"http://127.0.0.1:{first.port}",
        f"http://127.0.0.2:{first.port}",
    ]
    # one address goes away: calls still succeed (refused = never sent, retried elsewhere)
    second.stop()
    before = len(first.heads)
    for i in range(10):
        assert client.call("echo.echo", i, retry=Retry(attempts=2, backoff=0)) == i
    assert len(first.heads) == before + 10
    client.close()


def test_refresh_follows_the_resolver_and_keeps_host_state(two_addresses: Any) -> None:
    first, _ = two_addresses
    answers = ["127.0.0.1", "127.0.0.2"]
    client = Client(
        f"http://svc.test:{first.port}", spread_dns=0.05, resolver=lambda host, port: answers
    )
    client.call("echo.echo", 1)
    group = client._groups["*"]  # type: ignore[attr-defined]
    kept = next(h for h in group.hosts if h.endpoint.address == "127.0.0.1")
    answers[:] = ["127.0.0.1"]
    gevent.sleep(0.06)
    client.call("echo.echo", 2)
    assert [h.endpoint.address for h in group.hosts] == ["127.0.0.1"]
    assert group.hosts[0] is kept  # same Host object: its counters survive a refresh
    answers[:] = []  # a failed resolution keeps what was known
    gevent.sleep(0.06)
    assert client.call("echo.echo", 3) == 3
    assert [h.endpoint.address for h in group.hosts] == ["127.0.0.1"]
    client.close()


def test_spread_dns_refuses_transports_that_cannot_honour_it() -> None:
    with pytest.raises(ValueError, match="spread_dns needs the gevent transport"):
        Client("http://svc.test:1", transport="urllib3", spread_dns=30.0)


def test_errors_name_the_address_used(two_addresses: Any) -> None:
    first, second = two_addresses
    second.stop()
    first.stop()
    client = Client(
        f"http://svc.test:{first.port}",
        spread_dns=30.0,
        resolver=lambda host, port: ["127.0.0.2"],
        retry=Retry(attempts=1),
    )
    with pytest.raises(rpcclient.ConnectError) as info:
        client.call("echo.echo", 1)
    assert f"127.0.0.2:{first.port}" in str(info.value)
    client.close()
