"""Stand-ins for other HTTP clients' APIs, running on rpcclient's gevent transport.

``from rpcclient.compat import requests`` gives web code that calls RPC
servers with ``requests.post(...)`` the pooled, one-write gevent transport
without a rewrite: see :mod:`rpcclient.compat.requests` for what it
supports and where it differs. Submodules are imported on first use.
"""

__all__ = ["requests"]
