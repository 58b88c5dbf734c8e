"""rpcclient: a gevent-native msgpack RPC client over pooled keep-alive HTTP/1.1.

The public API is exactly what ``__all__`` lists; every other module is
private. Errors live in :mod:`rpcclient.exceptions` (also re-exported here),
the bundled server in :mod:`rpcclient.server`.
"""

from importlib.machinery import EXTENSION_SUFFIXES as _EXTENSION_SUFFIXES

from . import _client
from ._client import ServiceProxy, register_transport
from ._codec import DEFAULT_CODEC, Codec
from ._gevent_transport import TLSConfig
from ._hedge import Hedge
from ._models import Endpoint, Headers, Request, Response
from ._observe import CallEvent, Hook, Stats, report
from ._outlier import FailurePercentage, LatencyOutlier, OutlierEjection, SuccessRate
from ._protocol import DEFAULT_PATH_TEMPLATE, decode_error_envelope
from ._public import Client, GeventTransport
from ._retry import NO_RETRY, Retry, RetryBudget
from ._stats_cli import dump_stats
from ._statsd import StatsdReporter
from ._timeouts import Deadline, Timeout
from ._tracing import OpenTelemetryHook, TraceContextMiddleware
from ._transport import MockTransport, Transport, msgpack_response
from ._version import __version__
from .exceptions import (
    ClientClosed,
    ConnectError,
    ConnectionLost,
    ConnectTimeout,
    DecodeError,
    HTTPStatusError,
    InvalidRequest,
    MethodNotFound,
    PoolTimeout,
    ProtocolError,
    ReadTimeout,
    RemoteError,
    RequestTooLarge,
    ResponseTooLarge,
    RPCError,
    RPCTimeout,
    TransportError,
)

#: True when the hot path runs compiled (the mypyc build of setup.py), False
#: for the interpreted package (``RPCCLIENT_PURE_PYTHON=1``, or no C compiler)
COMPILED: bool = str(getattr(_client.__spec__, "origin", "")).endswith(tuple(_EXTENSION_SUFFIXES))

__all__ = [
    "COMPILED",
    "CallEvent",
    "Client",
    "ClientClosed",
    "Codec",
    "ConnectError",
    "ConnectTimeout",
    "ConnectionLost",
    "DEFAULT_CODEC",
    "DEFAULT_PATH_TEMPLATE",
    "Deadline",
    "DecodeError",
    "Endpoint",
    "FailurePercentage",
    "GeventTransport",
    "HTTPStatusError",
    "Headers",
    "Hedge",
    "Hook",
    "InvalidRequest",
    "LatencyOutlier",
    "MethodNotFound",
    "MockTransport",
    "NO_RETRY",
    "OpenTelemetryHook",
    "OutlierEjection",
    "PoolTimeout",
    "ProtocolError",
    "RPCError",
    "RPCTimeout",
    "ReadTimeout",
    "RemoteError",
    "Request",
    "RequestTooLarge",
    "Response",
    "ResponseTooLarge",
    "Retry",
    "RetryBudget",
    "ServiceProxy",
    "Stats",
    "StatsdReporter",
    "SuccessRate",
    "TLSConfig",
    "Timeout",
    "TraceContextMiddleware",
    "Transport",
    "TransportError",
    "__version__",
    "decode_error_envelope",
    "dump_stats",
    "msgpack_response",
    "register_transport",
    "report",
]
