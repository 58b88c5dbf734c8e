"""rpcclient.contrib.locust and bench/locustfile.py, run for real.

Importing Locust monkey-patches the whole process (and changes urllib3's pool
queue), so nothing here imports it: every check runs Locust in a subprocess,
headless, against the bundled server on loopback, for a few seconds.

The end-to-end run loads ``bench/locustfile.py`` together with a small
locustfile written by the test (:data:`CHECKS`): it adds a user whose calls
fail on purpose and go through a service proxy and ``call_many``, checks
every ``request`` event's context, and, once Locust has stopped the users,
counts the process's connections still open to the server (none may be).
"""

from __future__ import annotations

import csv
import json
import os
import re
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import gevent
import gevent.subprocess
import pytest

REPO = Path(__file__).resolve().parents[2]
LOCUSTFILE = REPO / "bench" / "locustfile.py"

# Variables that change what the locustfile's users do: the test sets its own.
_ARM_ENV = frozenset(
    ["RPCCLIENT_TRANSPORT", "RPCCLIENT_BENCH_A", "RPCCLIENT_BENCH_PAYLOAD", "RPCCLIENT_BENCH_WAIT"]
)


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in _ARM_ENV}
    env["PYTHONPATH"] = str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")
    env.update(extra)
    return env


def _run_python(code: str, timeout: float = 30.0) -> str:
    """Run ``code`` in a fresh interpreter; returns its stdout, fails on a non-zero exit."""
    proc = gevent.subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=str(REPO),
        env=_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return str(proc.stdout)


@pytest.fixture
def server_url() -> Iterator[str]:
    """The bundled server with the example app, in its own process, port 0."""
    cmd = [sys.executable, "-m", "rpcclient", "serve", "rpcclient.example:app"]
    cmd += ["--bind", "127.0.0.1:0"]
    with gevent.subprocess.Popen(
        cmd,
        cwd=str(REPO),
        env=_env(),
        stdout=gevent.subprocess.PIPE,
        stderr=gevent.subprocess.DEVNULL,
    ) as proc:
        try:
            with gevent.Timeout(20):
                line = proc.stdout.readline().decode()
            match = re.search(r"on (http://127\.0\.0\.1:\d+)$", line.strip())
            assert match, line
            yield match.group(1)
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=5)
            except gevent.subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)


def test_import_rpcclient_does_not_import_locust() -> None:
    out = _run_python(
        """
        import sys
        import rpcclient, rpcclient.contrib
        from gevent import monkey
        assert "locust" not in sys.modules, "importing rpcclient imported locust"
        assert "rpcclient.contrib.locust" not in sys.modules
        assert not monkey.is_module_patched("socket"), "the process was monkey-patched"
        print("clean")
        """
    )
    assert out.strip() == "clean"


def test_reporter_and_user_contract() -> None:
    """LocustReporter's event, in a process of its own (Locust patches it)."""
    out = _run_python(
        """
        import locust  # first, as the locust command does
        from gevent import GreenletExit
        from locust.env import Environment
        from locust.exception import LocustError

        from rpcclient import MockTransport, NO_RETRY, RemoteError, Timeout, msgpack_response
        from rpcclient.contrib.locust import LocustReporter, RPCUser

        fired = []
        env = Environment(user_classes=[])
        env.events.request.add_listener(lambda **kw: fired.append(kw))

        def handler(request):
            if request.target == "/debug/fail":
                return msgpack_response(status=500, error=("ValueError", "no"))
            if request.target == "/debug/kill":
                raise GreenletExit
            return msgpack_response(7)

        class User(RPCUser):
            host = "http://svc.invalid"
            timeout = 3.0
            client_options = {"retry": NO_RETRY, "transport": MockTransport(handler)}

            def context(self):
                return {"who": "user-1"}

        user = User(env)
        assert user.client.timeout == Timeout.coerce(3.0)
        assert user.client.call("math.add", [3, 4]) == 7
        try:
            user.client.call("debug.fail")
        except RemoteError:
            pass
        else:
            raise AssertionError("no RemoteError")
        try:
            user.client.call("debug.kill")  # a stopped user: not an outcome, not reported
        except GreenletExit:
            pass
        assert user.client.service("user").get(1) == 7
        assert user.client.call_many([("math.add", [1, 2]), ("debug.fail", None)])[0] == 7

        names = [(e["request_type"], e["name"], e["exception"] is None) for e in fired]
        assert names == [
            ("mock", "math.add", True),
            ("mock", "debug.fail", False),
            ("mock", "user.get", True),
            ("mock", "math.add", True),
            ("mock", "debug.fail", False),
        ], names
        ok, failed = fired[0], fired[1]
        assert ok["response"] == 7 and ok["response_length"] == 1  # msgpack of 7
        assert 0 <= ok["response_time"] < 1000 and ok["url"] == "http://svc.invalid"
        assert ok["context"]["who"] == "user-1" and ok["context"]["transport"] == "mock"
        assert ok["context"]["attempts"] == 1 and ok["context"]["request_id"]
        assert isinstance(failed["exception"], RemoteError) and failed["response"] is None
        assert repr(failed["exception"]).startswith("RemoteError('remote ValueError")

        user.on_stop()
        assert user.client.stats()["closed"]

        # request_type overrides the transport name; a missing host is refused
        fired.clear()
        User.request_type = "A"
        User.client_options = {"transport": MockTransport(handler)}  # the first one is closed
        User(env).client.call("math.add", [1, 1])
        assert fired[0]["request_type"] == "A"
        User.host = None
        try:
            User(env)
        except LocustError as exc:
            assert "--host" in str(exc)
        else:
            raise AssertionError("no LocustError without a host")

        # a user whose on_start raised is not stopped by Locust, just dead:
        # its client is closed all the same
        import gevent
        from gevent.pool import Group

        class Broken(RPCUser):
            host = "http://svc.invalid"
            client_options = {"transport": MockTransport(handler)}

            def on_start(self):
                raise RuntimeError("login failed on purpose")

        broken = Broken(env)
        broken.start(Group()).join(timeout=5)
        for _ in range(100):
            if broken.client.stats()["closed"]:
                break
            gevent.sleep(0.01)
        assert broken.client.stats()["closed"], "the client of a dead user is still open"

        # the reporter on a client of one's own
        from rpcclient import Client
        fired.clear()
        with Client("http://x.invalid", transport=MockTransport(handler)) as client:
            client.add_hook(LocustReporter(env, request_type="own"))
            client.call("a.b")
        assert [(e["request_type"], e["name"]) for e in fired] == [("own", "a.b")]
        print("contract ok")
        """
    )
    assert out.strip().endswith("contract ok")


