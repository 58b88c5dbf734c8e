"""The retry decision as a pure function (issue 17, "decisions apart from actions").

:func:`rpcclient._core.retry.decide_retry` is checked without sockets, clock or
sleep: first every combination of a discrete grid against the rules table
of README.rst ("Retries"), row by row, spelled out again here on purpose
(the table, not the code, is the reference); then hypothesis over the
continuous inputs (backoff, jitter, time left, Retry-After) for the
arithmetic. The client's use of it (sleep, ejection, budget) is covered by
tests/wire/test_retry.py and tests/wire/test_policy.py on loopback servers.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rpcclient import exceptions as E
from rpcclient._core import retry as _retry
from rpcclient._core.retry import (
    REFUSED_ATTEMPTS,
    REFUSED_DEADLINE,
    REFUSED_RETRY_AFTER,
    REFUSED_RULES,
    Retry,
    RetryDecision,
    decide_retry,
)

NEVER_REACHED, MAY_HAVE_RUN, ANSWERED_503, NOT_RUN_503, ANSWERED = (
    "never reached",
    "may have run",
    "503",
    "503 not run",
    "answered",
)


def _err(factory: Callable[[], E.RPCError], retry_after: float | None = None) -> E.RPCError:
    exc = factory()
    exc.retry_after = retry_after
    return exc


#: (what happened, the README row it falls under, how to build the error)
ERRORS: list[tuple[str, str, Callable[[], E.RPCError]]] = [
    ("pool timeout", NEVER_REACHED, lambda: E.PoolTimeout("x")),
    ("connect refused", NEVER_REACHED, lambda: E.ConnectError("x")),
    ("connect timeout", NEVER_REACHED, lambda: E.ConnectTimeout("x")),
    (
        "lost before a byte left",
        NEVER_REACHED,
        lambda: E.ConnectionLost("x", may_have_reached_server=False),
    ),
    ("read timeout", MAY_HAVE_RUN, lambda: E.ReadTimeout("x")),
    ("lost after the write", MAY_HAVE_RUN, lambda: E.ConnectionLost("x")),
    ("malformed answer", MAY_HAVE_RUN, lambda: E.ProtocolError("x")),
    ("answer too large", MAY_HAVE_RUN, lambda: E.ResponseTooLarge("x")),
    ("undecodable answer", MAY_HAVE_RUN, lambda: E.DecodeError("x")),
    (
        "409 OutcomeUnknown",
        ANSWERED,
        lambda: E.RemoteError("x", type="OutcomeUnknown", status=409),
    ),
    (
        "409 RequestIdReused",
        ANSWERED,
        lambda: E.RemoteError("x", type="RequestIdReused", status=409),
    ),
    ("500 envelope", ANSWERED, lambda: E.RemoteError("x", type="ValueError", status=500)),
    ("method not found", ANSWERED, lambda: E.MethodNotFound("x", type="MethodNotFound")),
    ("proxy 502", ANSWERED, lambda: E.HTTPStatusError("x", status=502)),
    ("404 status", ANSWERED, lambda: E.HTTPStatusError("x", status=404)),
    (
        "503 shed",
        NOT_RUN_503,
        lambda: E.RemoteError("x", type="Overloaded", status=503, data={"not_run": True}),
    ),
    (
        "503 dedup scope mismatch",
        NOT_RUN_503,
        lambda: E.RemoteError("x", type="DedupScopeMismatch", status=503, data={"not_run": True}),
    ),
    ("503 envelope", ANSWERED_503, lambda: E.RemoteError("x", type="Busy", status=503)),
    (
        "503 not_run not True",
        ANSWERED_503,
        lambda: E.RemoteError("x", type="Busy", status=503, data={"not_run": 1}),
    ),
    (
        "503 envelope, odd data",
        ANSWERED_503,
        lambda: E.RemoteError("x", type="B", status=503, data=[1]),
    ),
    ("proxy 503", ANSWERED_503, lambda: E.HTTPStatusError("x", status=503)),
]


def _table_allows(row: str, idempotent: bool, retry_503: bool) -> bool:
    """README.rst's "re-sent?" column (idempotent includes a dedup re-send)."""
    if row == NEVER_REACHED:
        return True  # any call: it provably never reached the server
    if row == MAY_HAVE_RUN:
        return idempotent
    if row == NOT_RUN_503:
        return retry_503
    if row == ANSWERED_503:
        return retry_503 and idempotent
    return False  # the server answered: its verdict stands


