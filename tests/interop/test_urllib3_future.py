"""The blocking transports with urllib3-future in place of urllib3 (issue 12, item 10).

urllib3-future installs itself as the ``urllib3`` package (niquests pulls it
in), with its own HTTP/1.1 machinery and 4-tuple socket options. It is
installed with pip into a temporary directory put first on ``sys.path`` of a
subprocess, so this environment keeps the real urllib3; there the whole of
``tests/wire/test_blocking_transports.py`` must pass. Needs PyPI (or pip's
configured index) to be reachable; the install takes ~10 s, the run ~10 s.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

#: the release tested (bump deliberately)
URLLIB3_FUTURE = "urllib3-future==2.25.904"


@pytest.fixture(scope="module")
def future_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    target = tmp_path_factory.mktemp("urllib3_future")
    pip = subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--target", str(target), URLLIB3_FUTURE],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert pip.returncode == 0, f"cannot install {URLLIB3_FUTURE}: {pip.stderr[-2000:]}"
    return target


def _env(target: Path) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(target), os.getcwd()])}


def test_it_is_urllib3_future_and_its_socket_options_apply(future_dir: Path) -> None:
    script = (
        "import socket, urllib3, urllib3.connection as c\n"
        "from rpcclient._transports.blocking.connections import apply_socket_options\n"
        f"assert urllib3.__file__.startswith({str(future_dir)!r}), urllib3.__file__\n"
        "opts = c.HTTPConnection.default_socket_options\n"
        "assert any(len(o) == 4 for o in opts), opts\n"
        "s = socket.socket()\n"
        "apply_socket_options(s, opts)\n"
        "assert s.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)\n"
        "s.close()\n"
        "print(urllib3.__version__)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=60,
        env=_env(future_dir),
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert URLLIB3_FUTURE.endswith(result.stdout.strip())


def test_blocking_transport_suite_passes_on_urllib3_future(future_dir: Path) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "gevent.monkey",
            "--module",
            "pytest",
            "-q",
            "tests/wire/test_blocking_transports.py",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        env=_env(future_dir),
        check=False,
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert " passed" in result.stdout and "failed" not in result.stdout
