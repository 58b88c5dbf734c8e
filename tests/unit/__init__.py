"""Unit tier: no sockets (the reader fed raw bytes, policies, models, codec, retry
decision), plus the checks of docs, API and lint."""
