"""TLS (verification on by default, custom CA, client certificates) and fork safety.

A local CA from ``trustme`` signs the loopback server's certificate; nothing
leaves 127.0.0.1.
"""

from __future__ import annotations

import os
import ssl
from collections.abc import Iterator
from typing import Any

import msgpack
import pytest
import trustme

import rpcclient
from rpcclient import Client

from .conftest import RawServer, http_response, keepalive_answering, run_in_fork


def echo(head: bytes, body: bytes) -> bytes:
    return http_response(body)


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def ca_file(ca: trustme.CA, tmp_path: Any) -> str:
    path = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return str(path)


def server_context(ca: trustme.CA, *, require_client_cert: bool = False) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1", "localhost").configure_cert(ctx)
    if require_client_cert:
        ca.configure_trust(ctx)
        ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


@pytest.fixture
def tls_server(raw_server: Any, ca: trustme.CA) -> Iterator[RawServer]:
    yield raw_server(keepalive_answering(echo), ssl_context=server_context(ca))


def test_https_with_custom_ca(tls_server: RawServer, ca_file: str) -> None:
    with Client(tls_server.url, ca_certs=ca_file) as client:
        for i in range(5):
            assert client.call("echo.echo", [i, "tls"]) == [i, "tls"]
    assert tls_server.connections == 1  # kept alive across calls


def test_verification_is_on_by_default(tls_server: RawServer) -> None:
    with Client(tls_server.url) as client:
        with pytest.raises(rpcclient.ConnectError, match="TLS handshake failed") as info:
            client.call("echo.echo", 1)
    assert info.value.may_have_reached_server is False
    assert tls_server.requests == []


def test_verify_false_skips_checks(tls_server: RawServer) -> None:
    with Client(tls_server.url, verify=False) as client:
        assert client.call("echo.echo", "x") == "x"


def test_small_tls_request_is_one_record_one_segment(tls_server: RawServer, ca_file: str) -> None:
    with Client(tls_server.url, ca_certs=ca_file) as client:
        client.call("echo.echo", 0)  # handshake outside the count
        before = tls_server.live_segments()
        for i in range(10):
            client.call("echo.echo", i)
        segments = tls_server.live_segments() - before
    assert segments == 10


def test_large_tls_body_arrives_intact(tls_server: RawServer, ca_file: str) -> None:
    blob = os.urandom(300_000)
    with Client(tls_server.url, ca_certs=ca_file) as client:
        assert client.call("echo.echo", blob) == blob


def test_client_certificate(raw_server: Any, ca: trustme.CA, ca_file: str, tmp_path: Any) -> None:
    srv: RawServer = raw_server(
        keepalive_answering(echo), ssl_context=server_context(ca, require_client_cert=True)
    )
    cert = ca.issue_cert("client@example.test")
    pem = tmp_path / "client.pem"
    cert.private_key_and_cert_chain_pem.write_to_path(str(pem))
    with Client(srv.url, ca_certs=ca_file, cert=str(pem)) as client:
        assert client.call("echo.echo", "mtls") == "mtls"
    with Client(srv.url, ca_certs=ca_file) as client:
        with pytest.raises(rpcclient.TransportError):
            client.call("echo.echo", "no cert")
    assert [msgpack.unpackb(b) for _, b in srv.requests] == ["mtls"]


def _idle_ports(client: Client) -> set[int]:
    """Local ports of the client's idle pooled connections, on any transport."""
    pools = client.transport._pools  # type: ignore[attr-defined]
    if client.transport.name == "gevent":
        return {conn.sock.getsockname()[1] for pool in pools.values() for conn in pool._idle}
    return {  # urllib3 pools behind the requests and urllib3 transports
        conn.sock.getsockname()[1]
        for pool in pools._pools
        if pool.pool is not None
        for conn in list(pool.pool.queue)
        if conn is not None and conn.sock is not None
    }


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
@pytest.mark.parametrize("transport", ["gevent", "requests", "urllib3"])
def test_fork_with_a_warm_pool_never_shares_a_socket(raw_server: Any, transport: str) -> None:
    srv: RawServer = raw_server(keepalive_answering(echo))
    client = Client(srv.url, transport=transport)
    assert client.call("echo.echo", "parent") == "parent"
    (parent_port,) = _idle_ports(client)

    def child() -> bool:  # no inherited connection: its call opens its own
        inherited = _idle_ports(client)
        ok = client.call("echo.echo", "child") == "child"
        mine = _idle_ports(client)
        return ok and not inherited and bool(mine) and parent_port not in mine

    run_in_fork(child)
    # the parent's pooled connection survived the child and is reused as it is
    assert client.call("echo.echo", "parent again") == "parent again"
    assert _idle_ports(client) == {parent_port}
    client.close()


# verify=False on urllib3/requests warns once per request, as it does without rpcclient
@pytest.mark.filterwarnings("ignore::urllib3.exceptions.InsecureRequestWarning")
@pytest.mark.parametrize("transport", ["gevent", "requests", "urllib3"])
def test_tls_on_every_transport(tls_server: RawServer, ca_file: str, transport: str) -> None:
    """Verification on by default, a custom CA works, and the errors agree."""
    with Client(tls_server.url, transport=transport, ca_certs=ca_file) as client:
        assert client.call("echo.echo", [1, "tls"]) == [1, "tls"]
    with Client(tls_server.url, transport=transport) as client:
        with pytest.raises(rpcclient.ConnectError) as info:
            client.call("echo.echo", 1)
        assert info.value.may_have_reached_server is False
    with Client(tls_server.url, transport=transport, verify=False) as client:
        assert client.call("echo.echo", "unverified") == "unverified"
    assert [msgpack.unpackb(b) for _, b in tls_server.requests] == [[1, "tls"], "unverified"]
