"""The call path: everything one ``client.call`` runs through, compiled whole.

``client`` (ClientCore: a call from name and arguments to result, retries,
deadlines), ``models`` (Request, Response, Headers, Endpoint), ``codec``
(msgpack with limits), ``timeouts``, ``retry`` (the policy and its pure
decision), ``observe`` (stats and hooks), ``balance`` (endpoint groups and
host choice). It knows transports only by the seam,
:mod:`rpcclient._transports.base`.
"""
