"""Retries: one immutable policy, a budget per endpoint group, and the rules.

The rules (README.rst, "Retries"), applied by the client after each attempt:

1. An attempt that provably never reached the server (``may_have_reached_server``
   is False: pool timeout, DNS failure, connect refused or timed out, a
   connection that failed before one byte left) may be retried, whatever
   the call.
2. An attempt that may have reached the server is retried only when the
   call is idempotent (``idempotent=True`` on the call, or the method listed
   in the client's ``idempotent=`` set).
3. A 503 is retried only for idempotent calls, or when the server's error
   envelope says the call was not run (``data: {"not_run": true}``, as the
   bundled server says when it sheds load); ``Retry-After`` is honoured
   when it fits in what is left of the deadline and is at most
   ``retry_after_max`` (a longer or infinite one ends the retries: the 503
   is raised, never slept on without bound).
4. Never past the deadline: a backoff that would end after it is not slept
   and no attempt starts after it. Never beyond the group's retry budget.
5. Exactly-once (DEDUP_PROTOCOL, issue 15): a call that is not idempotent
   is re-sent after a read timeout, a lost connection or a truncated or
   malformed answer when the host of that attempt last advertised
   ``X-Rpc-Dedup: <scope>; window=<s>`` and the call is younger than the
   window minus :data:`DEDUP_MARGIN` (:func:`dedup_resend_scope`, a pure
   decision). The re-send carries the same request id, ``X-Rpc-Attempt``,
   ``X-Rpc-Dedup-Scope`` and ``X-Rpc-Dedup-Age-Ms`` and goes to a host of
   that scope: the server replays the first execution's answer instead of
   running it twice. Rules 1-4 still bound it.

Backoff is exponential with full jitter (a uniform draw in
``[0, min(cap, base * 2**n)]``): spread out retries do not arrive together.

Decisions apart from actions: :func:`decide_retry` applies rules 1-4 to
plain values (no clock, no sleep, no I/O, no random draw: the caller passes
the time left and the jitter draw) and answers with a :class:`RetryDecision`.
The client does what the answer asks: it ejects a host that failed to
connect (before asking), sleeps the delay, then takes a token from the
group's budget (after sleeping: a retry the deadline stops costs none).
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass, replace
from time import monotonic
from typing import Any

from ..exceptions import (
    ConnectionLost,
    HTTPStatusError,
    ProtocolError,
    ReadTimeout,
    RemoteError,
    ResponseTooLarge,
    RPCError,
)
from .models import reduce_by_init_fields

__all__ = ["NO_RETRY", "Retry", "RetryBudget"]

#: seconds kept clear of a dedup window's end: the server must still hold
#: the first attempt's record when the re-send arrives (clock skew between
#: our age and its arrival time, the re-send's own transit)
DEDUP_MARGIN = 1.0
_SCOPE = re.compile(r"[A-Za-z0-9._-]{1,64}\Z")


@dataclass(frozen=True, slots=True)
class Retry:
    """How often and how patiently a call is re-tried (an immutable value).

    ``attempts`` counts every try, the first included (1 = no retry; an
    int >= 1). ``backoff`` is the first retry's backoff ceiling, doubled for
    each later retry up to ``backoff_max`` (both >= 0; each wait is a
    uniform draw below its ceiling). ``retry_503=False`` never retries a
    503, even one that says it did not run. ``budget_ratio`` (in [0, 1])
    and ``budget_min_per_second`` (>= 0) size each endpoint group's
    :class:`RetryBudget`: retries may add at most that share of calls, plus
    a small steady allowance, so a dead service never sees a retry storm.
    ``retry_after_max`` (finite, >= 0) is the longest ``Retry-After`` a
    retry waits for: a 503 asking for longer is raised as it is (even with
    no total deadline). A value out of range raises ValueError.
    """

    attempts: int = 3
    backoff: float = 0.01
    backoff_max: float = 0.5
    retry_503: bool = True
    budget_ratio: float = 0.2
    budget_min_per_second: float = 10.0
    retry_after_max: float = 5.0

    def __post_init__(self) -> None:
        if not isinstance(self.attempts, int) or self.attempts < 1:
            raise ValueError(f"Retry.attempts must be an int >= 1, not {self.attempts!r}")
        if self.backoff < 0 or self.backoff_max < 0:
            raise ValueError("Retry backoff values must be >= 0")
        if not 0 <= self.budget_ratio <= 1 or self.budget_min_per_second < 0:
            raise ValueError("Retry budget_ratio must be in [0, 1], budget_min_per_second >= 0")
        if not 0 <= self.retry_after_max < float("inf"):
            raise ValueError(
                f"Retry.retry_after_max must be finite and >= 0, not {self.retry_after_max!r}"
            )

    def with_(self, **changes: Any) -> Retry:
        return replace(self, **changes)

    def backoff_ceiling(self, retry_number: int) -> float:
        """The longest backoff before retry ``retry_number`` (1 = first retry)."""
        ceiling: float = min(self.backoff_max, self.backoff * (2 ** (retry_number - 1)))
        return ceiling

    def delay(self, retry_number: int, rng: random.Random | None = None) -> float:
        """Full-jitter backoff before retry ``retry_number`` (1 = first retry):
        a uniform draw from ``rng`` (None: the ``random`` module) below
        :meth:`backoff_ceiling`."""
        return (rng or random).uniform(0.0, self.backoff_ceiling(retry_number))

    def retryable(self, exc: RPCError, idempotent: bool) -> bool:
        """Whether rules 1-3 allow another attempt after ``exc`` for a call
        that is ``idempotent`` or not (attempts, deadline and budget aside:
        :func:`decide_retry` adds those)."""
        status = getattr(exc, "status", None)
        if status == 503 and isinstance(exc, RemoteError | HTTPStatusError):
            if not self.retry_503:
                return False
            return idempotent or was_not_run(exc)
        if isinstance(exc, RemoteError | HTTPStatusError):
            return False  # the server answered: its verdict stands
        if not exc.may_have_reached_server:
            return True
        return idempotent

    def __reduce__(self) -> tuple[Any, ...]:
        return reduce_by_init_fields(self)


def was_not_run(exc: RPCError) -> bool:
    """The server's envelope says the call did not run (load shed, shutdown)."""
    data = getattr(exc, "data", None)
    return isinstance(data, dict) and data.get("not_run") is True


