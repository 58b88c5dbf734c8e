"""Scripted hostile answers on every transport, with the generated suite's invariants.

The same :class:`~tests.hostile.test_hostile.Harness` checks each case: the
value or an rpcclient error, the deadline + 50 ms, no starved greenlet, a
new connection after an exchange error or stray bytes, the pool usable.
Where the requests or urllib3 transport breaks an invariant, the case is
marked ``xfail(strict=True)`` with the reason: those transports are another
part of issue 12 (their framing is urllib3's and http.client's).
"""

from __future__ import annotations

import gzip
import time
from collections.abc import Callable, Iterator

import msgpack
import pytest

import rpcclient
from tests.support.offcpu import Lateness
from tests.support.peer import Peer

from .test_hostile import (
    DEADLINE,
    EITHER,
    ERROR,
    MAX_RESPONSE,
    SLACK,
    Answer,
    Harness,
    _rss,
    base_answer,
)


def _case(framing: str, change: Callable[[Answer], None] | None = None) -> Callable[[], Answer]:
    def build() -> Answer:
        answer = base_answer(["scripted", 1], f"scripted-{next(_n)}", framing)
        if change is not None:
            change(answer)
        return answer

    return build


_n = iter(range(10**9))


def _fields(
    *pairs: tuple[bytes, bytes], expect: str = "", then: str = ""
) -> Callable[[Answer], None]:
    def change(a: Answer) -> None:
        a.fields += list(pairs)
        if expect:
            a.demand(expect)
        if then:
            a.then = then

    return change


def _set(**attrs: object) -> Callable[[Answer], None]:
    def change(a: Answer) -> None:
        expect = attrs.pop("expect", None)
        for name, value in attrs.items():
            setattr(a, name, value)
        if expect:
            a.demand(str(expect))
        attrs["expect"] = expect  # the builder runs once per transport

    return change


def _body(body: bytes, coding: bytes = b"") -> Callable[[Answer], None]:
    def change(a: Answer) -> None:
        a.body = body
        a.fields = [(n, b"%d" % len(body) if n == b"Content-Length" else v) for n, v in a.fields]
        if coding:
            a.fields.append((b"Content-Encoding", coding))

    return change


def _decode_error(change: Callable[[Answer], None]) -> Callable[[Answer], None]:
    def both(a: Answer) -> None:
        change(a)
        a.demand(ERROR, decoding=True)

    return both


def _large_close_after_1xx(a: Answer) -> None:
    a.value = b"x" * 100_000
    _body(msgpack.packb(a.value))(a)
    a.fields.append((b"Connection", b"close"))
    a.before = b"HTTP/1.1 100 Continue\r\n\r\n"
    a.reused_ok = False


_OTHER = msgpack.packb(["not", "yours"])
_EARLIER = b"HTTP/1.1 200 OK\r\nX-Request-Id: earlier\r\nContent-Length: %d\r\n\r\n%s" % (
    len(_OTHER),
    _OTHER,
)

CASES: dict[str, Callable[[], Answer]] = {
    "content-length": _case("length"),
    "chunked": _case("chunked"),
    "framed-by-close": _case("close"),
    "two-lengths-differ": _case(
        "length", _fields((b"Content-Length", b"99"), expect=ERROR, then="close")
    ),
    "length-and-chunked": _case(
        "chunked", _fields((b"Content-Length", b"3"), expect=EITHER, then="close")
    ),
    "bad-chunk-size": _case(
        "chunked", _set(chunks=[b"zz\r\nab\r\n", b"0\r\n\r\n"], then="close", expect=ERROR)
    ),
    "obs-fold": _case("length", _fields((b"X-Folded", b"a\r\n b"), expect=EITHER, then="close")),
    "bare-lf": _case("length", _set(status_suffix=b"\nX-Bare: lf", expect=EITHER, then="close")),
    "nul-in-a-value": _case("length", _fields((b"X-Nul", b"a\x00b"), expect=EITHER, then="close")),
    "huge-length-claim": _case(
        "length",
        _set(
            fields=[(b"Content-Length", b"%d" % 10**12), (b"X-Request-Id", b"x")],
            then="close",
            expect=ERROR,
        ),
    ),
    "truncated-body": _case("length", _set(cut=-1, then="close", expect=ERROR)),
    "three-interim-answers": _case("length", _set(before=b"HTTP/1.1 100 Continue\r\n\r\n" * 3)),
    "interim-flood": _case(
        "length", _set(before=b"HTTP/1.1 102 Processing\r\n\r\n" * 200, then="close", expect=ERROR)
    ),
    "stray-answer-after": _case("length", _set(after=_EARLIER, reused_ok=False)),
    "late-duplicate": _case("length", _set(late=_EARLIER, reused_ok=False)),
    "long-reason": _case("length", _set(reason=b"r" * 1_000_000, then="close", expect=ERROR)),
    "huge-field": _case("length", _fields((b"X-Huge", b"v" * 70_000), expect=ERROR, then="close")),
    "http-1.0": _case("length", _set(version=b"HTTP/1.0", reused_ok=False)),
    "msgpack-length-claim": _case("length", _decode_error(_body(b"\xdd\xff\xff\xff\xff\xc0"))),
    "msgpack-dense": _case("length", _decode_error(_body(msgpack.packb([{}] * 200_000)))),
    "gzip": _case("length", _body(gzip.compress(msgpack.packb(["scripted", 1])), b"gzip")),
    "gzip-bomb": _case(
        "length", _decode_error(_body(gzip.compress(b"\x00" * (4 * MAX_RESPONSE)), b"gzip"))
    ),
    "close-above-64k-after-1xx": _case("length", _large_close_after_1xx),
}

