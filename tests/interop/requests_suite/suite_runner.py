"""Run requests' own test suite against rpcclient.compat.requests (or requests itself).

The tests come from the sdist of the requests release installed here (the
``test`` extra pins it exactly); it is fetched with pip at run time into a
temporary directory, never vendored. httpbin and pytest-httpbin, which the
suite runs on, go into a ``--target`` directory of their own: httpbin pins
``greenlet<3``, which gevent cannot use, so they cannot share this
environment. Everything runs on loopback (see ``rpcclient_suite_plugin``).

Outcomes are compared with ``expected_refusals.txt``: one line per test of
requests' suite that fails with the shim, ``<test id> <category>``; the
categories are described at the top of that file and mirrored in README's
"What differs from requests". Usage::

    python tests/interop/requests_suite/suite_runner.py            # the shim: counts by category
    python tests/interop/requests_suite/suite_runner.py --baseline # requests itself, offline
"""

from __future__ import annotations

import argparse
import collections
import importlib.metadata
import json
import os
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
EXPECTED = HERE / "expected_refusals.txt"
#: what requests' suite runs on, pinned (installed with --no-deps into a target dir)
SERVER_PACKAGES = (
    "httpbin==0.10.4",
    "pytest-httpbin==2.1.0",
    "decorator==5.3.1",
    "six==1.17.0",
    "brotlicffi==1.2.1.0",
    "PySocks==1.7.1",  # requests' [socks] extra, which its dev requirements install
)
FAILED = frozenset({"failed", "error"})


def requests_version() -> str:
    return importlib.metadata.version("requests")


def _pip(*args: str, timeout: float = 300) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "pip", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(f"pip {' '.join(args)} failed: {result.stderr[-2000:]}")


def prepare(workdir: Path) -> tuple[Path, Path]:
    """``(the sdist's root, with tests/ in it; the server packages' directory)``."""
    version = requests_version()
    download = workdir / "download"
    _pip(
        "download",
        "-q",
        "--no-deps",
        "--no-binary",
        ":all:",
        "-d",
        str(download),
        f"requests=={version}",
    )
    (sdist,) = download.glob("requests-*.tar.gz")
    root = workdir / f"requests-{version}"
    with tarfile.open(sdist) as tar:  # whole: some tests upload requirements-dev.txt
        tar.extractall(workdir, filter="data")
    deps = workdir / "deps"
    _pip("install", "-q", "--no-deps", "--target", str(deps), *SERVER_PACKAGES)
    return root, deps


def run_suite(
    root: Path, deps: Path, *, shim: bool, deselect: list[str], timeout: float = 900
) -> dict[str, str]:
    """Outcome per test id of requests' suite under ``root``, run in a subprocess."""
    report = root / ("shim.json" if shim else "baseline.json")
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(deps), str(HERE)]),
        "RPCCLIENT_SUITE_REPORT": str(report),
        "RPCCLIENT_SUITE_SHIM": "1" if shim else "0",
    }
    for name in ("HTTPBIN_HTTP_PORT", "HTTPBIN_HTTPS_PORT"):
        env.pop(name, None)  # port 0, always
    command = [
        sys.executable, "-m", "pytest", "-p", "rpcclient_suite_plugin",
        "-o", "addopts=", "-p", "no:cacheprovider", "-q", "--timeout", "60",
        "-W", "ignore", "tests",
    ]  # fmt: skip
    for test_id in deselect:
        command += ["--deselect", test_id]
    result = subprocess.run(
        command, cwd=root, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )
    if not report.exists():
        raise RuntimeError(f"requests' suite did not run: {result.stdout[-3000:]}{result.stderr}")
    outcomes: dict[str, str] = json.loads(report.read_text(encoding="utf-8"))
    return outcomes


def load_expected(path: Path = EXPECTED) -> tuple[dict[str, str], dict[str, str], list[str]]:
    """``({test id: category}, {category: description}, [test ids not to run])``.

    Lines: ``# category NAME: description`` defines a category; ``ID NAME``
    lists a test; ``ID NAME deselect`` also keeps it from running (a refusal
    that makes the test wait seconds for a request that never comes).
    """
    expected: dict[str, str] = {}
    categories: dict[str, str] = {}
    deselect: list[str] = []
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if line.startswith("# category "):
            name, _, description = line.removeprefix("# category ").partition(":")
            categories[name.strip()] = description.strip()
        elif line and not line.startswith("#"):
            test_id, category, *flags = line.split()
            if category not in categories:
                raise ValueError(f"{path.name}: unknown category {category!r} for {test_id}")
            expected[test_id] = category
            if "deselect" in flags:
                deselect.append(test_id)
    return expected, categories, deselect


def compare(
    outcomes: dict[str, str], expected: dict[str, str], deselected: list[str]
) -> dict[str, list[str]]:
    """What disagrees with the list: unexpected failures, listed tests that pass or vanished."""
    return {
        "unexpected failures": sorted(
            t for t, o in outcomes.items() if o in FAILED and t not in expected
        ),
        "listed but passing": sorted(
            t for t in expected if outcomes.get(t) in ("passed", "xpassed")
        ),
        "listed but not run": sorted(
            t for t in expected if t not in outcomes and t not in deselected
        ),
    }


def counts(
    outcomes: dict[str, str], expected: dict[str, str], deselected: list[str]
) -> dict[str, int]:
    tally: collections.Counter[str] = collections.Counter()
    for test_id, outcome in outcomes.items():
        if outcome in FAILED:
            tally[f"failed: {expected.get(test_id, 'UNEXPECTED')}"] += 1
        else:
            tally[outcome] += 1
    for test_id in deselected:
        tally[f"failed: {expected[test_id]} (deselected)"] += 1
    return dict(sorted(tally.items()))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--baseline", action="store_true", help="run with requests itself")
    args = parser.parse_args()
    expected, _, deselect = load_expected()
    with tempfile.TemporaryDirectory() as tmp:
        root, deps = prepare(Path(tmp))
        outcomes = run_suite(
            root, deps, shim=not args.baseline, deselect=[] if args.baseline else deselect
        )
    if args.baseline:
        print(json.dumps(dict(collections.Counter(outcomes.values())), indent=1))
        print("\n".join(sorted(t for t, o in outcomes.items() if o in FAILED)))
        return 0
    print(json.dumps(counts(outcomes, expected, deselect), indent=1))
    problems = compare(outcomes, expected, deselect)
    print(json.dumps(problems, indent=1))
    return 1 if any(problems.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
