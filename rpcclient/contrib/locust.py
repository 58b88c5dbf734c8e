"""Locust users for rpcclient: the public name of :mod:`rpcclient._integrations.locust`.

Imports Locust (install it yourself); ``import rpcclient`` never imports this.
"""

from .._integrations.locust import LocustReporter, RPCUser

__all__ = ["LocustReporter", "RPCUser"]
