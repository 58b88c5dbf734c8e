"""The client against third-party WSGI servers, on every transport.

gunicorn (gevent, sync and gthread workers), waitress and uWSGI (pyuwsgi,
``--http11-socket``; ``--http-socket`` for its answer-then-close), serving the
bundled RPCApp and a Flask app that speaks wire protocol v1; the bundled
server beside them as the reference.
"""

from __future__ import annotations

from typing import Any

import pytest

from rpcclient import (
    ConnectionLost,
    HTTPStatusError,
    MethodNotFound,
    ReadTimeout,
    RemoteError,
    Retry,
    Timeout,
)

from .conftest import ServerProcess, Spec, call_counted, check_counted, load, start_server

VALUES: list[Any] = [
    None,
    True,
    0,
    -1,
    2**63 - 1,
    -(2**63),
    1.5,
    "",
    "héllo wörld ✓",
    b"\x00\xff" * 100,
    [1, "a", None],
    {"k": [1, 2], 3: b"x", "nested": {"deep": [{"x": 1}]}},
]


def test_values_round_trip(server: tuple[Spec, ServerProcess], make_client: Any) -> None:
    _, srv = server
    client = make_client(srv.url)
    for value in VALUES:
        assert client.call("t.echo", [value]) == value
    assert client.call("t.echo", [(1, 2)]) == [1, 2]  # msgpack has one array type
    assert client.call("t.size", [1_000_000]) == b"x" * 1_000_000
    assert client.call("t.echo", {"value": "kw"}) == "kw"
    big = b"y" * 300_000
    assert client.call("t.echo", [big]) == big


def test_exception_classes(server: tuple[Spec, ServerProcess], make_client: Any) -> None:
    _, srv = server
    client = make_client(srv.url)
    with pytest.raises(RemoteError) as boom:
        client.call("t.boom", ["bad thing"])
    assert type(boom.value) is RemoteError
    assert boom.value.status == 500
    assert boom.value.type == "Boom"
    assert "bad thing" in str(boom.value)
    assert boom.value.data == {"why": "bad thing", "n": 1}
    with pytest.raises(RemoteError) as bad:
        client.call("t.size", ["not", "an", "int"])
    assert bad.value.status in (400, 500)
    with pytest.raises(ReadTimeout) as slow:
        client.call("t.slow", [0.6], timeout=Timeout(total=0.2))
    assert slow.value.may_have_reached_server
    assert client.call("t.echo", ["next"]) == "next"  # the late answer is never this one
    # Last: uWSGI closes after a 404 without saying so (see test_uwsgi_after_404).
    with pytest.raises(MethodNotFound) as nf:
        client.call("t.nope", [])
    assert nf.value.status == 404
    # Below the app, the server itself: a path no route serves is not an
    # envelope everywhere, but always one of the two documented classes.
    with pytest.raises((MethodNotFound, HTTPStatusError)):
        make_client(srv.url).call("nosuch.method", [])


def test_keepalive_reuse(server: tuple[Spec, ServerProcess], make_client: Any) -> None:
    """Sequential calls share one connection where the server keeps it alive."""
    spec, srv = server
    client = make_client(srv.url, pool_size=4)
    peers = {tuple(client.call("t.peer")) for _ in range(20)}
    ports = {port for _, port in peers}
    if spec.keepalive:
        assert len(ports) == 1, f"20 sequential calls used {len(ports)} connections"
    else:
        assert len(ports) == 20, f"a closing server, yet only {len(ports)} connections"


def test_concurrent_calls_get_their_own_answers(
    server: tuple[Spec, ServerProcess], make_client: Any
) -> None:
    """50 greenlets on 10 connections, non-idempotent: every answer is the call's own,
    and the server saw at most 10 connections (where it keeps them alive)."""
    spec, srv = server
    client = make_client(srv.url, pool_size=10, retry=Retry())
    outcomes = load(client, "conc", greenlets=50, calls=300)
    failed = check_counted(outcomes, srv.executions())
    assert not failed, f"{len(failed)} of 300 failed, first: {failed[0].error!r}"
    ports = srv.client_ports()
    used = {ports[out.request_id] for out in outcomes}
    if spec.keepalive:
        assert len(used) <= 10, f"300 calls on a pool of 10 came on {len(used)} connections"


@pytest.fixture(scope="module")
def uwsgi_close(tmp_path_factory: Any) -> Any:
    """uWSGI on ``--http-socket``: answers without ``Connection: close``, then closes."""
    srv = start_server("uwsgi-close", "rpc_app", tmp_path_factory.mktemp("uwsgi-close"))
    yield srv
    srv.stop()


