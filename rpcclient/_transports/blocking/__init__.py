"""The blocking transports: ``requests`` and ``urllib3`` under the same seam.

``common`` is what both share (urllib3's pools under our slots, deadlines,
error mapping); ``requests`` and ``urllib3`` register themselves by name
when imported (:func:`rpcclient._transports.base.build_transport` imports
them on first use). Interpreted: their cost is the libraries'.
"""
