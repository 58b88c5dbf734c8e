"""The ``rpcclient`` command line: one argparse parser, one subcommand per tool.

Each subcommand is a :class:`Subcommand` in :data:`SUBCOMMANDS`: a name, a
one-line help, a ``configure(parser)`` that adds its arguments, and a
``run(args) -> int`` that does the work and returns the exit status. Add a
tool by appending one entry (see the end of this module); ``main`` needs no
change. ``run`` reports expected failures on stderr and returns non-zero; it
raises only for bugs.

``serve`` does not monkey-patch: the bundled server is gevent-native, and
handlers should use cooperative I/O. To serve an app whose handlers use
blocking stdlib I/O, run ``python -m gevent.monkey --module rpcclient serve ...``.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import signal
import sys
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

__all__ = ["SUBCOMMANDS", "Subcommand", "main", "parse_bind"]

DEFAULT_BIND = "127.0.0.1:8000"


class Subcommand(NamedTuple):
    name: str
    help: str
    configure: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]


class UsageError(Exception):
    """A bad argument value found after parsing; printed, exit status 2."""


def parse_bind(text: str) -> tuple[str, int]:
    """``"HOST:PORT"`` (``"[::1]:PORT"`` for IPv6) -> ``(host, port)``."""
    host, sep, port_text = text.rpartition(":")
    if not sep or not port_text.isdigit() or int(port_text) > 65535:
        raise UsageError(f"--bind must be HOST:PORT, not {text!r}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return host, int(port_text)


def load_app(spec: str) -> Any:
    """Import ``"package.module:attr"`` (attr may be dotted) and return it."""
    module_name, sep, attr_path = spec.partition(":")
    if not sep or not module_name or not attr_path:
        raise UsageError(f"expected MODULE:APP, not {spec!r}")
    try:
        obj: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise UsageError(f"cannot import {module_name!r}: {exc}") from None
    for attr in attr_path.split("."):
        try:
            obj = getattr(obj, attr)
        except AttributeError:
            raise UsageError(f"{module_name!r} has no attribute {attr_path!r}") from None
    if not callable(obj):
        raise UsageError(f"{spec} is not a WSGI app (not callable)")
    return obj


# -- serve --------------------------------------------------------------------------


def _configure_serve(parser: argparse.ArgumentParser) -> None:
    # The defaults in the help are rpcclient.server._engine.wsgi's DEFAULT_*_TIMEOUT,
    # written out so that building the parser imports no server code (a test
    # compares them); unset flags leave RPCServer its own defaults.
    parser.add_argument(
        "app", metavar="MODULE:APP", help="the WSGI app, e.g. rpcclient.example:app"
    )
    parser.add_argument(
        "--bind",
        default=DEFAULT_BIND,
        metavar="HOST:PORT",
        help=f"address to listen on (default {DEFAULT_BIND}; port 0 picks a free port)",
    )
    parser.add_argument(
        "--max-body-size",
        type=int,
        metavar="N",
        help="largest request body in bytes (RPCApp only; default 16 MiB)",
    )
    parser.add_argument(
        "--backlog", type=int, metavar="N", help="listen backlog (default: gevent's, 128)"
    )
    parser.add_argument(
        "--max-connections",
        type=int,
        metavar="N",
        help="connections served at once; at the bound the longest-idle one is closed "
        "for a new one (default: the open-file limit less 64, at most 10,000)",
    )
    parser.add_argument(
        "--idle-timeout",
        type=float,
        metavar="SECONDS",
        help="close a keep-alive connection idle this long (default 15)",
    )
    parser.add_argument(
        "--header-timeout",
        type=float,
        metavar="SECONDS",
        help="a request head must be complete this long after its first byte (default 10)",
    )
    parser.add_argument(
        "--body-timeout",
        type=float,
        metavar="SECONDS",
        help="longest wait for more body bytes, or for the client to read an answer (default 30)",
    )
    parser.add_argument(
        "--dedup",
        metavar="STORE",
        help="run each request id at most once (RPCApp only): 'memory' (this process) "
        "or a redis://HOST:PORT/DB or unix:// URL shared by every worker",
    )
    parser.add_argument(
        "--grace",
        type=float,
        default=5.0,
        metavar="SECONDS",
        help="on SIGTERM/SIGINT, how long calls in progress may take to finish (default 5)",
    )


def _run_serve(args: argparse.Namespace) -> int:
    import gevent

    from ..server._engine.app import RPCApp, serve

    app = load_app(args.app)
    if args.max_body_size is not None:
        if not isinstance(app, RPCApp):
            raise UsageError("--max-body-size applies only to an rpcclient.server.RPCApp")
        if args.max_body_size < 1:
            raise UsageError("--max-body-size must be positive")
        app.max_body_size = args.max_body_size
    if args.dedup is not None:
        if not isinstance(app, RPCApp):
            raise UsageError("--dedup applies only to an rpcclient.server.RPCApp")
        _set_dedup(app, args.dedup)
    host, port = parse_bind(args.bind)
    options = _server_options(args)
    try:
        server = serve(app, host, port, backlog=args.backlog, **options)
    except OSError as exc:
        print(f"rpcclient: cannot listen on {args.bind}: {exc}", file=sys.stderr)
        return 1
    # Close only: serve_forever() returns once closed and then stops with grace.
    for signum in (signal.SIGTERM, signal.SIGINT):
        gevent.signal_handler(signum, server.close)
    print(f"rpcclient: serving {args.app} on {server.url}", flush=True)
    server.serve_forever(stop_timeout=args.grace)
    print("rpcclient: stopped", file=sys.stderr, flush=True)
    return 0


def _server_options(args: argparse.Namespace) -> dict[str, Any]:
    """The RPCServer options the flags set (unset flags keep the server's defaults)."""
    options: dict[str, Any] = {}
    if args.max_connections is not None:
        if args.max_connections < 1:
            raise UsageError("--max-connections must be at least 1")
        options["max_connections"] = args.max_connections
    for name in ("idle_timeout", "header_timeout", "body_timeout"):
        value = getattr(args, name)
        if value is not None:
            if not value > 0:  # written so that nan is refused too
                flag = "--" + name.replace("_", "-")
                raise UsageError(f"{flag} must be a positive number of seconds, not {value!r}")
            options[name] = value
    return options


def _set_dedup(app: Any, spec: str) -> None:
    from ..server import dedup as _dedup

    store: _dedup.DedupStore
    if spec == "memory":
        store = _dedup.MemoryDedupStore()
    elif spec.startswith(("redis://", "rediss://", "unix://")):
        try:
            store = _dedup.RedisDedupStore(spec)
        except ImportError:
            message = "--dedup redis:// needs redis-py: pip install rpcclient[redis]"
            raise UsageError(message) from None
    else:
        raise UsageError(f"--dedup must be 'memory' or a redis:// URL, not {spec!r}")
    app.set_dedup(store)


def _lazy(module: str, attr: str) -> Callable[[Any], Any]:
    """A subcommand function imported on use: ``rpcclient serve`` stays light."""

    def call(arg: Any) -> Any:
        return getattr(importlib.import_module(module), attr)(arg)

    return call


SUBCOMMANDS: list[Subcommand] = [
    Subcommand(
        "serve", "serve a WSGI app (an RPCApp) on the bundled server", _configure_serve, _run_serve
    ),
    Subcommand(
        "ab",
        "compare two clients side by side on one workload (default: requests vs gevent)",
        _lazy("rpcclient._tools.ab", "configure_parser"),
        _lazy("rpcclient._tools.ab", "run"),
    ),
    Subcommand(
        "stats",
        "rank methods by total time from a client.stats() JSON dump",
        _lazy("rpcclient._tools.stats", "configure_parser"),
        _lazy("rpcclient._tools.stats", "run"),
    ),
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rpcclient", description="rpcclient tools")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for command in SUBCOMMANDS:
        sub_parser = sub.add_parser(command.name, help=command.help, description=command.help)
        command.configure(sub_parser)
        sub_parser.set_defaults(_run=command.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one subcommand; returns the exit status (2 for usage errors)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        status: int = args._run(args)
    except UsageError as exc:
        parser.print_usage(sys.stderr)
        print(f"rpcclient {args.command}: error: {exc}", file=sys.stderr)
        return 2
    return status
