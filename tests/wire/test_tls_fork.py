"""TLS (verification on by default, custom CA, client certificates) and fork safety.

A local CA from ``trustme`` signs the loopback server's certificate; nothing
leaves 127.0.0.1.
"""

from __future__ import annotations

import os
import ssl
import textwrap
from collections.abc import Iterator
from typing import Any

import msgpack
import pytest
import trustme

import rpcclient
from rpcclient import Client, TLSConfig
from tests.support.proc import run_in_fork, run_python
from tests.support.raw import (
    RawServer,
    echo,
    http_response,
    keepalive_answering,
    read_request,
    silent,
)


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


@pytest.mark.parametrize("transport", ["gevent", "requests", "urllib3"])
def test_a_tls_context_decides_on_every_transport(
    raw_server: Any, ca: trustme.CA, transport: str
) -> None:
    """TLSConfig(context=...) is used as it is: its trust, its client certificate."""
    srv: RawServer = raw_server(
        keepalive_answering(echo), ssl_context=server_context(ca, require_client_cert=True)
    )
    ctx = ssl.create_default_context()  # the system store does not know the local CA
    ca.configure_trust(ctx)
    ca.issue_cert("client@example.test").configure_cert(ctx)
    trusted = len(ctx.get_ca_certs())
    with Client(srv.url, transport=transport, tls=TLSConfig(context=ctx)) as client:
        assert client.call("echo.echo", "ctx") == "ctx"
    # nothing was loaded into or changed in the caller's context (requests adds certifi's)
    assert len(ctx.get_ca_certs()) == trusted
    assert ctx.verify_mode == ssl.CERT_REQUIRED
    assert ctx.check_hostname is True
    # and a context that does not trust the CA fails the same way everywhere
    stranger = ssl.create_default_context()
    with Client(srv.url, transport=transport, tls=TLSConfig(context=stranger)) as client:
        with pytest.raises(rpcclient.ConnectError) as info:
            client.call("echo.echo", "no")
    assert info.value.may_have_reached_server is False
    assert [msgpack.unpackb(b) for _, b in srv.requests] == ["ctx"]


def test_tls_is_either_tls_or_its_parts() -> None:
    with pytest.raises(ValueError, match="either tls= or verify/ca_certs/cert"):
        Client("https://127.0.0.1:1", tls=TLSConfig(), verify=False)
    # ours ("tls must be a rpcclient.TLSConfig"), or the compiled build's argument check
    with pytest.raises(TypeError, match=r"rpcclient\.(_config\.)?TLSConfig"):
        Client("https://127.0.0.1:1", tls=ssl.create_default_context())  # type: ignore[arg-type]


STDLIB_CONTEXT = textwrap.dedent(
    """
    import ssl, sys, time
    import gevent.monkey
    from rpcclient import Client, ReadTimeout, Timeout, TLSConfig

    assert not gevent.monkey.is_module_patched("ssl")
    echo_url, silent_url, ca_file = sys.argv[1:4]
    ctx = ssl.create_default_context(cafile=ca_file)  # the stdlib's class, not gevent's
    tls = TLSConfig(context=ctx)
    with Client(echo_url, tls=tls) as client:
        assert client.call("echo.echo", "plain ssl") == "plain ssl"

    class Checking(ssl.SSLContext):  # like truststore: its checks live in wrap_socket
        wrapped = 0

        def wrap_socket(self, *args, **kw):
            Checking.wrapped += 1
            return super().wrap_socket(*args, **kw)

    sub = Checking(ssl.PROTOCOL_TLS_CLIENT)
    sub.load_verify_locations(ca_file)
    with Client(echo_url, tls=TLSConfig(context=sub)) as client:
        assert client.call("echo.echo", "subclass") == "subclass"
    assert Checking.wrapped == 1, Checking.wrapped
    with Client(silent_url, tls=tls, timeout=Timeout(read=0.3, total=5)) as client:
        started = time.monotonic()
        try:
            client.call("echo.echo", 1)
        except ReadTimeout:
            print("read timeout after %.1f s" % (time.monotonic() - started))
    """
)


def test_a_stdlib_context_stays_cooperative_unpatched(
    raw_server: Any, ca: trustme.CA, ca_file: str
) -> None:
    """A stdlib SSLContext must not give the gevent transport blocking sockets.

    Unpatched, the stdlib's SSLSocket would block the hub on the silent
    server's read, and with it the watchdog that ends the call at 0.3 s.
    """
    echo_srv: RawServer = raw_server(keepalive_answering(echo), ssl_context=server_context(ca))
    silent_srv: RawServer = raw_server(silent, ssl_context=server_context(ca))
    result = run_python(STDLIB_CONTEXT, echo_srv.url, silent_srv.url, ca_file, timeout=30)
    assert result.returncode == 0, result.stderr
    words = result.stdout.split()
    assert words[:3] == ["read", "timeout", "after"], result.stdout
    assert float(words[3]) < 2.0


@pytest.mark.parametrize("size", [100, 200_000])
def test_a_stray_answer_after_a_tls_answer_is_never_taken_for_the_next(
    raw_server: Any, ca: trustme.CA, ca_file: str, size: int
) -> None:
    """A whole extra answer behind the first (same write): the connection goes.

    After a large answer the reader stops at the announced length, so what
    follows is asked of the TLS layer; otherwise the next call would get the
    stray answer as its own.
    """

    def stray_after_first(sock: Any, server: RawServer) -> None:
        buf = bytearray()
        first = True
        while (req := read_request(sock, buf)) is not None:
            server.requests.append(req)
            answer = echo(*req)
            if first:
                answer += http_response(msgpack.packb("STRAY"))
                first = False
            sock.sendall(answer)

    srv: RawServer = raw_server(stray_after_first, ssl_context=server_context(ca))
    blob = b"t" * size
    with Client(srv.url, ca_certs=ca_file) as client:
        assert client.call("echo.echo", blob) == blob
        assert client.call("echo.echo", "second") == "second"
    assert srv.connections == 2


@pytest.mark.parametrize("transport", ["gevent", "requests", "urllib3"])
def test_a_context_without_host_name_check_is_obeyed_everywhere(
    raw_server: Any, ca: trustme.CA, transport: str
) -> None:
    """check_hostname=False with the chain still verified: no transport adds its own check."""
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("other.example").configure_cert(ctx)  # not 127.0.0.1
    srv: RawServer = raw_server(keepalive_answering(echo), ssl_context=ctx)
    lenient = ssl.create_default_context()
    ca.configure_trust(lenient)
    lenient.check_hostname = False
    with Client(srv.url, transport=transport, tls=TLSConfig(context=lenient)) as client:
        assert client.call("echo.echo", "chain only") == "chain only"
    strict = ssl.create_default_context()
    ca.configure_trust(strict)
    with Client(srv.url, transport=transport, tls=TLSConfig(context=strict)) as client:
        with pytest.raises(rpcclient.ConnectError):
            client.call("echo.echo", "name too")
    assert [msgpack.unpackb(b) for _, b in srv.requests] == ["chain only"]