NO_RETRY = Retry(attempts=1)

#: why :func:`decide_retry` refused a retry (``RetryDecision.refused``)
REFUSED_ATTEMPTS = "attempts"  # the policy's attempts are used up
REFUSED_RULES = "rules"  # rules 1-3: the error must not be re-sent
REFUSED_RETRY_AFTER = "retry_after"  # rule 3: a Retry-After above retry_after_max
REFUSED_DEADLINE = "deadline"  # rule 4: the wait would end at or after the deadline


@dataclass(frozen=True, slots=True)
class RetryDecision:
    """What :func:`decide_retry` answers: retry after ``delay`` seconds, or not.

    ``refused`` is None for a retry, else one of the ``REFUSED_*`` reasons
    (and ``delay`` is 0). A retry still needs a token of the group's budget,
    which the caller takes after sleeping (rule 4).
    """

    refused: str | None
    delay: float = 0.0

    @property
    def retry(self) -> bool:
        return self.refused is None


_REFUSE_ATTEMPTS = RetryDecision(REFUSED_ATTEMPTS)
_REFUSE_RULES = RetryDecision(REFUSED_RULES)
_REFUSE_RETRY_AFTER = RetryDecision(REFUSED_RETRY_AFTER)
_REFUSE_DEADLINE = RetryDecision(REFUSED_DEADLINE)


def decide_retry(  # noqa: PLR0917 - a pure decision, its inputs spelled out
    policy: Retry,
    exc: RPCError,
    attempt: int,
    idempotent: bool,
    remaining: float | None,
    jitter: float,
) -> RetryDecision:
    """Whether attempt number ``attempt`` (1 = the first), ended by ``exc``,
    may be followed by another, and after how long (rules 1-4, budget aside).

    Pure: ``remaining`` is the seconds left before the call's deadline (None:
    no deadline), ``jitter`` a uniform draw in ``[0, 1)`` that scales the
    backoff ceiling (``policy.backoff_ceiling``); ``idempotent`` is True for
    an idempotent call and for a deduplicated re-send (rule 5). The delay is
    the larger of the jittered backoff and the error's ``retry_after``; a
    ``retry_after`` above ``policy.retry_after_max`` (or NaN) refuses, as
    does a delay that reaches ``remaining``.
    """
    if attempt >= policy.attempts:
        return _REFUSE_ATTEMPTS
    if not policy.retryable(exc, idempotent):
        return _REFUSE_RULES
    delay = policy.backoff_ceiling(attempt) * jitter
    retry_after = getattr(exc, "retry_after", None)
    if retry_after is not None:
        if not retry_after <= policy.retry_after_max:  # also NaN and inf
            return _REFUSE_RETRY_AFTER  # the server asks for longer than we wait
        delay = max(delay, retry_after)
    if remaining is not None and delay >= remaining:
        return _REFUSE_DEADLINE
    return RetryDecision(None, delay)


