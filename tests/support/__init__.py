"""Helpers the test files share (imported, not fixtures): scripted raw servers,
a raw HTTP client, the hostile peer, off-CPU time, process helpers."""
