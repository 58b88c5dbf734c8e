"""Endpoint groups: several hosts for one service, and how a call picks one.

Picking is "power of two choices" on the least outstanding calls: draw two
hosts at random, take the one with fewer calls in flight. It needs no global
view and keeps a slow host from piling up work.

A host that fails to connect ``eject_after`` times in a row is ejected: it
rests for ``cooldown`` seconds, then exactly one call at a time probes it
(the first pick after the rest takes the probe; every other pick goes to
the hosts in service). A probe that connects brings the host back; one whose
connect fails rests it again at once. When every host of the group is out
of service, one call at a time probes the host whose rest ends first and
every other call fails fast with ConnectError (nothing sent): a host that
drops SYNs costs one connect bound per cool-down, not one per call. A retry
never picks a host the call already tried while another is available.

Two more rules work on outcomes (both only in groups of two hosts or more):

- ``balance="p2c-ewma"`` (opt-in; ``"p2c"`` is the default) compares the two drawn hosts by
  Finagle's peak-EWMA cost, ``latency * (outstanding + 1)``: each host's
  latency estimate jumps to a new peak at once and otherwise decays with
  time (``tau`` seconds), toward each new sample and, while the host gets
  no calls, toward zero (so a host once slow is tried again). A failure
  never lowers the estimate (a host failing fast must not attract calls).
  A host with no sample yet costs nothing while idle and a large penalty
  once a call is in flight. ``balance="p2c"`` compares outstanding calls
  only. (Not the default: one slow sample, such as a first call's connect,
  starves a host until its estimate decays, ``tau * ln(ratio)``; and a
  refusing host is tried once and then avoided rather than ejected.)
- ``outlier=OutlierEjection(...)`` ejects by success rate, failure
  percentage and latency once per interval (see rpcclient._policy.outlier), with
  the same rest-then-probe return as a connect-failure ejection; each
  host's ``eject_reason`` says which rule ejected it last. For the latency
  rule every host keeps a uniform sample (reservoir sampling) of at most
  ``_SAMPLES`` of its attempts' latencies over the interval: a bounded
  list, one store per attempt and, past ``_SAMPLES`` attempts, one random
  draw; the medians are taken once per interval. A host ejected for
  latency comes back only if its probe answers within the rule's factor
  of its peers' median; a slower probe rests it again, longer.
"""

from __future__ import annotations

import ipaddress
import random
import socket as _socket
from collections.abc import Callable, Sequence
from math import exp
from time import monotonic, perf_counter
from typing import Any

from .._policy.outlier import OutlierEjection, median
from .._policy.outlier import judge as judge_interval
from ..exceptions import (
    ConnectError,
    ConnectionLost,
    HTTPStatusError,
    PoolTimeout,
    ProtocolError,
    RemoteError,
    ResponseTooLarge,
    RPCTimeout,
)
from .models import Endpoint
from .retry import RetryBudget, parse_dedup

BALANCES = ("p2c-ewma", "p2c")
#: the cost of a host with no latency sample yet, per call in flight (Finagle's idea)
_PENALTY = 1e6
#: latency samples a host keeps per outlier interval: its median's rank is then
#: within a few percentiles of the true median, and the judgement sorts 64 floats
_SAMPLES = 64

__all__ = ["EndpointGroup", "Host", "ResolvingGroup", "resolve_addresses"]


