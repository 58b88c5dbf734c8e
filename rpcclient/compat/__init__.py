"""Stand-ins for other HTTP clients' APIs, running on rpcclient's gevent transport.

``from rpcclient.compat import requests`` gives web code that calls RPC
servers with ``requests.post(...)`` requests' own Session, models and
exceptions, sending on the pooled, one-write gevent transport (a transport
adapter of requests' own kind): see :mod:`rpcclient.compat.requests` for
where it differs. Needs requests installed. Submodules are imported on first
use.
"""

__all__ = ["requests"]