# Added to bench/locustfile.py in the end-to-end run (its own module, so the
# benchmark file itself stays free of test scaffolding).
CHECKS = '''
import json
import os

import psutil
from locust import constant, events, task

from rpcclient import RemoteError
from rpcclient.contrib.locust import RPCUser

PORT = int(os.environ["CHECKS_PORT"])
seen = {"events": 0, "bad_context": 0}


class OtherPathsUser(RPCUser):
    """Failing calls, a service proxy and call_many: every path is reported."""

    fixed_count = 1
    request_type = "checks"
    wait_time = constant(0.01)

    @task
    def calls(self):
        try:
            self.client.call("debug.fail", ["boom"])
        except RemoteError:
            pass
        assert self.client.service("user").get_profile(7)["id"] == 7
        results = self.client.call_many([("debug.sleep", [0]), ("debug.fail", ["in call_many"])])
        assert results[0] == 0 and isinstance(results[1], RemoteError), results


@events.request.add_listener
def check_context(context, **_kw):
    seen["events"] += 1
    if not {"transport", "endpoint", "request_id", "attempts"} <= set(context):
        seen["bad_context"] += 1


@events.test_stop.add_listener
def count_open_connections(environment, **_kw):
    # every user is stopped by now: their clients must have closed every socket
    open_now = [
        c for c in psutil.Process().net_connections("tcp") if c.raddr and c.raddr.port == PORT
    ]
    figures = {**seen, "open_connections": len(open_now), "users": environment.runner.user_count}
    with open(os.environ["CHECKS_REPORT"], "w") as f:
        json.dump(figures, f)
'''


def _read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


@pytest.mark.timeout(60)
def test_locustfile_headless_run_reports_every_call(server_url: str, tmp_path: Path) -> None:
    checks = tmp_path / "rpc_checks.py"
    checks.write_text(CHECKS)
    report = tmp_path / "report.json"
    prefix = tmp_path / "run"
    port = server_url.rsplit(":", 1)[1]
    cmd = [sys.executable, "-m", "locust", "-f", f"{LOCUSTFILE},{checks}"]
    cmd += ["--headless", "-u", "5", "-r", "5", "-t", "3s", "--host", server_url]
    cmd += ["--csv", str(prefix), "--only-summary", "--exit-code-on-error", "3"]
    started = time.monotonic()
    proc = gevent.subprocess.run(
        cmd,
        cwd=str(REPO),
        env=_env(CHECKS_PORT=port, CHECKS_REPORT=str(report), RPCCLIENT_BENCH_PAYLOAD="512"),
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    output = proc.stdout + proc.stderr
    # 3: Locust saw failures (the deliberate ones); 2 would be a crashed listener
    assert proc.returncode == 3, output
    assert "Traceback" not in output, output
    assert time.monotonic() - started < 20, "the run took too long"

    rows = {(r["Type"], r["Name"]): r for r in _read_csv(Path(f"{prefix}_stats.csv"))}
    # the A/B pair: one row per transport and method, all calls good
    for key in [
        ("requests", "echo.echo"),
        ("gevent", "echo.echo"),
        ("requests", "math.add"),
        ("gevent", "math.add"),
        ("checks", "user.get_profile"),  # a service proxy
        ("checks", "debug.sleep"),  # call_many
    ]:
        assert key in rows, (key, sorted(rows))
        assert int(rows[key]["Request Count"]) > 0, rows[key]
        assert rows[key]["Failure Count"] == "0", rows[key]
    fail = rows["checks", "debug.fail"]
    assert int(fail["Failure Count"]) == int(fail["Request Count"]) > 0, fail

    failures = _read_csv(Path(f"{prefix}_failures.csv"))
    assert {(r["Method"], r["Name"]) for r in failures} == {("checks", "debug.fail")}, failures
    errors = sorted(r["Error"] for r in failures)
    assert len(errors) == 2, errors  # the request id stays out: one row per message
    for error, message in zip(errors, ["boom", "in call_many"], strict=True):
        assert error == f"RemoteError('remote ValueError (HTTP 500): {message}')", errors
    assert _read_csv(Path(f"{prefix}_exceptions.csv")) == [], "a task raised"

    checked = json.loads(report.read_text())
    assert checked["events"] > 0 and checked["bad_context"] == 0, checked
    assert checked["users"] == 0, checked
    assert checked["open_connections"] == 0, checked