class Host:
    """One endpoint of a group and its live state."""

    __slots__ = (
        "calls",
        "connect_failures",
        "dedup_header",
        "dedup_scope",
        "dedup_window",
        "eject_reason",
        "ejected_until",
        "ejections",
        "endpoint",
        "ewma",
        "ewma_stamp",
        "failed",
        "failures",
        "latency",
        "latency_samples",
        "latency_seen",
        "ok",
        "outstanding",
        "probing",
        "streak",
        "success_rate",
    )

    def __init__(self, endpoint: Endpoint) -> None:
        self.endpoint = endpoint
        self.outstanding = 0
        self.calls = 0
        self.failures = 0
        self.connect_failures = 0  # consecutive
        #: 0.0 in service; else out of service, resting until then (then probed)
        self.ejected_until = 0.0
        self.ejections = 0
        self.probing = False  # a call is probing it back (see EndpointGroup)
        self.eject_reason = ""  # why it was ejected last ("" never)
        self.ewma = 0.0  # peak-EWMA latency, seconds (0.0: no sample yet)
        self.ewma_stamp = 0.0  # perf_counter() of its last update
        self.ok = 0  # attempts that succeeded in this outlier interval
        self.failed = 0  # and those that failed (see rpcclient._policy.outlier)
        self.streak = 0  # outlier ejections in a row (their time grows with it)
        self.success_rate = -1.0  # over the last interval judged (-1.0: no attempts)
        #: a uniform sample of this interval's latencies, seconds (rpcclient._policy.outlier)
        self.latency_samples: list[float] = []
        self.latency_seen = 0  # the samples offered this interval (kept or not)
        self.latency = -1.0  # median over the last interval judged (-1.0: no samples)
        #: the ``X-Rpc-Dedup`` of its latest answer (None: it did not deduplicate)
        self.dedup_header: str | None = None
        self.dedup_scope: str | None = None
        self.dedup_window = 0.0

    def note_dedup(self, header: str | None) -> None:
        """Remember the ``X-Rpc-Dedup`` of an answer (None: the answer had none)."""
        if header == self.dedup_header:
            return  # the usual case: the same advertisement again, parsed already
        self.dedup_header = header
        parsed = parse_dedup(header)
        if parsed is None:
            self.dedup_scope = None
            self.dedup_window = 0.0
        else:
            self.dedup_scope, self.dedup_window = parsed

    def stats(self, now: float) -> dict[str, Any]:
        return {
            "url": self.endpoint.url,
            "outstanding": self.outstanding,
            "calls": self.calls,
            "failures": self.failures,
            "consecutive_connect_failures": self.connect_failures,
            "ejected": self.ejected_until != 0.0,
            "resting": self.ejected_until > now,
            "probing": self.probing,
            "ejections": self.ejections,
            "eject_reason": self.eject_reason or None,
            "ewma_ms": round(self.ewma * 1000, 3),
            "success_rate": None if self.success_rate < 0 else round(self.success_rate, 4),
            "latency_ms": None if self.latency < 0 else round(self.latency * 1000, 3),
            "dedup_scope": self.dedup_scope,
        }


