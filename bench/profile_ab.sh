#!/usr/bin/env bash
# A py-spy flame graph of one A/B arm.
#
# Starts the bundled server (the example app) on a free loopback port in its
# own process, runs one arm -- a fresh client process calling echo.echo
# CALLS times from CONCURRENCY greenlets -- and samples that arm with py-spy:
# attached by pid (needs ptrace: root, or kernel.yama.ptrace_scope=0), or, when
# attaching is refused, as py-spy's own child (`py-spy record -- python ...`).
# The arm prints its rpcclient.report table (methods by total time) to stderr,
# so the flame graph comes with the figures it explains.
#
# usage: bench/profile_ab.sh [ARM] [OUT.svg]
#   ARM        the arm's transport: gevent (default), requests, urllib3
#   OUT.svg    default ./profile-ARM.svg
# environment:
#   CALLS=20000 CONCURRENCY=10 BODY=100   the workload
#   RATE=250                              samples per second
#   NATIVE=1   add --native: C frames too (msgpack, gevent's loop, ssl)
#   IDLE=1     add --idle: also greenlets waiting in the hub (where time waits)
#   MODE=attach|spawn                     force one way of sampling
#   PYTHON=python3  PYSPY=py-spy
set -euo pipefail

ARM=${1:-gevent}
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$HERE")
OUT=${2:-profile-$ARM.svg}
PYTHON=${PYTHON:-python3}
PYSPY=${PYSPY:-py-spy}
CALLS=${CALLS:-20000}
CONCURRENCY=${CONCURRENCY:-10}
BODY=${BODY:-100}
RATE=${RATE:-250}
MODE=${MODE:-attach}

command -v "$PYSPY" >/dev/null || { echo "profile_ab: $PYSPY not found (pip install py-spy)" >&2; exit 2; }
mkdir -p "$(dirname "$OUT")"
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
WORK=$(mktemp -d)
SERVER_PID=
ARM_PID=
cleanup() {
    [ -n "$ARM_PID" ] && kill "$ARM_PID" 2>/dev/null || true
    [ -n "$SERVER_PID" ] && kill "$SERVER_PID" 2>/dev/null && wait "$SERVER_PID" 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT

# The server: its first line names the URL it listens on.
"$PYTHON" -m rpcclient serve rpcclient.example:app --bind 127.0.0.1:0 >"$WORK/server.log" 2>&1 &
SERVER_PID=$!
URL=
for _ in $(seq 100); do
    URL=$(sed -n 's/^rpcclient: serving .* on \(http:[^ ]*\)$/\1/p' "$WORK/server.log")
    [ -n "$URL" ] && break
    kill -0 "$SERVER_PID" 2>/dev/null || break
    sleep 0.1
done
[ -n "$URL" ] || { echo "profile_ab: the server did not start:" >&2; cat "$WORK/server.log" >&2; exit 1; }

# The arm: a file, so its frames carry a real name in the graph.
cat >"$WORK/arm.py" <<'EOF'
import sys
import time

arm, url, calls, concurrency, body = sys.argv[1], sys.argv[2], *map(int, sys.argv[3:6])
if arm in ("requests", "urllib3"):  # cooperative only when patched, as users run them
    from gevent import monkey

    monkey.patch_all()
import gevent

import rpcclient

payload = b"x" * body
with rpcclient.Client(url, transport=arm, pool_size=concurrency) as client:
    client.call("echo.echo", [payload])  # connected before sampling matters
    time.sleep(0.3)  # attach mode: py-spy attaches while nothing happens
    per_worker = [calls // concurrency + (i < calls % concurrency) for i in range(concurrency)]

    def worker(n: int) -> None:
        for _ in range(n):
            client.call("echo.echo", [payload])

    started = time.perf_counter()
    gevent.joinall([gevent.spawn(worker, n) for n in per_worker], raise_error=True)
    elapsed = time.perf_counter() - started
    print(f"arm {arm}: {calls} calls in {elapsed:.2f} s ({calls / elapsed:.0f}/s)", file=sys.stderr)
    print(rpcclient.report(client.stats()), file=sys.stderr)
EOF
ARM_CMD=("$PYTHON" "$WORK/arm.py" "$ARM" "$URL" "$CALLS" "$CONCURRENCY" "$BODY")
SPY_OPTS=(--rate "$RATE" --output "$OUT")
[ "${NATIVE:-0}" = 1 ] && SPY_OPTS+=(--native)
[ "${IDLE:-0}" = 1 ] && SPY_OPTS+=(--idle)

if [ "$MODE" = attach ]; then
    "${ARM_CMD[@]}" &
    ARM_PID=$!
    sleep 0.1
    if "$PYSPY" record "${SPY_OPTS[@]}" --pid "$ARM_PID" 2>"$WORK/spy.log"; then
        wait "$ARM_PID"
        ARM_PID=
        tail -n 1 "$WORK/spy.log" >&2
        echo "profile_ab: $OUT (attached to pid, arm $ARM)" >&2
        exit 0
    fi
    echo "profile_ab: cannot attach ($(grep -m1 -i error "$WORK/spy.log" || true)); running under py-spy" >&2
    wait "$ARM_PID" || true
    ARM_PID=
fi
"$PYSPY" record "${SPY_OPTS[@]}" -- "${ARM_CMD[@]}"
echo "profile_ab: $OUT (py-spy started the arm, arm $ARM)" >&2
