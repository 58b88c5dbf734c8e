"""The gevent transport, compiled whole.

``transport`` (GeventTransportCore: one exchange, start to end),
``watchdog`` (the deadline watchdog and the marks it keeps on connections),
``pool`` (slots, idle connections and hand-over of one endpoint) and
``http11`` (one-write request heads and the response reader over
geventhttpclient's C parser). The public, subclassable ``GeventTransport``
is :mod:`rpcclient._public`'s.
"""