class EndpointGroup:
    """The hosts serving one service, their balancer and their retry budget."""

    def __init__(
        self,
        endpoints: Sequence[Endpoint],
        budget: RetryBudget,
        *,
        eject_after: int = 5,
        cooldown: float = 10.0,
        rng: random.Random | None = None,
        outlier: OutlierEjection | None = None,
        balance: str = "p2c",
        tau: float = 10.0,
    ) -> None:
        if not endpoints:
            raise ValueError("an endpoint group needs at least one endpoint")
        if balance not in BALANCES:
            raise ValueError(f"balance must be one of {', '.join(BALANCES)}, not {balance!r}")
        if outlier is not None and not isinstance(outlier, OutlierEjection):
            raise TypeError(f"outlier_ejection must be an OutlierEjection, not {outlier!r}")
        if not tau > 0:
            raise ValueError(f"tau must be a positive number of seconds, not {tau!r}")
        self.hosts = [Host(e) for e in endpoints]
        self.budget = budget
        self.eject_after = eject_after
        self.cooldown = cooldown
        self._rng = rng or random.Random()
        #: how many hosts are out of service (0: the common case, no clock read)
        self._out = 0
        self.outlier = outlier
        #: whether attempts keep latency samples (the latency rule is on)
        self._sampling = outlier is not None and outlier.latency is not None
        self._ewma = balance == "p2c-ewma"
        self._tau = float(tau)
        self._next_judgement = (
            perf_counter() + outlier.interval if outlier is not None else float("inf")
        )
        #: whether attempts report their outcome (:meth:`observe`); False for one host
        self.tracking = False
        self._set_tracking()

    def _set_tracking(self) -> None:
        self.tracking = len(self.hosts) > 1 and (self._ewma or self.outlier is not None)

    def pick(self, tried: Sequence[Host] = ()) -> Host | None:
        """The host for the next attempt, or None: every host is out of service
        and each is being probed (the caller fails fast; see the module docstring).

        A host returned with ``probing`` set is this attempt's probe: the
        caller reports how it went (:meth:`connect_failed`, :meth:`probe_ended`).
        """
        hosts = self.hosts
        if len(hosts) == 1:
            return hosts[0]
        if not tried and self._out == 0:
            live = hosts  # the common case: no list built, no membership tests
        else:
            now = monotonic()
            live = []
            for h in hosts:
                until = h.ejected_until
                if until == 0.0:
                    if h not in tried:
                        live.append(h)
                elif until <= now and not h.probing and h not in tried:
                    h.probing = True  # rested: this call probes it
                    return h
            if not live:
                live = [h for h in hosts if h.ejected_until == 0.0]
                if not live:
                    return self._probe_early()
            if len(live) == 1:
                return live[0]
        # two distinct hosts drawn at random (random.sample costs ~5x this)
        n = len(live)
        draw = self._rng.random
        if n == 2:
            a, b = (live[0], live[1]) if draw() < 0.5 else (live[1], live[0])
        else:
            i = int(draw() * n)
            j = int(draw() * (n - 1))
            a, b = live[i], live[j + 1 if j >= i else j]
        if not self._ewma:
            return a if a.outstanding <= b.outstanding else b
        now = perf_counter()
        tau = self._tau
        return a if _cost(a, now, tau) <= _cost(b, now, tau) else b

    def observe(self, host: Host, started: float, ok: bool, error: BaseException | None) -> None:
        """An attempt on ``host`` begun at ``started`` (perf_counter) ended:
        ``ok``, or with ``error`` (None: the caller's own Timeout or a kill,
        no verdict on the host). Only called while :attr:`tracking`."""
        now = perf_counter()
        if ok:
            host.ok += 1
            failed = False
        elif error is None or isinstance(error, PoolTimeout):
            return  # the caller gave up, or our own queue: nothing about the host
        elif _host_failed(error):
            host.failed += 1
            failed = True
        else:
            host.ok += 1  # a 4xx, a refused request: the host answered as it should
            failed = False
        rtt = now - started
        if self._sampling and (not failed or isinstance(error, RPCTimeout)):
            # a timeout's time is a lower bound of the host's latency: a sample; a
            # fast failure is none (a failing host must not look fast)
            seen = host.latency_seen
            if seen < _SAMPLES:
                host.latency_samples.append(rtt)
            else:  # reservoir sampling: each of the interval's samples kept alike
                j = int(self._rng.random() * (seen + 1))
                if j < _SAMPLES:
                    host.latency_samples[j] = rtt
            host.latency_seen = seen + 1
        previous = host.ewma
        if rtt > previous:
            host.ewma = rtt  # a new peak counts at once
        elif not failed:
            w = exp(-(now - host.ewma_stamp) / self._tau)
            host.ewma = previous * w + rtt * (1.0 - w)
        host.ewma_stamp = now
        if now >= self._next_judgement:
            self.judge(now)

    def judge(self, now: float) -> None:
        """Judge the interval that ended (rpcclient._policy.outlier) and start the next."""
        policy = self.outlier
        if policy is None:
            return
        self._next_judgement = now + policy.interval
        hosts = self.hosts
        counts = [(h.ok, h.failed, h.ejected_until != 0.0) for h in hosts]
        latencies: list[tuple[int, float]] = []
        for h in hosts:
            total = h.ok + h.failed
            h.success_rate = h.ok / total if total else -1.0
            h.ok = h.failed = 0
            if self._sampling:
                samples = h.latency_samples
                h.latency = median(samples) if samples else -1.0
                latencies.append((h.latency_seen, h.latency))
                samples.clear()
                h.latency_seen = 0
        for i, reason in judge_interval(policy, counts, self._rng.random, latencies):
            h = hosts[i]
            h.streak += 1
            self._eject(h, reason, policy.ejection_time(h.streak))
        for h in hosts:
            # a host in service (and not just ejected) forgets one ejection (as A50)
            if h.ejected_until == 0.0 and h.streak > 0:
                h.streak -= 1

    def pick_scope(self, scope: str, tried: Sequence[Host], last: Host) -> Host:
        """The host for a deduplicated re-send: one whose latest advertised
        scope is ``scope``, in service, preferring one not tried yet; else
        ``last`` (the host of the attempt that ended, which advertised it)."""
        fallback: Host | None = None
        for h in self.hosts:
            if h.dedup_scope == scope and h.ejected_until == 0.0:
                if h not in tried:
                    return h
                if fallback is None:
                    fallback = h
        return fallback if fallback is not None else last

    def _probe_early(self) -> Host | None:
        """Every host is out: the one whose rest ends first, unless all are probed."""
        waiting = [h for h in self.hosts if not h.probing]
        if not waiting:
            return None
        host = min(waiting, key=_rest_end)
        host.probing = True
        return host

    def connect_failed(self, host: Host, probe: bool = False) -> None:
        """A connect to ``host`` failed; ``probe``: that attempt was its probe
        (another attempt's failure never ends someone else's probe)."""
        if probe:
            host.probing = False
            self._eject(host)  # the probe failed: rest again
            return
        host.connect_failures += 1
        if (
            host.connect_failures >= self.eject_after
            and len(self.hosts) > 1
            and host.ejected_until == 0.0
        ):
            self._eject(host)

    def probe_ended(self, host: Host, connected: bool, latency: float = -1.0) -> None:
        """A probe ended without a failed connect; ``connected``: it reached the host,
        in ``latency`` seconds (-1.0: not measured).

        A host ejected for latency whose probe answered too slowly rests again
        (:meth:`_still_slow`): otherwise a host that stays slow would serve one
        interval's share of calls after every rest, enough for a p99."""
        host.probing = False
        if connected and host.ejected_until != 0.0:
            if host.eject_reason == "latency" and self._still_slow(host, latency):
                policy = self.outlier
                assert policy is not None  # (only the latency rule ejects for latency)
                host.streak += 1
                self._eject(host, "latency", policy.ejection_time(host.streak))
                return
            host.ejected_until = 0.0
            host.connect_failures = 0
            self._count_out()

    def _still_slow(self, host: Host, latency: float) -> bool:
        """Whether a probe's ``latency`` is above the latency rule's factor times
        the median of the other in-service hosts' medians of the last interval
        judged (False when unmeasured, or with fewer peers than the rule needs)."""
        policy = self.outlier
        rule = policy.latency if policy is not None else None
        if rule is None or latency < 0.0:
            return False
        peers = [
            h.latency
            for h in self.hosts
            if h is not host and h.ejected_until == 0.0 and h.latency >= 0.0
        ]
        if len(peers) < rule.minimum_hosts - 1:
            return False
        return latency > rule.factor * median(peers)

    def _eject(self, host: Host, reason: str = "connect_failures", rest: float = -1.0) -> None:
        host.ejected_until = monotonic() + (self.cooldown if rest < 0 else rest)
        host.eject_reason = reason
        host.ejections += 1
        host.connect_failures = 0
        self._count_out()

    def _count_out(self) -> None:
        self._out = sum(1 for h in self.hosts if h.ejected_until != 0.0)

    def stats(self) -> list[dict[str, Any]]:
        now = monotonic()
        return [h.stats(now) for h in self.hosts]

    def __repr__(self) -> str:
        inner = ", ".join(
            f"{h.endpoint.url} out={h.outstanding}{' ejected' if h.ejected_until else ''}"
            f"{' probing' if h.probing else ''}"
            for h in self.hosts
        )
        return f"<EndpointGroup [{inner}]>"


