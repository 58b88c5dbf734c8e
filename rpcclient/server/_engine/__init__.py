"""The bundled server's per-request path, compiled whole.

``wsgi``: the strict HTTP/1.1 handler (its module docstring states each
rule); ``app``: RPCApp, protocol v1's server side. The listener that owns
the socket is :mod:`rpcclient.server.listener`.
"""
