"""Interop suite: the client against third-party servers and proxies (issue 12)."""