def _cost(host: Host, now: float, tau: float) -> float:
    """Peak-EWMA load: the latency estimate decayed to ``now``, times calls in flight + 1."""
    latency = host.ewma
    if latency == 0.0:
        return _PENALTY * host.outstanding
    age = now - host.ewma_stamp
    if age > 0.0:
        latency *= exp(-age / tau)
    return latency * (host.outstanding + 1)


def _host_failed(error: BaseException) -> bool:
    """Whether an attempt's error counts against its host (rpcclient._policy.outlier)."""
    if isinstance(error, (HTTPStatusError, RemoteError)):
        return error.status >= 500
    if isinstance(error, ResponseTooLarge):
        return False  # our own limit
    return isinstance(error, (ConnectError, ConnectionLost, ProtocolError, RPCTimeout))


def _rest_end(host: Host) -> float:
    return host.ejected_until


def resolve_addresses(host: str, port: int) -> list[str]:
    """The IP addresses of ``host`` (gevent's resolver), in resolver order, once each."""
    import gevent.socket

    infos = gevent.socket.getaddrinfo(host, port, 0, _socket.SOCK_STREAM, _socket.IPPROTO_TCP)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


def _in_hub() -> bool:
    """Whether this runs in gevent's hub, where nothing may wait (a timer's callback)."""
    from gevent import getcurrent
    from gevent.hub import Hub

    return isinstance(getcurrent(), Hub)


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


