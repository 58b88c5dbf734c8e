"""The two arms and the server: each in its own process, started fresh.

An arm is a transport and ``Client`` options (:class:`ArmSpec`); each run of
an arm is a new interpreter (:func:`run_arm_process`) that builds the
client, checks one call, measures (:func:`.load.measure`) and prints its
figures as one JSON line. Arms whose transport is only cooperative under
monkey-patching (``requests``, ``urllib3``) call ``gevent.monkey.patch_all()``
first thing; ``gevent`` arms run unpatched, as users run them. The bundled
server (:func:`start_server`) runs in another process on another core.
"""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "ARM_OPTIONS",
    "ECHO",
    "PATCHED_TRANSPORTS",
    "TOOL_OPTIONS",
    "ArmFailed",
    "ArmSpec",
    "ServerProcess",
    "child_env",
    "pin_cpus",
    "run_arm_process",
    "start_process_server",
    "start_server",
]

#: the first stdout line of a counting server process starts with this
SERVING_PREFIX = "rpcclient ab: serving on "
#: arms whose transport needs a monkey-patched process to be cooperative
PATCHED_TRANSPORTS = frozenset({"requests", "urllib3"})
#: ``Client`` options an arm spec may set (``gevent:pool_size=5,timeout=none``)
ARM_OPTIONS = frozenset(
    {"pool_size", "timeout", "stats", "deadline_header", "idle_timeout", "max_connection_age"}
)
#: options of the arm itself, not of its Client: ``delay_ms=N`` waits N ms
#: (``gevent.sleep``) inside every timed call, an arm made slower on purpose
#: (to check that a verdict sees it)
TOOL_OPTIONS = frozenset({"delay_ms"})
#: the default workload: echo a bytes payload
ECHO = "echo.echo"


class ArmFailed(Exception):
    """An arm could not be built or its process failed; the message says why."""


def _parse_value(text: str) -> Any:
    lowered = text.lower()
    if lowered in {"none", "null"}:
        return None
    if lowered in {"true", "yes", "on"}:
        return True
    if lowered in {"false", "no", "off"}:
        return False
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    raise ArmFailed(f"cannot read option value {text!r} (a number, true/false or none)")


@dataclass(frozen=True)
class ArmSpec:
    """One arm: a transport and ``Client`` options, from text like
    ``"gevent"`` or ``"gevent:pool_size=5,timeout=none"``."""

    text: str
    transport: str
    options: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def parse(cls, text: str) -> ArmSpec:
        """Raises :class:`ArmFailed` for an empty transport or an unknown option."""
        name, _, rest = text.strip().partition(":")
        if not name:
            raise ArmFailed(f"arm {text!r}: no transport name")
        options: dict[str, Any] = {}
        for item in filter(None, (p.strip() for p in rest.split(","))):
            key, eq, value = item.partition("=")
            key = key.strip()
            known = ARM_OPTIONS | TOOL_OPTIONS
            if not eq or key not in known:
                raise ArmFailed(
                    f"arm {text!r}: bad option {item!r} (known: {', '.join(sorted(known))})"
                )
            options[key] = _parse_value(value.strip())
        delay = options.get("delay_ms", 0)
        if isinstance(delay, bool) or not isinstance(delay, int | float) or not 0 <= delay <= 1e4:
            raise ArmFailed(f"arm {text!r}: delay_ms must be a number of ms in 0..10000")
        return cls(text.strip(), name, options)

    def client_options(self, pool_size: int) -> dict[str, Any]:
        """The ``Client`` keyword arguments (the tool's own options left out)."""
        own = {k: v for k, v in self.options.items() if k not in TOOL_OPTIONS}
        return {"pool_size": pool_size, **own}

    @property
    def delay_s(self) -> float:
        """Seconds the arm waits inside every timed call (``delay_ms``; 0 by default)."""
        return float(self.options.get("delay_ms", 0)) / 1000.0

    def check(self, pool_size: int) -> None:
        """Build (and close) the client without I/O: ArmFailed if it cannot be built."""
        from ..._public import Client

        try:
            Client(
                "http://127.0.0.1:9", transport=self.transport, **self.client_options(pool_size)
            ).close()
        except (ValueError, TypeError, ImportError) as exc:
            raise ArmFailed(f"arm {self.text!r}: cannot build the client: {exc}") from None


def pin_cpus() -> tuple[int | None, int | None]:
    """``(client_cpu, server_cpu)``: different cores when 2+ are usable, else Nones."""
    try:
        cpus = sorted(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return None, None
    if len(cpus) < 2:
        return None, None
    return cpus[0], cpus[-1]


def child_env() -> dict[str, str]:
    """This environment, with rpcclient importable in a child started anywhere."""
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [root, env.get("PYTHONPATH")]))
    return env


def _pin(cpu: int | None) -> None:
    if cpu is not None and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {cpu})


# The first statements an arm process runs: patch (when the transport needs it)
# before anything else imports socket, ssl or threading.
_ARM_BOOT = """\
import json, sys
config = json.loads(sys.argv[1])
if config["patch"]:
    from gevent import monkey
    monkey.patch_all()
from rpcclient._tools.ab.arms import _arm_main
sys.exit(_arm_main(config))
"""


