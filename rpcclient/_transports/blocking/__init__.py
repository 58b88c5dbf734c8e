"""The blocking transports: ``requests`` and ``urllib3`` under the same seam.

``common`` (the bounds both keep, and BlockingTransport), ``exchange`` (one
exchange's timers and the one edge where foreign errors become ours),
``connections`` (urllib3's connection, pool and response classes, extended
through the hooks it offers); ``requests`` and ``urllib3`` register
themselves by name when imported
(:func:`rpcclient._transports.base.build_transport` imports them on first
use). Interpreted: their cost is the libraries'.
"""
