"""The README's promises, run as a new user would: serve, then call.

The server runs as ``python -m rpcclient serve`` in a subprocess and the
client code from README.rst runs in another, **not** monkey-patched: the
gevent transport needs no patching.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.rst").read_text()


def readme_block(after: str) -> str:
    """The first literal block (``::``) after the line containing ``after``."""
    start = README.index(after)
    match = re.search(r"::\n\n((?:    .*\n|\n)+)", README[start:])
    assert match, f"no code block after {after!r}"
    return textwrap.dedent(match.group(1))


def test_readme_renders_without_warnings() -> None:
    docutils = pytest.importorskip("docutils.core")
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PendingDeprecationWarning)  # docutils' own API churn
        docutils.publish_string(
            README, writer_name="null", settings_overrides={"report_level": 2, "halt_level": 2}
        )


def test_serve_and_call_as_the_readme_shows() -> None:
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "rpcclient",
            "serve",
            "rpcclient.example:app",
            "--bind",
            "127.0.0.1:0",
        ],
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    try:
        assert server.stdout is not None
        first = server.stdout.readline()
        url = re.search(r"http://127\.0\.0\.1:\d+", first)
        assert url, first
        code = readme_block("and call it").replace("http://127.0.0.1:8000", url.group(0))
        assert "client.call(" in code
        # the README's comments state the results: check them
        checks = textwrap.dedent(
            """
            with Client(URL) as client:
                assert client.call("math.add", [1, 2]) == 3
                value = {1: b"\\x00", "k": (1, 2)}
                assert client.call("echo.echo", [value]) == {1: b"\\x00", "k": [1, 2]}
                user = client.service("user")
                assert user.get_profile(42) == user.get_profile(user_id=42)
            import socket, gevent.socket
            assert socket.socket is not gevent.socket.socket  # not monkey-patched
            print("README OK")
            """
        ).replace("URL", repr(url.group(0)))
        result = subprocess.run(
            [sys.executable, "-c", code + checks],
            check=False,
            capture_output=True,
            text=True,
            timeout=60,
            cwd=ROOT,
            env={**os.environ, "PYTHONWARNINGS": "error::ResourceWarning"},
        )
        assert result.returncode == 0, result.stderr
        assert "README OK" in result.stdout
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=10)
        if server.stdout:
            server.stdout.close()


def test_ci_runs_the_test_command_the_readme_gives() -> None:
    command = readme_block("**Running the tests**").strip().splitlines()[0]
    steps = [line for line in (ROOT / ".ci" / "run").read_text().splitlines() if line.strip()]
    assert steps[-1] == command


def test_setup_py_and_readme_quote_one_compiled_build_figure() -> None:
    # setup.py's docstring once said 1.2-1.3x while README said 1.45x
    setup_doc = (ROOT / "setup.py").read_text().split('"""')[1]
    figure = re.search(r"(\d+\.\d+)x the concurrent calls/s", setup_doc)
    assert figure, setup_doc
    compiled = README[README.index("\nThe compiled build\n") :]
    assert f"{figure.group(1)}x the interpreted package's concurrent calls/s" in compiled


def test_classifiers_name_every_python_the_tests_run_on() -> None:
    noxfile = (ROOT / "noxfile.py").read_text()
    versions = re.search(r"PYTHONS = \(([^)]*)\)", noxfile)
    assert versions, "noxfile.py names no PYTHONS"
    setup_cfg = (ROOT / "setup.cfg").read_text()
    claimed = set(re.findall(r"Programming Language :: Python :: (3\.\d+)", setup_cfg))
    assert claimed == set(re.findall(r'"(3\.\d+)"', versions.group(1)))
