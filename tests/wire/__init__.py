"""Wire tier: the client and its transports against loopback servers (faults,
conformance, pool, TLS, hedging, balancing, the A/B tool)."""