def _arm_main(config: dict[str, Any]) -> int:
    """Body of an arm process: one measured run, its figures as JSON on stdout.

    The workload is ``config["method"]`` with ``config["args"]`` (a JSON
    value; None: no arguments), or by default ``echo.echo`` of a
    ``body_size``-byte payload (whose answer is checked once). The first call is made before
    measuring: if it fails, the arm fails with its error and nothing is
    measured.
    """
    _pin(config.get("cpu"))
    import gevent

    from ..._public import Client
    from .load import measure

    method = config.get("method", ECHO)
    payload: Any = None
    args: Any = config.get("args")
    if args is None and method == ECHO:
        payload = b"x" * config["body_size"]
        args = [payload]
    delay = float(config.get("delay_s", 0.0))
    with Client(config["url"], transport=config["transport"], **config["options"]) as client:
        try:
            answer = client.call(method, args)
        except Exception as exc:  # noqa: BLE001 - reported: the arm fails with it
            print(f"rpcclient ab: the first call of {method} failed: {exc!r}", file=sys.stderr)
            return 1
        if payload is not None and answer != payload:
            print(f"rpcclient ab: {method} answered something else", file=sys.stderr)
            return 1

        if delay > 0:

            def call() -> Any:
                gevent.sleep(delay)
                return client.call(method, args)

        else:

            def call() -> Any:
                return client.call(method, args)

        amount: dict[str, Any] = {"calls": config["calls"]}
        if config.get("duration"):
            amount = {"duration": config["duration"]}
        result = measure(
            call,
            **amount,
            concurrency=config["concurrency"],
            warmup=config["warmup"],
            rate=config.get("rate"),
            counters_url=config["url"] if config["counters"] else None,
            keep_latencies=False,
        )
    sys.stdout.write(json.dumps(result) + "\n")
    return 0


def run_arm_process(config: dict[str, Any], timeout: float) -> dict[str, Any]:
    """Run one arm in a fresh interpreter; its result dict, or ArmFailed."""
    command = [sys.executable, "-c", _ARM_BOOT, json.dumps(config)]
    try:
        done = subprocess.run(command, check=False, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise ArmFailed(f"arm {config['label']!r} did not finish within {timeout:.0f} s") from None
    if done.returncode != 0:
        tail = "\n".join(done.stderr.strip().splitlines()[-8:])
        raise ArmFailed(f"arm {config['label']!r} exited with {done.returncode}:\n{tail}")
    lines = done.stdout.strip().splitlines()
    try:
        result: dict[str, Any] = json.loads(lines[-1])
    except (IndexError, ValueError):
        raise ArmFailed(f"arm {config['label']!r} printed no result") from None
    return result


# -- the server process --------------------------------------------------------------


def _server_main(argv: Sequence[str]) -> int:
    """Body of a server process: the counting bundled server until SIGTERM or orphaned."""
    import gevent

    cpu = int(argv[0]) if argv and argv[0] != "-" else None
    _pin(cpu)
    from ...example import app
    from .counters import serve_counting

    server = serve_counting(app, "127.0.0.1", 0)
    parent = os.getppid()
    gevent.signal_handler(signal.SIGTERM, server.close)
    print(f"{SERVING_PREFIX}{server.url}", flush=True)

    def orphan_watch() -> None:
        # never outlive the tool that started us
        while os.getppid() == parent:
            gevent.sleep(1.0)
        server.close()

    gevent.spawn(orphan_watch)
    server.serve_forever(stop_timeout=1.0)
    return 0


@dataclass
class ServerProcess:
    """A server running in a child process, reachable at ``url``."""

    process: subprocess.Popen[str]
    url: str

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(5.0)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.process.stdout is not None:
            self.process.stdout.close()


def start_process_server(command: Sequence[str], timeout: float = 15.0) -> ServerProcess:
    """Start ``command``; wait for its first stdout line ``...serving... on URL``.

    The URL is the last word of that line. Raises RuntimeError if the
    process exits or says nothing within ``timeout`` seconds.
    """
    process = subprocess.Popen(
        list(command), stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True, env=child_env()
    )
    assert process.stdout is not None
    ready, _, _ = select.select([process.stdout], [], [], timeout)
    line = process.stdout.readline() if ready else ""
    if "serving" not in line:
        process.kill()
        process.wait()
        raise RuntimeError(f"server {command!r} did not start: {line.strip()!r}")
    return ServerProcess(process, line.split()[-1])


@contextmanager
def start_server(cpu: int | None = None) -> Iterator[ServerProcess]:
    """The bundled server (example app, counting connections) in its own process."""
    code = (
        "import sys; from rpcclient._tools.ab.arms import _server_main; "
        "sys.exit(_server_main(sys.argv[1:]))"
    )
    server = start_process_server([sys.executable, "-c", code, "-" if cpu is None else str(cpu)])
    try:
        yield server
    finally:
        server.stop()
