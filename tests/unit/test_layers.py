"""The layers of rpcclient/__init__.py's map, kept: no import points up.

Every ``import`` and ``from ... import`` of every module under rpcclient/ is
read from its source (module level, inside functions and under
``TYPE_CHECKING`` alike: a lazy import that points up is still a dependency
that points up) and resolved to the module it names. A rule below says which
part of the package may not import which; the test lists every breach.
"""

from __future__ import annotations

import ast
from pathlib import Path

import rpcclient

PACKAGE = Path(rpcclient.__file__).parent

#: (importer prefix, imported prefixes it must not reach, why)
FORBIDDEN: list[tuple[str, tuple[str, ...], str]] = [
    (
        "rpcclient.exceptions",
        ("rpcclient",),
        "the error tree is the bottom layer",
    ),
    (
        "rpcclient._fork",
        ("rpcclient",),
        "the fork registry is the bottom layer",
    ),
    (
        "rpcclient._config",
        ("rpcclient._core", "rpcclient._transports", "rpcclient._public", "rpcclient.server"),
        "options are plain values, read by the layers above",
    ),
    (
        "rpcclient._core",
        (
            "rpcclient._transports.gevent",
            "rpcclient._transports.blocking",
            "rpcclient._transports.mock",
            "rpcclient._public",
            "rpcclient.server",
            "rpcclient.compat",
            "rpcclient._integrations",
            "rpcclient._tools",
        ),
        "the call path knows transports only through the seam (_transports.base)",
    ),
    (
        "rpcclient._transports",
        (
            "rpcclient._core.client",
            "rpcclient._public",
            "rpcclient._policy",
            "rpcclient.server",
            "rpcclient.compat",
            "rpcclient._integrations",
            "rpcclient._tools",
        ),
        "a transport moves a prepared request; it does not know the client",
    ),
    (
        "rpcclient._transports.gevent",
        ("rpcclient._transports.blocking",),
        "the transport families are siblings",
    ),
    (
        "rpcclient.server",
        (
            "rpcclient._core.client",
            "rpcclient._transports",
            "rpcclient._public",
            "rpcclient._policy",
            "rpcclient.compat",
            "rpcclient._integrations",
            "rpcclient._tools",
        ),
        "the server shares only the protocol, the codec and the models with the client",
    ),
    (
        "rpcclient._policy",
        ("rpcclient._transports", "rpcclient._public", "rpcclient.server", "rpcclient._tools"),
        "policies decide; transports act",
    ),
    (
        "rpcclient._integrations",
        ("rpcclient._tools",),
        "the tools are the top layer",
    ),
]


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(path: Path) -> set[str]:
    """The modules ``path`` imports, resolved to absolute dotted names."""
    module = _module_name(path)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            found.add(target)
            # ``from . import x``: x may be a module
            found.update(f"{target}.{alias.name}" for alias in node.names)
    return {name for name in found if name == "rpcclient" or name.startswith("rpcclient.")}


def _within(name: str, prefix: str) -> bool:
    """``name`` is the module ``prefix`` or inside it."""
    return name == prefix or name.startswith(prefix + ".")


def test_no_import_points_up() -> None:
    sources = sorted(PACKAGE.rglob("*.py"))
    assert len(sources) > 40, sources
    breaches = []
    for path in sources:
        importer = _module_name(path)
        for imported in sorted(_imports(path)):
            for who, banned, why in FORBIDDEN:
                if not _within(importer, who):
                    continue
                for prefix in banned:
                    if _within(imported, prefix) and not _within(imported, who):
                        breaches.append(f"{importer} imports {imported}: {why}")
    assert not breaches, "\n".join(breaches)


def test_relative_imports_resolve_to_the_modules_they_name() -> None:
    # _core/client.py reaches the seam two levels up (from .._transports.base import ...)
    names = _imports(PACKAGE / "_core" / "client.py")
    assert "rpcclient._transports.base" in names, names
    assert not any(_within(n, "rpcclient._transports.gevent") for n in names), names
    assert _within("rpcclient._transports.gevent.pool", "rpcclient._transports")
    assert not _within("rpcclient._transportsx", "rpcclient._transports")
