"""Endpoint groups: several hosts for one service, and how a call picks one.

Picking is "power of two choices" on the least outstanding calls: draw two
hosts at random, take the one with fewer calls in flight. It needs no global
view and keeps a slow host from piling up work.

A host that fails to connect ``eject_after`` times in a row is ejected for
``cooldown`` seconds; after that one call probes it, and a success brings it
back (a failure ejects it again). When every host is ejected the one whose
cool-down ends first is tried anyway: failing fast on a stale verdict helps
nobody. A retry never picks a host the call already tried while another is
available.
"""

from __future__ import annotations

import ipaddress
import random
import socket as _socket
from collections.abc import Callable, Sequence
from time import monotonic
from typing import Any

from ._models import Endpoint
from ._retry import RetryBudget

__all__ = ["EndpointGroup", "Host", "ResolvingGroup", "resolve_addresses"]


class Host:
    """One endpoint of a group and its live state."""

    __slots__ = (
        "calls",
        "connect_failures",
        "ejected_until",
        "ejections",
        "endpoint",
        "failures",
        "outstanding",
    )

    def __init__(self, endpoint: Endpoint) -> None:
        self.endpoint = endpoint
        self.outstanding = 0
        self.calls = 0
        self.failures = 0
        self.connect_failures = 0  # consecutive
        self.ejected_until = 0.0
        self.ejections = 0

    def stats(self, now: float) -> dict[str, Any]:
        return {
            "url": self.endpoint.url,
            "outstanding": self.outstanding,
            "calls": self.calls,
            "failures": self.failures,
            "consecutive_connect_failures": self.connect_failures,
            "ejected": self.ejected_until > now,
            "ejections": self.ejections,
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
    ) -> None:
        if not endpoints:
            raise ValueError("an endpoint group needs at least one endpoint")
        self.hosts = [Host(e) for e in endpoints]
        self.budget = budget
        self.eject_after = eject_after
        self.cooldown = cooldown
        self._rng = rng or random.Random()
        #: the latest end of any cool-down, 0.0 when no host is resting
        self._ejected_until = 0.0

    def pick(self, tried: Sequence[Host] = ()) -> Host:
        """The host for the next attempt (see the module docstring)."""
        hosts = self.hosts
        if len(hosts) == 1:
            return hosts[0]
        if not tried and (self._ejected_until == 0.0 or not self._resting()):
            live = hosts  # the common case: no list built, no membership tests
        else:
            now = monotonic()
            live = [h for h in hosts if h.ejected_until <= now and h not in tried]
            if not live:
                live = [h for h in hosts if h.ejected_until <= now] or [
                    min(hosts, key=lambda h: h.ejected_until)
                ]
                live = [h for h in live if h not in tried] or live
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
        return a if a.outstanding <= b.outstanding else b

    def _resting(self) -> bool:
        """Whether any host may still be ejected; no clock read when none ever was."""
        until = self._ejected_until
        if until == 0.0:
            return False
        if until <= monotonic():
            self._ejected_until = 0.0  # every cool-down is over
            return False
        return True

    def connect_failed(self, host: Host) -> None:
        host.connect_failures += 1
        if host.connect_failures >= self.eject_after and len(self.hosts) > 1:
            host.ejected_until = monotonic() + self.cooldown
            self._ejected_until = max(self._ejected_until, host.ejected_until)
            host.ejections += 1
            host.connect_failures = 0

    def stats(self) -> list[dict[str, Any]]:
        now = monotonic()
        return [h.stats(now) for h in self.hosts]

    def __repr__(self) -> str:
        now = monotonic()
        inner = ", ".join(
            f"{h.endpoint.url} out={h.outstanding}{' ejected' if h.ejected_until > now else ''}"
            for h in self.hosts
        )
        return f"<EndpointGroup [{inner}]>"


def resolve_addresses(host: str, port: int) -> list[str]:
    """The IP addresses of ``host`` (gevent's resolver), in resolver order, once each."""
    import gevent.socket

    infos = gevent.socket.getaddrinfo(host, port, 0, _socket.SOCK_STREAM, _socket.IPPROTO_TCP)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


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
    ) -> None:
        # spelled out, not **kw: compiled code passes keywords by position
        super().__init__(endpoints, budget, eject_after=eject_after, cooldown=cooldown, rng=rng)
        self._named = list(endpoints)
        self._refresh = refresh
        self._resolver = resolver
        self._next_refresh = 0.0

    def pick(self, tried: Sequence[Host] = ()) -> Host:
        if monotonic() >= self._next_refresh:
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