# what the blocking transports get wrong (issue 12): "transport:case" -> reason (xfail, strict)
BLOCKING_FAILS: dict[str, str] = {}


@pytest.fixture(scope="module")
def peer() -> Iterator[Peer]:
    with Peer() as started:
        yield started


@pytest.mark.parametrize("transport", ["gevent", "requests", "urllib3"])
@pytest.mark.parametrize("case", sorted(CASES))
def test_scripted_answer(
    peer: Peer, transport: str, case: str, request: pytest.FixtureRequest
) -> None:
    if transport != "gevent" and f"{transport}:{case}" in BLOCKING_FAILS:
        request.applymarker(
            pytest.mark.xfail(strict=True, reason=BLOCKING_FAILS[f"{transport}:{case}"])
        )
    answer = CASES[case]()
    if answer.cut == -1:
        answer.cut = len(answer.core()) - 1
    harness = Harness(peer, transport)
    try:
        harness.run(answer)
    finally:
        harness.close()


FLOODS = {
    "interim": (b"", b"HTTP/1.1 100 Continue\r\n\r\n"),
    "chunk-extension": (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1;x=", b"a" * 4096),
    "one-byte-chunks": (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", b"1\r\nx\r\n"),
    "close-framed-body": (b"HTTP/1.1 200 OK\r\n\r\n", b"\x00" * 4096),
}
# "transport:flood" -> reason; not run (xfail, run=False): such a call never ends
FLOOD_HANGS: dict[str, str] = {}


# the size limit a flood runs under: a small one (the call may end on size)
# and the default 64 MiB, which a flood cannot reach by the deadline on
# loopback here, so only the deadline can end the call
FLOOD_LIMITS = {"small-limit": 64 * 1024, "default-limit": 64 * 2**20}


@pytest.mark.parametrize(
    ("flood", "transport", "limit"),
    [
        pytest.param(
            flood,
            transport,
            limit,
            marks=[pytest.mark.xfail(run=False, reason=FLOOD_HANGS[f"{transport}:{flood}"])]
            if f"{transport}:{flood}" in FLOOD_HANGS
            else [],
        )
        for flood in sorted(FLOODS)
        for transport in ("gevent", "requests", "urllib3")
        for limit in sorted(FLOOD_LIMITS)
    ],
)
def test_a_fast_flood_ends_by_the_deadline(
    peer: Peer, transport: str, flood: str, limit: str
) -> None:
    """A peer that never stops sending: the deadline holds, nobody starves."""
    prefix, unit = FLOODS[flood]
    harness = Harness(peer, transport, max_response=FLOOD_LIMITS[limit])
    try:
        harness.ticker.reset()
        lateness = Lateness()  # less the run-queue delay after the deadline
        deadline = time.monotonic() + DEADLINE
        with pytest.raises(rpcclient.RPCError):
            harness.client.call(
                "hostile.flood", None, headers=Peer.flood(prefix, unit), timeout=DEADLINE
            )
        late = lateness.late(deadline)
        lateness.stop()
        assert late < SLACK, f"{late * 1000:.0f} ms past the deadline"
        gap = harness.ticker.current()
        assert gap < SLACK, f"starved {gap * 1000:.0f} ms"
    finally:
        harness.close()


def test_no_growth_over_many_cases(peer: Peer) -> None:
    """Every scripted case 20 times on one client: what stays afterwards is bounded."""
    harness = Harness(peer, "gevent")
    try:

        def every_case() -> None:
            for name in sorted(CASES):
                answer = CASES[name]()
                if answer.cut == -1:
                    answer.cut = len(answer.core()) - 1
                harness.run(answer)

        every_case()  # the first round's caches and pools are not growth
        before = _rss()
        for _ in range(20):
            every_case()
        grown = _rss() - before
    finally:
        harness.close()
    assert grown < 8 * 2**20, f"{grown / 2**20:.1f} MiB after {20 * len(CASES)} cases"
