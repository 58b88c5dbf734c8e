"""The client through nginx and haproxy, reverse proxies in front of the bundled server.

What only a proxy does: HTML error pages of its own (502/503 with the upstream
down, 504 when it stalls past the proxy's read timeout, 413 above the body
limit), closing idle client connections at its keep-alive timeout (1 s here,
below the client's ``idle_timeout`` of 1.5 s, so the close races the next call),
nginx's ``keepalive_requests``, and a graceful reload under load.
"""

from __future__ import annotations

from typing import Any

import gevent
import pytest

from rpcclient import NO_RETRY, HTTPStatusError, RemoteError, Retry

from .conftest import Outcome, Proxied, call_counted, check_counted, load, start_proxied

#: what each proxy answers when its only upstream refuses connections: nginx
#: 502 Bad Gateway; haproxy 503 ("no server is available to handle this request")
DOWN_STATUS = {"nginx": 502, "haproxy": 503}


def test_values_and_keepalive_through_proxy(proxied: Proxied, make_client: Any) -> None:
    client = make_client(proxied.url())
    for value in [None, 1, "ü", b"\x00" * 1000, {"a": [1, {2: 3}]}]:
        assert client.call("t.echo", [value]) == value
    assert client.call("t.size", [2_000_000]) == b"x" * 2_000_000
    # The proxy reports the client's port in X-Client-Port: one connection.
    ports = {client.call("t.peer")[1] for _ in range(20)}
    assert len(ports) == 1, f"20 sequential calls used {len(ports)} connections to the proxy"


def test_proxy_passes_envelopes(proxied: Proxied, make_client: Any) -> None:
    client = make_client(proxied.url())
    with pytest.raises(RemoteError) as boom:
        client.call("t.boom", ["through"])
    assert (boom.value.status, boom.value.type) == (500, "Boom")
    assert boom.value.data == {"why": "through", "n": 1}


def test_upstream_down_is_http_status_error(proxied: Proxied, make_client: Any) -> None:
    client = make_client(proxied.url("down"), retry=NO_RETRY)
    with pytest.raises(HTTPStatusError) as err:
        client.call("t.echo", [1])
    assert not isinstance(err.value, RemoteError)
    assert err.value.status == DOWN_STATUS[proxied.kind]
    assert "html" in err.value.snippet.lower()


def test_upstream_hangs_up_is_502(proxied: Proxied, make_client: Any) -> None:
    """The upstream reads the request and closes without an answer: 502 from both."""
    client = make_client(proxied.url("broken"), retry=NO_RETRY)
    with pytest.raises(HTTPStatusError) as err:
        client.call("t.echo", [1])
    assert err.value.status == 502
    assert "html" in err.value.snippet.lower()


def test_upstream_stall_is_504(proxied: Proxied, make_client: Any) -> None:
    """The upstream sleeps 2.5 s; the proxy gives up at 1 s with its own 504 page."""
    client = make_client(proxied.url())
    with pytest.raises(HTTPStatusError) as err:
        client.call("t.slow", [2.5])
    assert err.value.status == 504
    assert "html" in err.value.snippet.lower()
    assert client.call("t.echo", ["after"]) == "after"  # the connection or pool still works


def test_body_too_large_is_413(proxied: Proxied, make_client: Any) -> None:
    """nginx ``client_max_body_size 4k``; haproxy denies a Content-Length above 4096."""
    client = make_client(proxied.url())
    with pytest.raises(HTTPStatusError) as err:
        client.call("t.echo", [b"z" * 10_000])
    assert err.value.status == 413
    assert client.call("t.echo", [b"z" * 1000]) == b"z" * 1000


def test_idle_close_race(proxied: Proxied, make_client: Any) -> None:
    """The proxy closes idle connections at 1 s; calls come 0.92-1.08 s apart.

    Sixteen clients (one connection each) run side by side, each with its own
    gap, so some calls go out just as the proxy closes: the test checks that
    the gaps bracketed the timeout (some clients kept their connection, some
    had it closed under them). Idempotent calls never fail
    (a re-send is allowed); non-idempotent ones may fail only as the retry
    rules say, with ``may_have_reached_server`` true when the server ran them;
    no answer is ever another call's.
    """
    outcomes: dict[bool, list[Outcome]] = {True: [], False: []}
    per_client: list[list[Outcome]] = []

    def run(index: int) -> None:
        idempotent = index % 2 == 0
        client = make_client(proxied.url(), pool_size=1, idle_timeout=1.5, retry=Retry())
        gap = 0.92 + 0.16 * index / 15
        mine: list[Outcome] = []
        for _ in range(5):
            mine.append(call_counted(client, "idle", idempotent=idempotent))
            gevent.sleep(gap)
        outcomes[idempotent].extend(mine)
        per_client.append(mine)

    gevent.joinall([gevent.spawn(run, i) for i in range(16)], raise_error=True)
    executions = proxied.upstream.executions()
    ports = proxied.upstream.client_ports()
    connections = [
        len({ports[o.request_id] for o in mine if o.request_id in ports}) for mine in per_client
    ]
    assert min(connections) == 1 and max(connections) > 1, (
        f"the gaps did not bracket the proxy's keep-alive timeout: connections per client "
        f"{sorted(connections)}"
    )
    failed_idempotent = check_counted(outcomes[True], executions, idempotent=True)
    assert not failed_idempotent, f"idempotent calls failed: {failed_idempotent[0].error!r}"
    failed = check_counted(outcomes[False], executions)
    print(
        f"idle-close race, {proxied.kind}: {len(failed)} of 40 non-idempotent calls failed, "
        f"connections per client {sorted(connections)}"
    )


def test_keepalive_requests(make_client: Any, nginx: Proxied) -> None:
    """nginx ``keepalive_requests 3``: it closes every third connection's answer.

    It says so (``Connection: close``), so nothing may fail: 60 sequential and
    300 concurrent non-idempotent calls, each answer the call's own.
    """
    client = make_client(nginx.url("few"), pool_size=10, retry=Retry())
    sequential = [call_counted(client, "few-seq") for _ in range(60)]
    ports = {client.call("t.peer")[1] for _ in range(9)}
    assert len(ports) == 3, f"9 calls at 3 a connection used {len(ports)} connections"
    concurrent = load(client, "few", greenlets=30, calls=300)
    failed = check_counted(sequential + concurrent, nginx.upstream.executions())
    assert not failed, f"{len(failed)} of 360 failed, first: {failed[0].error!r}"


@pytest.fixture(scope="module")
def nginx(tmp_path_factory: Any) -> Any:
    env = start_proxied("nginx", tmp_path_factory.mktemp("nginx-only"))
    yield env
    env.stop()


def test_accept_encoding_gzip(make_client: Any, nginx: Proxied, transport: str) -> None:
    """A caller asking for gzip gets it decoded (nginx compresses msgpack here)."""
    client = make_client(nginx.url("gzip"), headers={"Accept-Encoding": "gzip"})
    value = {"text": "compressible " * 200}
    assert client.call("t.echo", [value]) == value
