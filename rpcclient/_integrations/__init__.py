"""rpcclient inside other tools: statsd, OpenTelemetry, Locust, the stats file.

``statsd`` and ``tracing`` import nothing of their tool until used (``import
rpcclient`` stays light); ``locust`` imports Locust, so only its public name
:mod:`rpcclient.contrib.locust` reaches it; ``statsfile`` writes
:func:`rpcclient.dump_stats`'s JSON.
"""
