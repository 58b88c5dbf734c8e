"""One command for lint, types and tests on the oldest and newest supported Python.

    .venv/bin/nox                 # both sessions, as CI runs them (.ci/run)
    .venv/bin/nox -s tests-3.13   # one of them
    .venv/bin/nox -s tests-3.11 -- tests/wire/test_retry.py -x   # arguments go to pytest

Each session is a fresh virtualenv with ``pip install -e '.[test]'`` (the
compiled build, which also re-runs the gevent suites on the interpreted
sources: tests/wire/test_build.py) and runs the suite as README.rst says,
monkey-patched. Lint (ruff) and types (mypy) are tests of the suite
(tests/unit/test_lint.py), so they run on both Pythons too.

Why nox, not tox: the sessions are Python code (the interpreter lookup below
is a function, not ini syntax), as urllib3 and pip run theirs.
"""

from __future__ import annotations

import glob
import shutil
import subprocess

import nox

#: the oldest and the newest Python the package supports (setup.cfg's classifiers)
PYTHONS = ("3.11", "3.13")

nox.options.sessions = [f"tests-{version}" for version in PYTHONS]
nox.options.error_on_missing_interpreters = True  # a skipped Python is not a pass


def interpreter(version: str) -> str:
    """A ``pythonX.Y`` that runs: on PATH, else one of pyenv's versions.

    pyenv puts a shim for every installed version on PATH, but the shim of a
    version that is not selected fails when run; so each candidate is tried.
    """
    candidates = [shutil.which(f"python{version}")]
    candidates += sorted(glob.glob(f"/root/.pyenv/versions/{version}*/bin/python{version}"))
    candidates += sorted(glob.glob(f"/usr/bin/python{version}"))
    for candidate in candidates:
        if not candidate:
            continue
        if subprocess.run([candidate, "-c", ""], check=False, capture_output=True).returncode == 0:
            return candidate
    return version  # nox reports it missing, and fails (error_on_missing_interpreters)


def _tests(session: nox.Session) -> None:
    session.install("-q", "-e", ".[test]")
    session.run("python", "-m", "gevent.monkey", "--module", "pytest", *session.posargs)


for _version in PYTHONS:
    nox.session(name=f"tests-{_version}", python=interpreter(_version))(_tests)
