"""Client CPU per call of rpcclient.compat.requests, sequential, against a local server.

The server (stock gevent.pywsgi, a 2-byte answer) runs in a subprocess, so
the process time measured here is the client's alone::

    .venv/bin/python bench/shim_cpu.py [--calls 2000] [--trust-env-off | --module]

Prints microseconds of wall time and of client CPU per ``Session.post`` of
100 bytes (``--module``: per ``requests.post``, the module function, which
runs each call in a fresh Session on a shared adapter). Short on purpose:
wall time moves a lot on a shared machine, CPU per call much less.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time

SERVER = """
from gevent.pywsgi import WSGIServer
def app(environ, start_response):
    environ["wsgi.input"].read()
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", "2")])
    return [b"{}"]
srv = WSGIServer(("127.0.0.1", 0), app, log=None)
srv.start()
print(srv.server_port, flush=True)
srv.serve_forever()
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--trust-env-off", action="store_true")
    parser.add_argument("--module", action="store_true", help="time requests.post")
    args = parser.parse_args()
    from rpcclient.compat import requests

    server = subprocess.Popen([sys.executable, "-c", SERVER], stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout is not None
        url = f"http://127.0.0.1:{int(server.stdout.readline())}/x"
        with requests.Session() as session:
            session.trust_env = not args.trust_env_off
            post = requests.post if args.module else session.post
            for _ in range(200):
                post(url, data=b"x", timeout=5)
            cpu, wall = time.process_time(), time.perf_counter()
            for _ in range(args.calls):
                post(url, data=b"x" * 100, timeout=5)
            cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
        what = "requests.post" if args.module else f"Session.post, trust_env={session.trust_env}"
        print(
            f"{wall / args.calls * 1e6:.0f} us wall, {cpu / args.calls * 1e6:.0f} us client CPU "
            f"per call ({what})"
        )
    finally:
        server.kill()
        server.wait()


if __name__ == "__main__":
    main()