def test_uwsgi_answer_then_close(
    uwsgi_close: ServerProcess, make_client: Any, transport: str, request: Any
) -> None:
    """A server that closes after an answer that did not say so: once the client
    has seen it do that, no call fails for it.

    100 sequential calls, then 600 over 50 greenlets on 10 connections, all
    non-idempotent; then 600 more. uWSGI ran every call that reached it; no
    answer may be another call's; a call that failed must be a
    ``ConnectionLost`` that says it may have reached the server (the client
    cannot know that a request written just before the peer's FIN arrived was
    not run: only deduplication, issue 15, can re-send it safely).

    The gevent transport failed about 300 of the first 700 before issue 12 item
    6's fix (a stale check before the handover; a pool whose connections close
    right after their answers uses each once for a while). Now a few of the
    first calls meet the close before the pool has learnt it (0-7 of 700 seen)
    and none of the next 600 may fail. The requests and urllib3 transports fail
    0-10 of 700 from run to run (they have no such learning): held under 5%.
    """
    client = make_client(uwsgi_close.url, pool_size=10)
    executions = uwsgi_close.executions

    def checked(outcomes: list[Any], label: str, limit: int) -> None:
        failed = check_counted(outcomes, executions())
        report = f"{label}: {len(failed)} of {len(outcomes)} failed" + (
            f", first: {failed[0].error!r}" if failed else ""
        )
        print(f"uWSGI --http-socket, {transport}, {report}")
        assert len(failed) <= limit, report
        for out in failed:
            assert isinstance(out.error, ConnectionLost), out.error
            assert out.error.may_have_reached_server, out.error

    first = [call_counted(client, "seq") for _ in range(100)]
    first += load(client, "close", greenlets=50, calls=600)
    checked(first, "learning", 14 if transport == "gevent" else 35)
    then = load(client, "close2", greenlets=50, calls=600)
    checked(then, "after", 0 if transport == "gevent" else 30)
    if transport == "gevent":
        pools = client.stats()["pools"]
        assert any(p["single_use"] for p in pools.values()), pools


@pytest.fixture(scope="module")
def gthread_and_upstream(tmp_path_factory: Any) -> Any:
    tmp = tmp_path_factory.mktemp("relay")
    upstream = start_server("bundled", "rpc_app", tmp, name="relay-upstream")
    try:
        gthread = start_server("gunicorn-gthread", "rpc_app", tmp, name="relay-gthread")
    except BaseException:
        upstream.stop()
        raise
    yield gthread, upstream
    gthread.stop()
    upstream.stop()


def test_client_shared_by_gthread_threads(gthread_and_upstream: Any, make_client: Any) -> None:
    """A service on gunicorn's gthread worker (4 threads) calls another one with one
    shared Client: 200 relays, 8 at a time, every one answered with its own value."""
    gthread, upstream = gthread_and_upstream
    client = make_client(gthread.url, pool_size=8)
    results = client.call_many([("t.relay", [upstream.url, i]) for i in range(200)])
    errors = [r for r in results if isinstance(r, BaseException)]
    assert not errors, f"{len(errors)} of 200 relays failed, first: {errors[0]!r}"
    assert results == list(range(200))


def test_uwsgi_after_404(make_client: Any, transport: str, request: Any) -> None:
    """uWSGI's --http11-socket closes after a 404 without ``Connection: close``.

    100 rounds of a call to a missing method then a counted call on the same
    client. The counted call never reaches the app when it meets the close;
    it should not fail, but how many do varies too much from run to run for a
    strict xfail (gevent 1-23 of 100, requests 0-22, urllib3 0; issue 12 item
    6, the sequential form of the race). Held here: no answer is another
    call's, every failure is a ``ConnectionLost`` that may have reached the
    server, and the client keeps working.
    """
    srv = request.getfixturevalue("uwsgi_http11")
    client = make_client(srv.url, pool_size=1)
    outcomes = []
    for _ in range(100):
        with pytest.raises(MethodNotFound):
            client.call("t.nope", [])
        outcomes.append(call_counted(client, "after404"))
    failed = check_counted(outcomes, srv.executions())
    print(f"uWSGI after a 404, {transport}: {len(failed)} of 100 failed")
    for out in failed:
        assert isinstance(out.error, ConnectionLost), out.error
        assert out.error.may_have_reached_server, out.error
    assert client.call("t.echo", ["still"]) == "still"


@pytest.fixture(scope="module")
def uwsgi_http11(tmp_path_factory: Any) -> Any:
    srv = start_server("uwsgi", "rpc_app", tmp_path_factory.mktemp("uwsgi-404"))
    yield srv
    srv.stop()
