"""Moving a prepared request to a server and its answer back.

``base`` is the seam every transport implements and the registry of them by
name; ``mock`` the transport for users' tests. ``gevent/`` is the default
transport (compiled); ``blocking/`` the ``requests`` and ``urllib3`` ones,
for A/B comparison and for code that must keep those stacks. ``threads``
is the OS-thread lifetime both families share (fork: :mod:`rpcclient._fork`);
``tcpinfo`` reads Linux ``TCP_INFO``.
"""