class ResolvingGroup(EndpointGroup):
    """An endpoint group that spreads each DNS name over all its addresses.

    Every ``refresh`` seconds (at the first pick after that) each named
    endpoint is resolved and becomes one host per address (connecting to the
    address, still sending the name in ``Host:`` and for TLS), so balancing,
    ejection and retries work across the addresses. Hosts whose address
    stays keep their state. A failed or empty resolution keeps the previous
    hosts of that name (or the name itself, resolved at connect time).
    """

    def __init__(
        self,
        endpoints: Sequence[Endpoint],
        budget: RetryBudget,
        *,
        refresh: float = 30.0,
        resolver: Callable[[str, int], Sequence[str]] = resolve_addresses,
        eject_after: int = 5,
        cooldown: float = 10.0,
        rng: random.Random | None = None,
        outlier: OutlierEjection | None = None,
        balance: str = "p2c",
        tau: float = 10.0,
    ) -> None:
        # spelled out, not **kw: compiled code passes keywords by position
        super().__init__(
            endpoints,
            budget,
            eject_after=eject_after,
            cooldown=cooldown,
            rng=rng,
            outlier=outlier,
            balance=balance,
            tau=tau,
        )
        self._named = list(endpoints)
        self._refresh = refresh
        self._resolver = resolver
        self._next_refresh = 0.0

    def pick(self, tried: Sequence[Host] = ()) -> Host | None:
        # a pick in the hub (a hedge timer's callback) cannot wait for the
        # resolver: it takes the hosts as they are, and the next pick from a
        # greenlet refreshes them
        if monotonic() >= self._next_refresh and not _in_hub():
            self.resolve()
        return super().pick(tried)

    def resolve(self) -> None:
        """Re-resolve every named endpoint now (see the class docstring)."""
        self._next_refresh = monotonic() + self._refresh
        known = {h.endpoint.key: h for h in self.hosts}
        hosts: list[Host] = []
        for endpoint in self._named:
            if _is_ip(endpoint.host):
                hosts.append(known.get(endpoint.key) or Host(endpoint))
                continue
            try:
                addresses = list(self._resolver(endpoint.host, endpoint.port))
            except Exception:  # noqa: BLE001 - any resolver failure: keep what we had
                addresses = []
            if not addresses:
                name = (endpoint.host, endpoint.port, endpoint.base_path)
                previous = [
                    h
                    for h in self.hosts
                    if (h.endpoint.host, h.endpoint.port, h.endpoint.base_path) == name
                ]
                hosts.extend(previous or [known.get(endpoint.key) or Host(endpoint)])
                continue
            for address in addresses:
                spread = endpoint.with_address(address)
                hosts.append(known.get(spread.key) or Host(spread))
        self.hosts = hosts
        self._count_out()
        self._set_tracking()
