"""rpcclient: a gevent-native msgpack RPC client over pooled keep-alive HTTP/1.1.

The public API is exactly what ``__all__`` lists, plus the public modules
:mod:`rpcclient.exceptions` (the error tree, re-exported here),
:mod:`rpcclient.server` (the bundled server), :mod:`rpcclient.compat.requests`
(the requests shim) and :mod:`rpcclient.contrib.locust`. Everything under a
name starting with ``_`` is private.

General layout, each layer importing only the ones below it:

- ``exceptions``, ``_version``, ``_fork`` (the one registry of what a forked
  child resets): the bottom; they import nothing of ours.
- ``_core/`` (compiled): the call path. ``client`` turns a name and
  arguments into a result; ``models``, ``codec``, ``timeouts``, ``retry``,
  ``observe``, ``balance`` are its parts. It sees transports only through
  the seam in ``_transports/base``.
- ``_config``: what transports are built with (TLSConfig, pool and size
  limits), one home for the defaults. ``_protocol``: wire protocol v1 for
  both sides (names, headers, ids, error envelopes).
- ``_policy/``: opt-in policies off the plain call's path (hedging, outlier
  ejection), interpreted.
- ``_transports/``: ``base`` (the seam and its registry), ``mock``,
  ``gevent/`` (the default transport, compiled), ``blocking/`` (requests and
  urllib3), and the per-thread lifetimes they share.
- ``_public``: the interpreted, subclassable ``Client`` and
  ``GeventTransport`` over the compiled cores; it registers the default
  transport.
- ``server/``: the bundled server; ``server/_engine/`` (compiled) is its
  per-request path.
- ``compat/requests/``: requests' API on the gevent transport.
- ``_integrations/`` (statsd, OpenTelemetry, Locust, the stats file) and
  ``_tools/`` (the command line, ``rpcclient ab``): the top; nothing below
  imports them.

The compiled set is whole folders (setup.py ``COMPILED_FOLDERS``): every
module of ``_core/``, ``_transports/gevent/`` and ``server/_engine/``.
"""

from importlib.machinery import EXTENSION_SUFFIXES as _EXTENSION_SUFFIXES

from ._config import TLSConfig
from ._core import client as _client
from ._core.client import ServiceProxy
from ._core.codec import DEFAULT_CODEC, Codec
from ._core.models import Endpoint, Headers, Request, Response
from ._core.observe import CallEvent, Hook, Stats, report
from ._core.retry import NO_RETRY, Retry, RetryBudget
from ._core.timeouts import Deadline, Timeout
from ._integrations.statsd import StatsdReporter
from ._integrations.statsfile import dump_stats
from ._integrations.tracing import OpenTelemetryHook, TraceContextMiddleware
from ._policy.hedge import Hedge
from ._policy.outlier import FailurePercentage, LatencyOutlier, OutlierEjection, SuccessRate
from ._protocol import DEFAULT_PATH_TEMPLATE, decode_error_envelope
from ._public import Client, GeventTransport
from ._transports.base import Transport, register_transport
from ._transports.mock import MockTransport, msgpack_response
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
