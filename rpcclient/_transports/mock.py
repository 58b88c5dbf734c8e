"""A transport without a network, for users' unit tests.

``Client("http://svc", transport=MockTransport(handler))`` calls
``handler(request)`` for each request; :func:`msgpack_response` builds a
protocol-v1 answer for it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .._core.codec import DEFAULT_CODEC
from .._core.models import Headers, Request, Response
from .._core.timeouts import Deadline
from ..exceptions import ClientClosed
from .base import Transport

__all__ = ["MockTransport", "msgpack_response"]


class MockTransport(Transport):
    """A transport that calls ``handler(request) -> Response`` instead of the network.

    The handler may also raise an rpcclient error to simulate a fault.
    :func:`msgpack_response` builds a protocol-v1 answer. ``requests`` keeps
    every request seen, for assertions.
    """

    name = "mock"

    def __init__(self, handler: Callable[[Request], Response]) -> None:
        self.handler = handler
        self.requests: list[Request] = []
        self._closed = False

    def send(self, request: Request, deadline: Deadline) -> Response:
        if self._closed:
            raise ClientClosed("transport is closed", name=request.name)
        self.requests.append(request)
        return self.handler(request)

    def close(self) -> None:
        self._closed = True


def msgpack_response(
    result: Any = None,
    *,
    status: int = 200,
    error: tuple[str, str] | tuple[str, str, Any] | None = None,
) -> Response:
    """A protocol-v1 Response for MockTransport handlers.

    ``msgpack_response(42)`` answers 42; ``msgpack_response(status=500,
    error=("ValueError", "bad"))`` answers an error envelope.
    """
    if error is not None:
        etype, message, *rest = error
        payload: Any = {
            "error": {"type": etype, "message": message, "data": rest[0] if rest else None}
        }
    else:
        payload = result
    body = DEFAULT_CODEC.pack(payload)
    headers = Headers(
        [("Content-Type", DEFAULT_CODEC.content_type), ("Content-Length", str(len(body)))]
    )
    return Response(
        status=status, reason="OK" if status == 200 else "Error", headers=headers, body=body
    )
