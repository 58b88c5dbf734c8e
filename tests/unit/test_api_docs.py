"""Every public parameter is documented where a reader looks for it (issue 17).

A parameter counts as documented when its name appears in a ``literal``
(the docstrings' markup) of the docstring of its class (constructor
arguments) or of its method. A policy value's fields may also be told in
its module's docstring (rpcclient._policy.outlier's describes the rules that
SuccessRate and FailurePercentage configure). Pure introspection: no
sockets.

The compiled build (mypyc) keeps neither the docstrings nor the signatures
of its native classes and methods, so the introspection runs on the
interpreted build (the one the test suite runs on); the refusals are
checked on both.
"""

from __future__ import annotations

import inspect
import math
import re
import sys
from typing import Any

import pytest

import rpcclient
from rpcclient import Client

#: the public policy and configuration values: their fields are the contract
POLICY_CLASSES = [
    rpcclient.Retry,
    rpcclient.RetryBudget,
    rpcclient.Timeout,
    rpcclient.Hedge,
    rpcclient.OutlierEjection,
    rpcclient.SuccessRate,
    rpcclient.FailurePercentage,
    rpcclient.TLSConfig,
    rpcclient.Codec,
    rpcclient.Deadline,
]


def _public_methods(cls: type) -> list[tuple[str, object]]:
    return [
        (f"{cls.__name__}.{name}", func)
        for name, func in inspect.getmembers(cls, inspect.isfunction)
        if not name.startswith("_")
    ]


METHODS = [m for cls in [Client, *POLICY_CLASSES] for m in _public_methods(cls)]


def _parameters(func: object) -> list[str]:
    return [
        p.name
        for p in inspect.signature(func).parameters.values()  # type: ignore[arg-type]
        if p.name not in {"self", "cls"} and p.kind not in {p.VAR_POSITIONAL, p.VAR_KEYWORD}
    ]


def _undocumented(names: list[str], *docs: str | None) -> list[str]:
    """The names that appear in no ``literal`` of ``docs`` (as a whole word:
    ``name``, ``name=30``, ``[name, other]`` all count)."""
    literals = re.findall(r"``([^`]+)``", "\n".join(d for d in docs if d))
    words = {w for lit in literals for w in re.findall(r"[A-Za-z_][A-Za-z0-9_]*", lit)}
    return [n for n in names if n not in words]


interpreted_only = pytest.mark.skipif(
    rpcclient.COMPILED, reason="mypyc drops the docstrings and signatures it compiles"
)


@interpreted_only
def test_every_client_argument_is_documented() -> None:
    missing = _undocumented(_parameters(Client.__init__), Client.__doc__)
    assert not missing, f"Client arguments missing from its docstring: {missing}"


@interpreted_only
def test_the_methods_are_found() -> None:
    found = {name for name, _ in METHODS}
    assert {"Client.call", "Client.call_many", "Client.prepare", "Retry.delay"} <= found


@interpreted_only
@pytest.mark.parametrize(("method", "func"), METHODS, ids=[name for name, _ in METHODS])
def test_every_public_method_parameter_is_documented(method: str, func: object) -> None:
    missing = _undocumented(_parameters(func), func.__doc__)  # type: ignore[attr-defined]
    assert not missing, f"{method} parameters missing from its docstring: {missing}"


@interpreted_only
@pytest.mark.parametrize("cls", POLICY_CLASSES, ids=lambda c: c.__name__)
def test_every_policy_field_is_documented(cls: type) -> None:
    docs = [cls.__doc__, sys.modules[cls.__module__].__doc__]
    missing = _undocumented(_parameters(cls), *docs)
    assert not missing, f"{cls.__name__} fields missing from its docstring: {missing}"


def test_the_check_can_fail() -> None:
    """The check itself: an undocumented parameter is found."""

    def f(documented: int, also: int, forgotten: int, mentioned: int) -> None:
        """Takes ``documented`` and ``[also, x]``; mentioned is no literal."""

    assert _undocumented(_parameters(f), f.__doc__) == ["forgotten", "mentioned"]


