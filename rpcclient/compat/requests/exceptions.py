"""``requests.exceptions``: requests' own classes, and the three this shim adds.

Every class requests defines is this module's under the same name (they are
the same objects), so ``except requests.exceptions.Timeout:`` catches the
shim's errors whichever ``requests`` the code imported. The shim adds:

- :class:`PoolTimeout` (a ``ConnectionError`` and a ``Timeout``): no pooled
  connection came free within the connect timeout; nothing was sent.
- :class:`ResponseTooLarge`: the answer is above the adapter's
  ``max_response_size`` (requests has no limit).
- :class:`UnsupportedArgument` (a ``NotImplementedError``): something
  requests can do and this shim refuses, before anything is sent.

The rpcclient error behind a shim error is its ``__cause__``.
"""

from __future__ import annotations

from typing import Any

import requests.exceptions as _upstream
from requests.exceptions import (
    ChunkedEncodingError,
    ConnectionError,
    ConnectTimeout,
    ContentDecodingError,
    FileModeWarning,
    HTTPError,
    InvalidHeader,
    InvalidJSONError,
    InvalidProxyURL,
    InvalidSchema,
    InvalidURL,
    JSONDecodeError,
    MissingSchema,
    ProxyError,
    ReadTimeout,
    RequestException,
    RequestsDependencyWarning,
    RequestsWarning,
    RetryError,
    SSLError,
    StreamConsumedError,
    Timeout,
    TooManyRedirects,
    UnrewindableBodyError,
    URLRequired,
)

__all__ = [
    "ChunkedEncodingError",
    "ConnectTimeout",
    "ConnectionError",
    "ContentDecodingError",
    "FileModeWarning",
    "HTTPError",
    "InvalidHeader",
    "InvalidJSONError",
    "InvalidProxyURL",
    "InvalidSchema",
    "InvalidURL",
    "JSONDecodeError",
    "MissingSchema",
    "PoolTimeout",
    "ProxyError",
    "ReadTimeout",
    "RequestException",
    "RequestsDependencyWarning",
    "RequestsWarning",
    "ResponseTooLarge",
    "RetryError",
    "SSLError",
    "StreamConsumedError",
    "Timeout",
    "TooManyRedirects",
    "URLRequired",
    "UnrewindableBodyError",
    "UnsupportedArgument",
]


class PoolTimeout(ConnectionError, Timeout):
    """No pooled connection came free within the connect timeout; nothing was sent."""


class ResponseTooLarge(RequestException):
    """The answer is above the adapter's ``max_response_size`` (requests has no limit)."""


class UnsupportedArgument(NotImplementedError):
    """An argument requests supports and this shim does not; nothing was sent."""


def __getattr__(name: str) -> Any:
    # anything else requests.exceptions has (its imports, future additions)
    return getattr(_upstream, name)
