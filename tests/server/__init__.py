"""Server tier: the bundled server (rpcclient.server) over raw sockets."""