# -- the refusals Client's docstring states -------------------------------------

URL = "http://127.0.0.1:9"  # never connected: every refusal comes before any I/O
Hedge, OutlierEjection, TLSConfig = rpcclient.Hedge, rpcclient.OutlierEjection, rpcclient.TLSConfig
InvalidRequest = rpcclient.InvalidRequest

REFUSALS: list[tuple[dict[str, Any], type[Exception]]] = [
    ({"endpoints": []}, InvalidRequest),
    ({"endpoints": 5}, InvalidRequest),
    ({"endpoints": "ftp://h"}, InvalidRequest),
    ({"endpoints": {"bad service": URL}}, InvalidRequest),
    ({"transport": "nope"}, ValueError),
    ({"transport": 5}, TypeError),
    ({"path_template": "rpc/{service}/{method}"}, InvalidRequest),
    ({"path_template": "/{service.__class__}/{method}"}, InvalidRequest),
    ({"balance": "round-robin"}, ValueError),
    ({"spread_dns": 0}, ValueError),
    ({"spread_dns": math.inf}, ValueError),
    ({"spread_dns": "30"}, TypeError),
    ({"spread_dns": 30.0, "transport": "requests"}, ValueError),
    ({"resolver": 1}, TypeError),
    ({"timeout": -1}, ValueError),
    ({"timeout": "1"}, TypeError),
    ({"retry": 3}, TypeError),
    ({"idempotent": ["nodot"]}, InvalidRequest),
    ({"idempotent": "user.get"}, InvalidRequest),
    ({"hedge": 0.1}, TypeError),
    ({"hedge": Hedge(delay=0.1), "transport": "requests"}, ValueError),
    ({"eject_after": 0}, ValueError),
    ({"eject_after": 1.5}, TypeError),
    ({"cooldown": -1}, ValueError),
    ({"cooldown": math.nan}, ValueError),
    ({"outlier_ejection": 1}, TypeError),
    ({"pool_size": 0}, ValueError),
    ({"idle_timeout": 0}, ValueError),
    ({"idle_timeout": -1.0}, ValueError),
    ({"max_connection_age": math.inf}, ValueError),
    ({"max_request_size": 0}, ValueError),
    ({"max_response_size": -1}, ValueError),
    ({"max_head_size": 1.5}, TypeError),
    ({"headers": {"X-A": "a\r\nb"}}, InvalidRequest),
    ({"headers": {"Content-Length": "1"}}, InvalidRequest),
    ({"headers": {"X-Request-Id": "1"}}, InvalidRequest),
    ({"codec": None}, TypeError),
    ({"error_decoder": None}, TypeError),
    ({"tls": 1}, TypeError),
    ({"tls": TLSConfig(), "verify": False}, ValueError),
]


@pytest.mark.parametrize(("kwargs", "error"), REFUSALS, ids=lambda v: repr(v)[:60])
def test_each_refusal_the_docstring_states(kwargs: dict[str, Any], error: type) -> None:
    kwargs = dict(kwargs)
    with pytest.raises(error):
        Client(kwargs.pop("endpoints", URL), **kwargs)


def test_the_edges_the_docstring_allows() -> None:
    """The limits are inclusive where it says so: nothing here is refused."""
    accepted: list[dict[str, Any]] = [
        {"cooldown": 0},
        {"idle_timeout": None, "max_connection_age": None},
        {"eject_after": 1, "max_request_size": 1, "max_response_size": 1, "max_head_size": 1},
        {"spread_dns": 0.05, "resolver": lambda host, port: ["127.0.0.1"]},
        {"timeout": None, "outlier_ejection": None, "hedge": None},
        {"hedge": Hedge(delay=0.1), "balance": "p2c-ewma", "stats": False},
        {"tls": TLSConfig(verify=False)},
    ]
    for kwargs in accepted:
        Client(URL, **kwargs).close()
