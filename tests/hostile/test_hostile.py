"""The client against a hostile peer: scripted and generated answers (issue 12, deliverable 3).

One peer process (:mod:`tests.hostile.peer`) serves the whole module; each
call's argument is the script of its answer, so thousands of cases need no
new server. Every case is one call followed by a probe call, and checks:

- the outcome is the answer's value or an ``rpcclient.exceptions`` error,
  never another value (the value a malformed answer seems to carry counts as
  "another value" only where the framing is unambiguous);
- the call ends by its deadline (0.15 s; 3 s where the answer must be its
  value) + 50 ms, and a ticker greenlet never waits more than 50 ms past its
  5 ms tick meanwhile, both less the time the process waited for a CPU
  (tests/support/offcpu.py): one try per case, none run again;
- after an error, stray or late bytes, ``Connection: close`` or HTTP/1.0 the
  probe is the first request on its connection (the peer counts them):
  nothing is reused after an answer that did not end cleanly;
- the probe succeeds: the pool is usable afterwards;
- over the run, the resident set grows by less than 32 MiB + 24 KiB a case
  (hypothesis keeps ~12 KiB per case; the client's own growth is measured
  without it in test_scripted.py, and what a case costs at its peak per body
  shape in tests/wire/test_framing.py).

The generated cases (hypothesis, ``HOSTILE_EXAMPLES`` of them, 2,000 by
default) draw a value, a framing (Content-Length, chunked, close-framed) and
up to three perturbations from :data:`PERTURBATIONS`, each of which says
what the client must do with it. The seed is in the run's header.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import gzip
import itertools
import os
import resource
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import msgpack
import pytest
from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis import strategies as st

import rpcclient
from rpcclient import Client, Retry, Timeout
from tests.support.offcpu import Lateness
from tests.support.peer import Peer, Ticker

from .conftest import SEED

DEADLINE = 0.15  # per case call: a case that hangs costs this much
# A case whose answer must be its value cannot hang unless the client is wrong;
# its wider deadline is the peer's (another process) slack on a loaded machine,
# where 0.15 s made a well-formed answer a ReadTimeout about 1 run in 8.
ANSWER_DEADLINE = 3.0
SLACK = 0.05  # the bound past the deadline, and for a starved ticker
MAX_RESPONSE = 1024 * 1024
EXAMPLES = int(os.environ.get("HOSTILE_EXAMPLES", "2000"))

VALUE, ERROR, EITHER = "value", "error", "either"


@dataclass
class Answer:
    """An answer under construction: a status line, fields, a framed body."""

    value: Any = field(repr=False)
    request_id: str
    framing: str  # "length", "chunked", "close"
    version: bytes = b"HTTP/1.1"
    reason: bytes = field(default=b"OK", repr=False)
    status_suffix: bytes = b""  # after the status line, before the CRLF
    fields: list[tuple[bytes, bytes]] = field(default_factory=list)
    body: bytes = field(default=b"", repr=False)
    chunks: list[bytes] | None = field(default=None, repr=False)  # chunked: the wire form
    before: bytes = field(default=b"", repr=False)  # interim answers
    after: bytes = b""  # stray bytes in the same write
    late: bytes = field(default=b"", repr=False)  # bytes sent 2 ms later
    cut: int | None = None  # truncate the wire form here
    then: str = "keep"
    expect: str = VALUE
    framing_trouble: bool = False  # an error demanded by something but the body's decoding
    reused_ok: bool = True  # may the probe reuse the connection if the call succeeds?

    def __repr__(self) -> str:  # short: hypothesis prints it, and the run's failures
        return (
            f"Answer({self.request_id}, {self.framing}, {self.version!r}, "
            f"fields={[(n, v[:40]) for n, v in self.fields]!r}, body={self.body[:40]!r}"
            f"{'...' if len(self.body) > 40 else ''}, before={self.before[:60]!r}, "
            f"after={self.after[:60]!r}, late={bool(self.late)}, cut={self.cut}, "
            f"then={self.then}, expect={self.expect}, reused_ok={self.reused_ok})"
        )

    def demand(self, outcome: str, *, decoding: bool = False) -> None:
        order = {VALUE: 0, EITHER: 1, ERROR: 2}
        if order[outcome] > order[self.expect]:
            self.expect = outcome
        if not decoding:
            self.framing_trouble = True

    def wire(self) -> bytes:
        """The bytes the peer sends: interim answers, the answer (maybe cut), stray bytes."""
        data = self.core()
        if self.cut is not None:  # the peer closes there: nothing follows
            return self.before + data[: self.cut]
        return self.before + data + self.after

    def core(self) -> bytes:
        """The answer itself: status line, fields, framed body."""
        head = [self.version + b" 200 " + self.reason + self.status_suffix]
        head += [name + b": " + value for name, value in self.fields]
        if self.framing == "chunked" and self.chunks is None:
            self.chunks = [b"%x\r\n%s\r\n" % (len(self.body), self.body), b"0\r\n\r\n"]
        body = b"".join(self.chunks) if self.framing == "chunked" else self.body  # type: ignore[arg-type]
        return b"\r\n".join(head) + b"\r\n\r\n" + body


def base_answer(value: Any, request_id: str, framing: str) -> Answer:
    body = msgpack.packb(value)
    answer = Answer(value, request_id, framing, body=body)
    answer.fields = [
        (b"Content-Type", b"application/x-msgpack"),
        (b"X-Request-Id", request_id.encode()),
    ]
    if framing == "length":
        answer.fields.append((b"Content-Length", b"%d" % len(body)))
    elif framing == "chunked":
        answer.fields.append((b"Transfer-Encoding", b"chunked"))
    else:
        answer.fields.append((b"Connection", b"close"))
        answer.then = "close"
        answer.reused_ok = False
    return answer


# -- perturbations: each changes the answer and says what the client must do ---------


def two_lengths_differ(a: Answer, draw: Any) -> None:
    a.fields.append((b"Content-Length", b"%d" % (len(a.body) + draw(st.integers(1, 9)))))
    a.demand(ERROR if a.framing == "length" else EITHER)


def two_lengths_equal(a: Answer, draw: Any) -> None:
    a.fields.append((b"Content-Length", b"%d" % len(a.body)))
    a.demand(EITHER)


def length_and_chunked(a: Answer, draw: Any) -> None:
    if a.framing == "chunked":
        a.fields.append((b"Content-Length", b"%d" % draw(st.integers(0, 50))))
    else:
        a.fields.append((b"Transfer-Encoding", b"chunked"))
    a.demand(EITHER)


def bad_chunk_size(a: Answer, draw: Any) -> None:
    size = draw(
        st.sampled_from([b"zz", b"-1", b"1" * 20, b"", b"0x10", b" 5", b"ffffffffffffffffff"])
    )
    a.framing = "chunked"
    a.fields = [f for f in a.fields if f[0] not in (b"Content-Length", b"Connection")]
    a.fields.append((b"Transfer-Encoding", b"chunked"))
    a.chunks = [size + b"\r\n" + a.body + b"\r\n", b"0\r\n\r\n"]
    a.then = "close"
    a.demand(ERROR)


def many_small_chunks(a: Answer, draw: Any) -> None:
    if a.framing != "chunked" or a.chunks is not None:
        return  # not chunked, or its chunks are already someone else's
    size = draw(st.integers(1, 4))
    ext = draw(st.sampled_from([b"", b";a=b", b";" + b"x" * 200]))
    a.chunks = [
        b"%x%s\r\n%s\r\n" % (len(a.body[i : i + size]), ext, a.body[i : i + size])
        for i in range(0, len(a.body), size)
    ] + [b"0\r\n\r\n"]


def obs_fold(a: Answer, draw: Any) -> None:
    a.fields.insert(1, (b"X-Folded", b"first\r\n second"))
    a.demand(EITHER)


def bare_lf(a: Answer, draw: Any) -> None:
    a.status_suffix = b"\nX-Bare: lf"
    a.demand(EITHER)


def nul_in_a_field(a: Answer, draw: Any) -> None:
    where = draw(st.sampled_from(["name", "value"]))
    a.fields.insert(1, (b"X-N\x00ul", b"v") if where == "name" else (b"X-Nul", b"a\x00b"))
    a.demand(EITHER)


def huge_length_claim(a: Answer, draw: Any) -> None:
    a.fields = [f for f in a.fields if f[0] not in (b"Content-Length", b"Transfer-Encoding")]
    a.fields.append(
        (b"Content-Length", b"%d" % draw(st.sampled_from([MAX_RESPONSE + 1, 10**12, 2**63])))
    )
    a.framing = "length"
    a.then = "close"
    a.demand(ERROR)


def huge_chunk_claim(a: Answer, draw: Any) -> None:
    a.framing = "chunked"
    a.fields = [f for f in a.fields if f[0] not in (b"Content-Length", b"Connection")]
    a.fields.append((b"Transfer-Encoding", b"chunked"))
    a.chunks = [b"%x\r\n" % draw(st.sampled_from([MAX_RESPONSE + 1, 2**40])) + a.body]
    a.then = "close"
    a.demand(ERROR)


def truncated(a: Answer, draw: Any) -> None:
    a.cut = draw(st.integers(0, len(a.core()) - 1))
    a.then = "close"
    a.demand(ERROR)


def interim_answers(a: Answer, draw: Any) -> None:
    count = draw(st.sampled_from([1, 2, 5, 32, 33, 200]))
    line = draw(
        st.sampled_from(
            [b"HTTP/1.1 100 Continue\r\n\r\n", b"HTTP/1.1 103 Early\r\nLink: <a>\r\n\r\n"]
        )
    )
    a.before = line * count
    if count > 32:
        a.then = "close"
        a.demand(ERROR)


def stray_bytes(a: Answer, draw: Any) -> None:
    other = msgpack.packb(["not", "yours"])
    a.after = draw(
        st.sampled_from(
            [
                b"x",
                b"\r\n",
                # an earlier call's answer (the server echoes ids: not this call's)
                b"HTTP/1.1 200 OK\r\nX-Request-Id: earlier\r\nContent-Length: %d\r\n\r\n%s"
                % (len(other), other),
                b"\x00" * 100,
            ]
        )
    )
    # an empty line before a status line is ignored (RFC 9112 2.2): not an answer
    a.reused_ok = a.after == b"\r\n"
    if a.framing == "close":
        a.demand(EITHER)  # past a close-framed answer: part of its body


def late_bytes(a: Answer, draw: Any) -> None:
    other = msgpack.packb(["late"])
    # a duplicate of an earlier call's answer: its id is not this call's
    a.late = b"HTTP/1.1 200 OK\r\nX-Request-Id: earlier\r\nContent-Length: %d\r\n\r\n%s" % (
        len(other),
        other,
    )
    a.reused_ok = False
    if a.framing == "close":
        a.demand(EITHER)  # part of the body, if it comes before the close


def long_reason(a: Answer, draw: Any) -> None:
    size = draw(st.sampled_from([100, 60_000, 70_000, 1_000_000]))
    a.reason = b"r" * size
    if size > 60_000:
        a.then = "close"
        a.demand(ERROR)


def huge_field(a: Answer, draw: Any) -> None:
    a.fields.insert(0, (b"X-Huge", b"v" * 70_000))
    a.then = "close"
    a.demand(ERROR)


def http10(a: Answer, draw: Any) -> None:
    a.version = b"HTTP/1.0"
    a.reused_ok = False
    if a.framing == "chunked":
        a.demand(EITHER)


def connection_close(a: Answer, draw: Any) -> None:
    a.fields.append((b"Connection", b"close"))
    a.reused_ok = False


def msgpack_bomb(a: Answer, draw: Any) -> None:
    kind = draw(st.sampled_from(["claim", "dense", "deep"]))
    if kind == "claim":
        body = b"\xdd\xff\xff\xff\xff\xc0"  # an array of 2**32-1 elements, one present
    elif kind == "dense":
        body = msgpack.packb([{}] * 200_000)
    else:
        body = b"\x91" * 5000 + b"\xc0"
    set_body(a, body)
    a.demand(ERROR, decoding=True)


def gzip_body(a: Answer, draw: Any) -> None:
    bomb = draw(st.booleans())
    body = gzip.compress(b"\x00" * (MAX_RESPONSE * 4) if bomb else a.body)
    set_body(a, body)
    a.fields.append((b"Content-Encoding", b"gzip"))
    if bomb:
        a.demand(ERROR, decoding=True)


def set_body(a: Answer, body: bytes) -> None:
    a.body = body
    a.chunks = None
    a.fields = [
        (name, b"%d" % len(body) if name == b"Content-Length" else value)
        for name, value in a.fields
    ]


PERTURBATIONS: dict[str, Callable[[Answer, Any], None]] = {
    f.__name__: f
    for f in (
        two_lengths_differ,
        two_lengths_equal,
        length_and_chunked,
        bad_chunk_size,
        many_small_chunks,
        obs_fold,
        bare_lf,
        nul_in_a_field,
        huge_length_claim,
        huge_chunk_claim,
        truncated,
        interim_answers,
        stray_bytes,
        late_bytes,
        long_reason,
        huge_field,
        http10,
        connection_close,
        msgpack_bomb,
        gzip_body,
    )
}
# the order they apply in: the body first, then its framing, the wire form last
_FIRST = ("gzip_body", "msgpack_bomb")
_LAST = ("truncated",)

values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.text(max_size=20)
    | st.binary(max_size=40),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner, max_size=4)
    ),
    max_leaves=8,
)
_ids = itertools.count()


@st.composite
def answers(draw: Any) -> Answer:
    answer = base_answer(
        # unique, and of one length: a case's draws must not depend on how many ran before
        draw(values),
        f"case-{next(_ids):09d}",
        draw(st.sampled_from(["length", "chunked", "close"])),
    )
    names = draw(st.lists(st.sampled_from(sorted(PERTURBATIONS)), max_size=3, unique=True))
    names.sort(key=lambda n: (n not in _FIRST, n in _LAST))
    for name in names:
        PERTURBATIONS[name](answer, draw)
    return answer


# -- the harness -----------------------------------------------------------------------


class Harness:
    """One peer, one client per transport, the ticker and the counts of outcomes."""

    def __init__(self, peer: Peer, transport: str, max_response: int = MAX_RESPONSE) -> None:
        self.peer = peer
        self.max_response = max_response
        self.transport = transport
        self.client = self._new_client()
        self.ticker = Ticker()
        self.outcomes: dict[str, int] = {}
        self.rss = _rss()

    def _new_client(self) -> Client:
        return Client(
            self.peer.url,
            transport=self.transport,
            pool_size=1,
            max_response_size=self.max_response,
            retry=Retry(attempts=1),
            timeout=Timeout(total=DEADLINE),
        )

    def close(self) -> None:
        self.ticker.stop()
        self.client.close()

    def _call(self, answer: Answer, wire: bytes) -> tuple[Any, BaseException | None, float, float]:
        """The case's call: its value or error, how late past the deadline it
        ended and the ticker's worst wait, both less this process's run-queue
        delay (tests/support/offcpu.py), so a loaded machine does not make them late."""
        # a cut answer ends the peer's bytes: late ones would complete its body
        # (HOSTILE_SEED=3308590434: 18 of 19 bytes, then the late answer's "H")
        late = answer.late if answer.cut is None else b""
        script = Peer.script(wire, then=answer.then, late=late, late_ms=2)
        limit = ANSWER_DEADLINE if answer.expect == VALUE else DEADLINE
        self.ticker.reset()
        lateness = Lateness()
        deadline = time.monotonic() + limit
        got: Any = None
        error: BaseException | None = None
        try:
            got = self.client.call(
                "hostile.case",
                script,
                headers=Peer.SCRIPT,
                request_id=answer.request_id,
                timeout=Timeout(total=limit),
            )
        except rpcclient.RPCError as exc:
            error = exc
        late = lateness.late(deadline)
        lateness.stop()
        return got, error, late, self.ticker.current()

    def run(self, answer: Answer) -> None:
        wire = answer.wire()
        what = f"HOSTILE_SEED={SEED} {answer!r}"[:800] + f"\nwire={wire[:300]!r}"
        # One try: the time the process waited for a CPU is left out of both
        # figures; a loop that does not yield or see its deadline is late on
        # the CPU, and that still counts.
        got, error, late, gap = self._call(answer, wire)
        assert late < SLACK, f"{late * 1000:.0f} ms past the deadline: {what}"
        assert gap < SLACK, f"ticker starved {gap * 1000:.0f} ms: {what}"
        if error is None:
            assert answer.expect != ERROR, f"accepted: {what}"
            assert got == answer.value, f"wrong value {got!r}: {what}"
            self.outcomes["value"] = self.outcomes.get("value", 0) + 1
        else:
            assert answer.expect != VALUE, f"{error!r}: {what}"
            name = type(error).__name__
            self.outcomes[name] = self.outcomes.get(name, 0) + 1
        if answer.late and answer.cut is None:
            time.sleep(0.02)  # the late bytes are on the connection by now
        # the probe may meet the peer's close after an answer it accepted
        # (keep-alive's race, not the case's): it is idempotent, so retried
        probe = self.client.call(
            "hostile.probe", None, timeout=5.0, idempotent=True, retry=Retry(attempts=3)
        )
        # an error of the exchange ends its connection; one in decoding a
        # well-framed body (msgpack, Content-Encoding: its size) need not
        decoding = isinstance(error, rpcclient.DecodeError | rpcclient.ResponseTooLarge)
        exchange_error = error is not None and (answer.framing_trouble or not decoding)
        if exchange_error or not answer.reused_ok:
            assert probe[1] == 1, f"connection reused after {error!r}: {what}"

    def memory_growth(self) -> int:
        """Bytes the resident set grew by since the start (what stayed, not a case's peak:
        tests/wire/test_framing.py measures those per body shape)."""
        return _rss() - self.rss


def _rss() -> int:
    gc.collect()
    # freed memory glibc keeps in its arenas is not growth: give it back first
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * resource.getpagesize()


@pytest.fixture(scope="module")
def peer() -> Iterator[Peer]:
    with Peer() as started:
        yield started


@pytest.fixture
def gevent_harness(peer: Peer) -> Iterator[Harness]:
    harness = Harness(peer, "gevent")
    yield harness
    harness.close()


# a falsifying case with a large body would otherwise hide its own failure
# behind this warning (warnings are errors in the suite)
@pytest.mark.filterwarnings("ignore:Generating overly large repr")
def test_generated_answers_on_the_gevent_transport(gevent_harness: Harness) -> None:
    """HOSTILE_EXAMPLES generated cases (2,000 by default), seeded from the run's header."""

    @seed(SEED)
    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        phases=[Phase.generate, Phase.shrink],
        suppress_health_check=list(HealthCheck),
    )
    @given(answers())
    def case(answer: Answer) -> None:
        gevent_harness.run(answer)

    case()
    print(
        f"HOSTILE_SEED={SEED}: {EXAMPLES} cases, outcomes {gevent_harness.outcomes}, "
        f"resident set "
        f"{gevent_harness.memory_growth() / 2**20:+.1f} MiB"
    )
    assert gevent_harness.outcomes.get("value", 0) > EXAMPLES // 10  # not all refused
    # hypothesis keeps ~12 KiB per case it ran; the client's own growth is
    # measured without it (test_scripted.py::test_no_growth_over_many_cases)
    assert gevent_harness.memory_growth() < 32 * 2**20 + EXAMPLES * 24 * 1024
