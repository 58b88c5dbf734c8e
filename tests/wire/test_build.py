"""The compiled build and the pure-Python fallback (setup.py).

CI installs the compiled build wherever a C compiler is present; the
interpreted package must behave the same, so the suites of the gevent path
run once more against a copy of the sources without the extensions.
"""

from __future__ import annotations

import ast
import importlib
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

import rpcclient

PACKAGE = Path(rpcclient.__file__).parent
TESTS = Path(__file__).resolve().parents[1]  # tests/, the suites are named from there


def compiled_modules() -> list[str]:
    """The dotted names setup.py compiles: every module of its COMPILED_FOLDERS but __init__."""
    # the checkout's setup.py (the interpreted run imports a copy without it)
    tree = ast.parse((TESTS.parent / "setup.py").read_text())
    folders = next(
        ast.literal_eval(node.value)
        for node in tree.body
        if isinstance(node, ast.Assign)
        and any(isinstance(t, ast.Name) and t.id == "COMPILED_FOLDERS" for t in node.targets)
    )
    names = []
    for folder in folders:
        for path in sorted((TESTS.parent / folder).glob("*.py")):
            if path.name != "__init__.py":
                names.append(f"{folder.replace('/', '.')}.{path.stem}")
    return names


#: the suites that run again on the interpreted package (what the compiled modules serve)
PURE_SUITES = (
    "wire/test_build.py::test_the_build_is_the_one_expected",
    "wire/test_conformance.py",
    "wire/test_gevent_transport.py",
    "wire/test_faults.py",
    "wire/test_retry.py",
    "wire/test_dns_spread.py",
    "wire/test_observe.py",
    "unit/test_perf_guards.py",
    "unit/test_units.py",
    # the bundled server and RPCApp are compiled too (setup.py COMPILED_FOLDERS)
    "server/test_server.py",
    "server/test_server_strict.py",
    "server/test_dedup_server.py",
    # docstrings and signatures exist only here: mypyc drops those it compiles
    "unit/test_api_docs.py",
    "unit/test_retry_decision.py",
    "wire/test_idle_close.py",
)


def _has_compiler() -> bool:
    cc = (sysconfig.get_config_var("CC") or "cc").split()[0]
    return shutil.which(cc) is not None


def test_the_build_is_the_one_expected() -> None:
    expect = os.environ.get("RPCCLIENT_EXPECT_BUILD")
    if expect is None:  # an install from this checkout: compiled where it can be
        pure = os.environ.get("RPCCLIENT_PURE_PYTHON", "") not in ("", "0")
        expect = "compiled" if _has_compiler() and not pure else "pure"
    assert rpcclient.COMPILED is (expect == "compiled"), (expect, rpcclient._core.client.__spec__)
    names = compiled_modules()
    assert "rpcclient._core.client" in names and "rpcclient.server._engine.wsgi" in names, names
    for name in names:
        origin = str(getattr(importlib.import_module(name).__spec__, "origin", ""))
        assert origin.endswith(".py") is (expect == "pure"), origin
    # RPCServer subclasses gevent's StreamServer: interpreted in both builds
    listener = str(getattr(sys.modules["rpcclient.server.listener"].__spec__, "origin", ""))
    assert listener.endswith(".py"), listener


@pytest.mark.timeout(600)
def test_the_interpreted_package_passes_the_gevent_suites(tmp_path: Path) -> None:
    if not rpcclient.COMPILED:
        pytest.skip("this run is the interpreted package already")
    # the sources only: without the extensions Python imports the .py files
    shutil.copytree(PACKAGE, tmp_path / "rpcclient", ignore=shutil.ignore_patterns("*.so", "*.pyd"))
    env = dict(os.environ, PYTHONPATH=str(tmp_path), RPCCLIENT_EXPECT_BUILD="pure")
    run = subprocess.run(
        [
            sys.executable, "-m", "gevent.monkey", "--module", "pytest",
            "-q", "-p", "no:cacheprovider", "--import-mode=append",
            "--rootdir", str(TESTS.parent),
            *(str(TESTS / suite) for suite in PURE_SUITES),
        ],
        check=False,
        cwd=tmp_path,  # not the checkout: its rpcclient/ holds the extensions
        env=env,
        capture_output=True,
        text=True,
        timeout=580,
    )  # fmt: skip
    tail = (run.stdout + run.stderr)[-3000:]
    assert run.returncode == 0, tail
    assert " passed" in run.stdout and " failed" not in run.stdout, tail


def test_no_extension_is_older_than_its_source() -> None:
    """An editable checkout runs its extensions, not its .py files: they must be current."""
    if not rpcclient.COMPILED:
        pytest.skip("the interpreted package runs its sources")
    extensions = [p for p in PACKAGE.rglob("*") if p.suffix in (".so", ".pyd")]
    assert extensions, "COMPILED, yet no extension next to the sources"
    # the group library holds the code of every compiled module: the oldest
    # extension must be newer than each of their sources
    built = min(p.stat().st_mtime for p in extensions)
    sources = [p.parent / (p.name.split(".", 1)[0] + ".py") for p in extensions]
    stale = [p.name for p in sources if p.exists() and p.stat().st_mtime > built]
    assert not stale, f"edited after the last build (rebuild: pip install -e .): {stale}"
