"""Instructions per request of the SERVER process, counted by valgrind's callgrind.

    python bench/server_callgrind.py                       # this tree, seq and conc
    python bench/server_callgrind.py --modes seq --requests 2000,6000 --repeat 1

Wall-clock req/s moves 2-5x on a shared machine; instruction counts do not.
``rpcclient serve``'s stack (:class:`rpcclient.server.RPCApp` with one method,
``echo.echo``, on the bundled strict server) runs under
``valgrind --tool=callgrind``; this process (not traced) drives it over
loopback with the request bench_server.py's wrk sends (``POST /echo/echo``,
``Content-Type: application/x-msgpack``, a 100-byte msgpack body), keep-alive,
each connection waiting for its answer before the next request. The server is
run once for each of two request counts and stopped by SIGTERM (a clean exit,
so callgrind writes its totals); the difference of the two totals divided by
the difference of the counts is the cost of one request, with start-up,
imports, accepts and the warm-up requests cancelled out. ``PYTHONHASHSEED=0``.

Modes: ``seq`` (one connection) and ``conc`` (10 connections, as wrk runs).
``--server fixed`` counts bench/fixed_server.py instead (bench_server.py's
ceiling, a raw gevent server answering one pre-built response).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from typing import Any

import msgpack

HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

SERVER = """\
import json, signal, sys
config = json.loads(sys.argv[1])
sys.path.insert(0, config["tree"])
import gevent
import rpcclient
from rpcclient.server import RPCApp, serve
assert rpcclient.__file__.startswith(config["tree"]), rpcclient.__file__
app = RPCApp()

@app.register("echo.echo")
def echo(value):
    return value

