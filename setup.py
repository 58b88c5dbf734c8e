"""Builds the compiled hot path; all metadata lives in setup.cfg.

The modules on every call's path are compiled with mypyc from the same
type-checked sources (what black and mypy ship): whole folders, the call path
(``rpcclient/_core``) and the gevent transport (``rpcclient/_transports/gevent``),
1.45x the concurrent calls/s of the interpreted package (README.rst, "The
compiled build"); the bundled server's
per-request path (``rpcclient/server/_engine``) is compiled too. The
compiled build is optional: ``RPCCLIENT_PURE_PYTHON=1`` at install time, or any failure to
compile (no C compiler, no mypyc), installs the interpreted package, which
behaves the same and is tested the same (tests/wire/test_build.py).
"""

from __future__ import annotations

import glob
import os
import sys

from setuptools import setup
from setuptools.command.build_ext import build_ext

#: compiled whole, in one extension group (calls between them stay native):
#: every module of these folders but its ``__init__.py``, which stays an
#: interpreted front door (rpcclient/__init__.py has the map of the layers)
COMPILED_FOLDERS = (
    "rpcclient/_core",  # the call path
    "rpcclient/_transports/gevent",  # the gevent transport: pool, HTTP/1.1, watchdog
    "rpcclient/server/_engine",  # the bundled server's per-request path
)


def compiled_sources() -> list[str]:
    here = os.path.dirname(os.path.abspath(__file__))
    return sorted(
        path
        for folder in COMPILED_FOLDERS
        for path in glob.glob(f"{folder}/*.py", root_dir=here)
        if not path.endswith("/__init__.py")
    )


def compiled_modules() -> list[object]:
    if os.environ.get("RPCCLIENT_PURE_PYTHON", "") not in ("", "0"):
        return []
    try:
        from mypyc.build import mypycify

        extensions = mypycify(
            compiled_sources(),
            opt_level="3",
            # the group's shared library lands inside the package, not at the top level
            group_name="rpcclient._compiled",
        )
    except (Exception, SystemExit) as exc:  # noqa: BLE001 - mypyc exits on type errors
        print(f"rpcclient: not compiled ({exc!r}); installing pure Python", file=sys.stderr)
        return []
    return list(extensions)


class AllOrNothing(build_ext):
    """A failed compile installs the interpreted package, never a mix.

    A module's extension imports the group's shared library: with one but
    not the other, importing rpcclient would fail. So any failure removes
    every extension built so far (the ``.py`` sources are always installed).
    """

    def run(self) -> None:
        try:
            super().run()
        except Exception as exc:  # noqa: BLE001 - CompileError, LinkError, missing compiler
            here = os.path.dirname(os.path.abspath(__file__))
            for extension in self.extensions:
                # where this build put it, and an in-place copy an earlier
                # (editable) build left next to the sources: stale code either way
                for path in (
                    self.get_ext_fullpath(extension.name),
                    os.path.join(here, self.get_ext_filename(extension.name)),
                ):
                    if os.path.exists(path):
                        os.remove(path)
            print(f"rpcclient: not compiled ({exc!r}); installing pure Python", file=sys.stderr)


setup(ext_modules=compiled_modules(), cmdclass={"build_ext": AllOrNothing})