def parse_dedup(value: str | None) -> tuple[str, float] | None:
    """``(scope, window seconds)`` from an ``X-Rpc-Dedup`` header, or None
    when absent or malformed (a bad advertisement is no advertisement)."""
    if not value:
        return None
    scope, sep, rest = value.partition(";")
    scope = scope.strip()
    if not sep or not _SCOPE.match(scope):
        return None
    window: float | None = None
    for param in rest.split(";"):
        key, eq, raw = param.partition("=")
        if eq and key.strip().lower() == "window":
            try:
                window = float(raw.strip())
            except ValueError:
                return None
    if window is None or not 0 < window < float("inf"):
        return None
    return scope, window


def dedup_resend_scope(  # noqa: PLR0917 - a pure decision, its inputs spelled out
    exc: RPCError,
    idempotent: bool,
    scope: str | None,
    window: float,
    age: float,
    call_scope: str | None,
) -> str | None:
    """The dedup scope a call may be re-sent under after ``exc``, or None.

    Pure (no clock, no I/O): ``scope``/``window`` are what the host of the
    ended attempt last advertised, ``age`` the seconds since the call's first
    attempt, ``call_scope`` the scope of an earlier re-send of this call
    (every re-send of one call stays in one scope). Only for what rule 2
    would refuse: a non-idempotent call whose attempt may have reached the
    server and ended without an answer to trust.
    """
    if idempotent or scope is None:
        return None
    if call_scope is not None and scope != call_scope:
        return None
    if not isinstance(exc, ReadTimeout | ConnectionLost | ProtocolError):
        return None
    if isinstance(exc, ResponseTooLarge) or not exc.may_have_reached_server:
        return None  # a replay would be as large; never reached: rule 1 covers it
    if not age < window - DEDUP_MARGIN:
        return None
    return scope


class RetryBudget:
    """A token bucket shared by one endpoint group (Finagle's RetryBudget idea).

    Each call deposits ``ratio`` tokens, time deposits ``min_per_second``
    tokens a second, each retry withdraws one; the balance is capped at
    ``cap``. So over any stretch, retries <= ratio * calls + min_per_second *
    seconds + cap. Not thread-safe, greenlet-safe (no switch inside).
    """

    __slots__ = ("_balance", "_stamp", "cap", "min_per_second", "ratio", "refused")

    def __init__(self, ratio: float, min_per_second: float, cap: float | None = None) -> None:
        self.ratio = ratio
        self.min_per_second = min_per_second
        self.cap = cap if cap is not None else max(10.0, min_per_second)
        self._balance = self.cap
        self._stamp = monotonic()
        self.refused = 0

    def deposit(self) -> None:
        balance = self._balance + self.ratio
        self._balance = balance if balance < self.cap else self.cap

    def withdraw(self) -> bool:
        now = monotonic()
        balance = min(self.cap, self._balance + (now - self._stamp) * self.min_per_second)
        self._stamp = now
        if balance >= 1.0:
            self._balance = balance - 1.0
            return True
        self._balance = balance
        self.refused += 1
        return False

    def refund(self) -> None:
        """Give back a token :meth:`withdraw` gave for a retry that never went."""
        self._balance = min(self.cap, self._balance + 1.0)

    @property
    def balance(self) -> float:
        return self._balance


def parse_retry_after(value: str | None) -> float | None:
    """Seconds from a ``Retry-After`` header (delta-seconds only), or None."""
    if not value:
        return None
    try:
        seconds = float(value.strip())
    except ValueError:
        return None  # an HTTP date: not worth a clock comparison here
    return seconds if seconds >= 0 else None  # NaN and negatives: no advice