server = serve(app, "127.0.0.1", 0)
gevent.signal_handler(signal.SIGTERM, server.close)
print(json.dumps({"port": server.address[1], "compiled": rpcclient.COMPILED}), flush=True)
server.serve_forever(stop_timeout=1.0)
"""

#: bench/fixed_server.py (bench_server.py's ceiling) under the same driver:
#: the like-for-like reference for issue 13's "0.5x the fixed server" target
FIXED_SERVER = """\
import json, signal, sys
config = json.loads(sys.argv[1])
sys.path.insert(0, config["tree"])
sys.path.insert(0, config["tree"] + "/bench")
import gevent
from gevent.server import StreamServer
import rpcclient
from fixed_server import FixedServer, build_response
app = FixedServer(build_response())
server = StreamServer(("127.0.0.1", 0), app.handle)
server.start()
gevent.signal_handler(signal.SIGTERM, server.close)
print(json.dumps({"port": server.address[1], "compiled": rpcclient.COMPILED}), flush=True)
server.serve_forever(stop_timeout=1.0)
"""
SERVERS = {"rpcclient": SERVER, "fixed": FIXED_SERVER}

BODY = msgpack.packb([b"x" * 97])
REQUEST = (
    b"POST /echo/echo HTTP/1.1\r\nHost: 127.0.0.1\r\n"
    b"Content-Type: application/x-msgpack\r\nContent-Length: %d\r\n\r\n" % len(BODY)
) + BODY
MODES = {"seq": 1, "conc": 10}
_SUMMARY = re.compile(r"^(?:summary|totals):\s*(\d+)", re.MULTILINE)


def _drive(port: int, requests: int) -> None:
    """``requests`` request/answer round trips on one keep-alive connection."""
    sock = socket.create_connection(("127.0.0.1", port))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    buf = b""
    try:
        for _ in range(requests):
            sock.sendall(REQUEST)
            while True:
                end = buf.find(b"\r\n\r\n")
                if end >= 0:
                    head = buf[:end].lower() + b"\r\n"
                    if not head.startswith(b"http/1.1 200"):
                        raise RuntimeError(f"unexpected answer {buf[:200]!r}")
                    at = head.index(b"content-length:") + 15
                    length = int(head[at : head.index(b"\r\n", at)])
                    if len(buf) >= end + 4 + length:
                        buf = buf[end + 4 + length :]
                        break
                chunk = sock.recv(65536)
                if not chunk:
                    raise RuntimeError("server closed the connection")
                buf += chunk
    finally:
        sock.close()


def drive(port: int, requests: int, connections: int) -> None:
    share, extra = divmod(requests, connections)
    errors: list[BaseException] = []

    def run(n: int) -> None:
        try:
            _drive(port, n)
        except BaseException as exc:
            errors.append(exc)

    threads = [
        threading.Thread(target=run, args=(share + (1 if i < extra else 0),))
        for i in range(connections)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(600)
    if errors:
        raise errors[0]


def count_instructions(
    tree: str, mode: str, requests: int, warmup: int, server: str = "rpcclient"
) -> dict[str, Any]:
    """One server process under callgrind serving ``warmup + requests`` requests."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["PYTHONHASHSEED"] = "0"
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "callgrind.out")
        command = [
            "valgrind",
            "--tool=callgrind",
            f"--callgrind-out-file={out}",
            sys.executable,
            "-c",
            SERVERS[server],
            json.dumps({"tree": tree}),
        ]
        proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
        try:
            assert proc.stdout is not None
            report = json.loads(proc.stdout.readline())
            connections = MODES[mode]
            drive(report["port"], warmup, connections)
            drive(report["port"], requests, connections)
            proc.send_signal(signal.SIGTERM)
            _, err = proc.communicate(timeout=120)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        if proc.returncode != 0:
            raise RuntimeError(f"server under callgrind failed:\n{err.decode()[-3000:]}")
        with open(out, encoding="utf-8", errors="replace") as fh:
            match = _SUMMARY.search(fh.read())
    if match is None:
        raise RuntimeError("no summary line in callgrind's output")
    return {"instructions": int(match.group(1)), **report}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--tree", default=HERE, help="source tree whose rpcclient is measured")
    parser.add_argument("--modes", default="seq,conc", help="seq, conc or both")
    parser.add_argument("--requests", default="2000,6000", help="the two counts: LOW,HIGH")
    parser.add_argument("--warmup", type=int, default=200, help="requests before the counted ones")
    parser.add_argument("--repeat", type=int, default=1, help="measurements per mode")
    parser.add_argument("--server", choices=sorted(SERVERS), default="rpcclient")
    parser.add_argument("--out", default=os.path.join(HERE, "bench", "results"))
    args = parser.parse_args(argv)
    if shutil.which("valgrind") is None:
        parser.error("valgrind is not installed (Debian: apt-get install valgrind)")
    low, high = (int(n) for n in args.requests.split(","))
    if not 0 < low < high:
        parser.error("--requests must be LOW,HIGH with 0 < LOW < HIGH")
    tree = os.path.abspath(args.tree)
    doc: dict[str, Any] = {
        "tool": "bench/server_callgrind.py",
        "tree": tree,
        "server": args.server,
        "requests": [low, high],
        "warmup": args.warmup,
        "python": sys.version.split()[0],
        "modes": {},
    }
    for mode in [m.strip() for m in args.modes.split(",") if m.strip()]:
        if mode not in MODES:
            parser.error(f"unknown mode {mode!r}: {', '.join(MODES)}")
        per: list[float] = []
        for _ in range(args.repeat):
            a = count_instructions(tree, mode, low, args.warmup, args.server)
            b = count_instructions(tree, mode, high, args.warmup, args.server)
            per.append((b["instructions"] - a["instructions"]) / (high - low))
            doc["compiled"] = a["compiled"]
            print(f"{mode}: {per[-1]:,.0f} instructions/request", flush=True)
        doc["modes"][mode] = {"per_request": per, "median": sorted(per)[len(per) // 2]}
    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(args.out, time.strftime("server-callgrind-%Y%m%d-%H%M%S.json"))
    with open(path, "w", encoding="utf-8") as fh:
        json.dump(doc, fh, indent=2)
    print(f"compiled={doc.get('compiled')}; results in {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
