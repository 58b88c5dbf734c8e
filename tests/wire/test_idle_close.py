"""Hostile review of the idle-close re-send (ConnectionLost.idle_close): only an
answer of which not one byte arrived, on a reused connection, may be re-sent.

Scripted raw-socket servers on loopback (tests/support/raw.py RawServer).
"""

from __future__ import annotations

import socket
import struct
from typing import Any

import gevent
import pytest

import rpcclient
import rpcclient.compat.requests as shim
from tests.support.raw import RawServer, closes_when_reused, http_response, read_request


def answers_then_cuts(partial: bytes, how: str) -> Any:
    """A handler: the first request on a connection gets a whole keep-alive
    answer; the second gets ``partial`` (the start of an answer), then the
    connection ends with a FIN (``fin``) or a reset (``reset``: SO_LINGER 0)."""

    def handler(sock: Any, server: RawServer) -> None:
        buf = bytearray()
        req = read_request(sock, buf)
        if req is None:
            return
        server.requests.append(req)
        sock.sendall(http_response(b"ok", content_type="text/plain"))
        again = read_request(sock, buf)
        if again is None:
            return
        server.requests.append(again)
        if partial:
            sock.sendall(partial)
        if how == "reset":
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))

    return handler


PARTIALS = {
    "interim 100": b"HTTP/1.1 100 Continue\r\n\r\n",
    "interim 103": b"HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n",
    "status line cut": b"HTTP/1.1 2",
    "one byte": b"H",
}


@pytest.mark.parametrize("how", ["fin", "reset"])
@pytest.mark.parametrize("partial", list(PARTIALS.values()), ids=list(PARTIALS))
def test_shim_never_re_sends_a_get_once_part_of_its_answer_arrived(
    raw_server: Any, partial: bytes, how: str
) -> None:
    srv: RawServer = raw_server(answers_then_cuts(partial, how))
    with shim.Session() as session:
        assert session.get(srv.url + "/x", timeout=5).content == b"ok"
        with pytest.raises(shim.RequestException) as info:
            session.get(srv.url + "/x", timeout=5)
    cause = info.value.__cause__
    assert isinstance(cause, rpcclient.RPCError)
    assert not getattr(cause, "idle_close", False)
    assert srv.connections == 1  # not re-sent: the server began to answer it
    assert len(srv.requests) == 2


@pytest.mark.parametrize("how", ["fin", "reset"])
def test_a_fresh_connection_closed_before_its_answer_is_no_idle_close(
    raw_server: Any, how: str
) -> None:
    def closes_at_once(sock: Any, server: RawServer) -> None:
        req = read_request(sock)
        if req is not None:
            server.requests.append(req)
        if how == "reset":
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))

    srv: RawServer = raw_server(closes_at_once)
    with shim.Session() as session:
        with pytest.raises(shim.ConnectionError) as info:
            session.get(srv.url + "/x", timeout=5)
    cause = info.value.__cause__
    assert isinstance(cause, rpcclient.ConnectionLost) and not cause.idle_close
    assert srv.connections == 1 and len(srv.requests) == 1


@pytest.mark.parametrize("how", ["fin", "reset"])
def test_a_put_handed_over_on_a_connection_closed_as_it_arrives_is_re_sent(
    raw_server: Any, how: str
) -> None:
    # one connection, PUTs from several greenlets (a body: a bodiless GET is
    # never handed over): each waiter's request is sent
    # by the greenlet that frees the connection (the pool's handover); the
    # server closes a connection as its second request arrives, so every
    # handed request meets an idle close, and must be re-sent, not failed
    srv: RawServer = raw_server(closes_when_reused(how))
    adapter = shim.adapters.HTTPAdapter(pool_maxsize=1, pool_block=True)
    with shim.Session() as session:
        session.mount("http://", adapter)
        jobs = [gevent.spawn(session.put, srv.url + "/x", data=b"v", timeout=5) for _ in range(6)]
        gevent.joinall(jobs, timeout=10)
        (pool,) = adapter._transport(False, True, None).stats()["pools"].values()
    assert all(j.successful() for j in jobs), [j.exception for j in jobs]
    assert [(j.value.status_code, j.value.content) for j in jobs] == [(200, b"ok")] * 6
    assert pool["handovers"] >= 1  # the path under test was taken
    assert pool["in_use"] == 0
