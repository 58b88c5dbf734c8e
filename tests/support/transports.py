"""What the tests that run on every transport share: their names, and the check
that an error is exactly one of ours."""

from __future__ import annotations

from typing import Any

import pytest

from rpcclient import exceptions as E

TRANSPORTS = ["gevent", "requests", "urllib3"]


def raises_ours(cls: type[E.RPCError], fn: Any, *args: Any, **kw: Any) -> E.RPCError:
    """Call fn, require exactly an rpcclient error of class ``cls``."""
    try:
        fn(*args, **kw)
    except E.RPCError as exc:
        assert type(exc).__module__ == "rpcclient.exceptions", type(exc)
        assert isinstance(exc, cls), f"{type(exc).__name__} is not a {cls.__name__}: {exc}"
        return exc
    except BaseException as exc:
        pytest.fail(f"foreign exception escaped unmapped: {type(exc).__module__}.{exc!r}")
    pytest.fail(f"no {cls.__name__} raised")
