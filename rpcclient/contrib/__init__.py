"""Optional integrations with third-party tools.

Each module here imports its tool at import time, so ``import rpcclient``
never imports this package's modules: use them by their full name
(``rpcclient.contrib.locust``) and install the tool yourself.
"""