@pytest.mark.parametrize(("what", "row", "factory"), ERRORS, ids=[e[0] for e in ERRORS])
def test_every_row_of_the_rules_table(
    what: str, row: str, factory: Callable[[], E.RPCError]
) -> None:
    """Every combination of a discrete grid, decided as the table says."""
    grid = itertools.product(
        [1, 2, 3, 5],  # attempts
        [1, 2, 3, 4, 5],  # attempt that just ended
        [False, True],  # idempotent
        [False, True],  # retry_503
        [None, 0.0, 0.5, 5.0, 5.5, math.inf, math.nan],  # Retry-After
        [None, 0.0, 0.2, 1.0, 100.0],  # seconds left before the deadline
        [0.0, 0.5, 0.999],  # jitter draw
    )
    for attempts, attempt, idempotent, retry_503, retry_after, remaining, jitter in grid:
        policy = Retry(attempts=attempts, backoff=0.1, backoff_max=0.3, retry_503=retry_503)
        exc = _err(factory, retry_after)
        got = decide_retry(policy, exc, attempt, idempotent, remaining, jitter)
        case = f"{what}: {attempt}/{attempts} idem={idempotent} 503={retry_503} "
        case += f"ra={retry_after} left={remaining} jitter={jitter} -> {got}"
        if attempt >= attempts:
            assert got.refused == REFUSED_ATTEMPTS, case
            continue
        if not _table_allows(row, idempotent, retry_503):
            assert got.refused == REFUSED_RULES, case
            continue
        if retry_after is not None and not retry_after <= policy.retry_after_max:
            # longer than retry_after_max, infinite or NaN: the answer stands
            assert got.refused == REFUSED_RETRY_AFTER, case
            continue
        backoff = jitter * min(0.3, 0.1 * 2 ** (attempt - 1))
        delay = backoff if retry_after is None else max(backoff, retry_after)
        if remaining is not None and delay >= remaining:
            assert got.refused == REFUSED_DEADLINE, case  # never past the deadline
            continue
        assert got.retry and got.refused is None, case
        assert got.delay == delay, case


def test_the_table_rows_are_all_exercised() -> None:
    assert {row for _, row, _ in ERRORS} == {
        NEVER_REACHED,
        MAY_HAVE_RUN,
        ANSWERED_503,
        NOT_RUN_503,
        ANSWERED,
    }


_errors = st.sampled_from([factory for _, _, factory in ERRORS])
_seconds = st.floats(min_value=0.0, max_value=1e6, allow_nan=False, allow_infinity=False)


@st.composite
def _policies(draw: Any) -> Retry:
    return Retry(
        attempts=draw(st.integers(1, 50)),
        backoff=draw(st.floats(0.0, 10.0)),
        backoff_max=draw(st.floats(0.0, 10.0)),
        retry_503=draw(st.booleans()),
        retry_after_max=draw(st.floats(0.0, 100.0)),
    )


@settings(max_examples=2000, derandomize=True, deadline=None)
@given(
    policy=_policies(),
    factory=_errors,
    attempt=st.integers(1, 60),
    idempotent=st.booleans(),
    remaining=st.none() | _seconds,
    jitter=st.floats(0.0, 1.0, exclude_max=True),
    retry_after=st.none() | st.just(math.nan) | st.floats(min_value=0.0),
)
def test_decision_bounds(
    policy: Retry,
    factory: Callable[[], E.RPCError],
    attempt: int,
    idempotent: bool,
    remaining: float | None,
    jitter: float,
    retry_after: float | None,
) -> None:
    """Whatever the inputs: a retry never outlives the deadline, never waits
    less than Retry-After nor more than the larger of the backoff ceiling
    and Retry-After, and the same inputs give the same answer."""
    exc = _err(factory, retry_after)
    got = decide_retry(policy, exc, attempt, idempotent, remaining, jitter)
    assert isinstance(got, RetryDecision)
    assert got == decide_retry(policy, exc, attempt, idempotent, remaining, jitter)
    assert got.retry == (got.refused is None)
    if not got.retry:
        assert got.delay == 0.0
        return
    assert attempt < policy.attempts
    assert policy.retryable(exc, idempotent)
    ceiling = policy.backoff_ceiling(attempt)
    assert got.delay >= 0.0
    if retry_after is None:
        assert got.delay <= ceiling
    else:
        assert retry_after <= policy.retry_after_max
        assert retry_after <= got.delay <= max(ceiling, retry_after)
    if remaining is not None:
        assert got.delay < remaining


def test_the_jitter_scales_the_ceiling_as_the_old_draw_did() -> None:
    """``random.uniform(0, c)`` is ``c * random.random()``: the client passes
    ``random.random()`` as the jitter, so its backoffs are the draws they were."""
    import random

    policy = Retry(attempts=6, backoff=0.05, backoff_max=0.4)
    for attempt in range(1, 6):
        a, b = random.Random(attempt), random.Random(attempt)
        got = decide_retry(policy, E.ConnectError("x"), attempt, False, None, a.random())
        assert got.delay == policy.delay(attempt, b)


def test_no_clock_sleep_or_draw_inside(monkeypatch: pytest.MonkeyPatch) -> None:
    """The decision reads nothing but its arguments (interpreted build: the
    compiled module's globals cannot be patched, there this only decides)."""

    def forbidden(*_: object) -> float:
        raise AssertionError("decide_retry must not read the clock or draw")

    monkeypatch.setattr(_retry, "monotonic", forbidden)
    monkeypatch.setattr(_retry.random, "random", forbidden)
    monkeypatch.setattr(_retry.random, "uniform", forbidden)
    exc = _err(lambda: E.RemoteError("x", type="Busy", status=503), 0.2)
    got = decide_retry(Retry(), exc, 1, True, 1.0, 0.5)
    assert got == RetryDecision(None, 0.2)
