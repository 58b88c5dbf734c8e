"""Moving a prepared request to a server and its answer back.

``base`` is the seam every transport implements and the registry of them by
name; ``mock`` the transport for users' tests. ``gevent/`` is the default
transport (compiled); ``blocking/`` the ``requests`` and ``urllib3`` ones,
for A/B comparison and for code that must keep those stacks. ``fork`` and
``threads`` are the process and OS-thread lifetimes both families share;
``tcpinfo`` reads Linux ``TCP_INFO``.
"""
