"""The pure layer stays pure: analysis, the alert lifecycle and sanitizing import no
configuration, collection, state or notification module and no I/O library, not even
through another module of the project."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "chalicelib"

# The modules that must stay pure, and with them every project module they import.
PURE = [
    *sorted(
        "chalicelib.analyse." + p.stem
        for p in (PACKAGE / "analyse").glob("*.py")
        if p.stem != "__init__"
    ),
    "chalicelib.alerting",
    "chalicelib.sanitize",
]
FORBIDDEN_PROJECT = (
    "chalicelib.settings",
    "chalicelib.collect",
    "chalicelib.state",
    "chalicelib.notify",
)
# Libraries that reach a file, a socket, a process or a service (urllib.parse is pure).
FORBIDDEN_LIBRARIES = {
    "asyncio",
    "boto3",
    "botocore",
    "celery",
    "chalice",
    "http",
    "io",
    "kombu",
    "os",
    "pathlib",
    "redis",
    "requests",
    "select",
    "selectors",
    "shutil",
    "socket",
    "sqlite3",
    "ssl",
    "subprocess",
    "tempfile",
    "urllib.request",
    "urllib3",
    "yaml",
}


def module_path(name: str) -> Path:
    """The source file of the project module ``name``."""
    parts = name.split(".")[1:]
    package = PACKAGE.joinpath(*parts)
    if package.is_dir():
        return package / "__init__.py"
    return PACKAGE.joinpath(*parts[:-1], parts[-1] + ".py")


def imports_of(name: str) -> set[str]:
    """Every module ``name`` imports (at any depth of its code), relative ones resolved."""
    path = module_path(name)
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                prefix = ".".join(base)
                target = f"{prefix}.{node.module}" if node.module else prefix
            else:
                target = node.module or ""
            found.add(target)
            # ``from . import x`` and ``from pkg import submodule`` import modules too.
            for alias in node.names:
                candidate = f"{target}.{alias.name}"
                if candidate.startswith("chalicelib.") and module_path(candidate).exists():
                    found.add(candidate)
    return found


def closure(roots: list[str]) -> dict[str, set[str]]:
    """Each project module reachable from ``roots`` (packages' ``__init__`` included), with
    its imports."""
    seen: dict[str, set[str]] = {}
    todo = list(roots)
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen[name] = imports_of(name)
        parents = [".".join(name.split(".")[:i]) for i in range(1, name.count(".") + 1)]
        todo.extend(p for p in parents if p not in seen)
        todo.extend(m for m in seen[name] if m.startswith("chalicelib") and m not in seen)
    return seen


def forbidden(module: str) -> bool:
    """Whether importing ``module`` breaks the pure layer."""
    if any(module == f or module.startswith(f + ".") for f in FORBIDDEN_PROJECT):
        return True
    return any(module == lib or module.startswith(lib + ".") for lib in FORBIDDEN_LIBRARIES)


def test_pure_layer_imports_nothing_impure() -> None:
    graph = closure(PURE)
    assert set(PURE) <= set(graph)
    bad = sorted(
        f"{name} imports {imported}"
        for name, imported_set in graph.items()
        for imported in imported_set
        if forbidden(imported)
    )
    assert bad == []


@pytest.mark.parametrize(
    ("source", "offender"),
    [
        ("from ..settings import Thresholds\n", "chalicelib.settings"),
        ("from .. import settings\n", "chalicelib.settings"),
        ("import redis\n", "redis"),
        ("def f():\n    from ..state.sqlite import SqliteStore\n", "chalicelib.state.sqlite"),
        ("from os import path\n", "os"),
    ],
)
def test_the_check_finds_each_kind_of_import(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, source: str, offender: str
) -> None:
    """The checker itself: an analysis module with any of these imports is caught."""
    fake = tmp_path / "chalicelib"
    (fake / "analyse").mkdir(parents=True)
    (fake / "__init__.py").write_text("")
    (fake / "settings.py").write_text("")
    (fake / "analyse" / "__init__.py").write_text("")
    (fake / "analyse" / "bad.py").write_text(source)
    monkeypatch.setattr(sys.modules[__name__], "PACKAGE", fake)
    imported = imports_of("chalicelib.analyse.bad")
    assert offender in imported
    assert forbidden(offender)


def test_importing_the_pure_layer_loads_no_impure_module() -> None:
    """At run time too (in a fresh interpreter): nothing impure is loaded, however reached."""
    code = (
        "import json, sys\n"
        + "".join(f"import {name}\n" for name in PURE)
        + "print(json.dumps(sorted(sys.modules)))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    loaded = json.loads(done.stdout)
    project = [m for m in loaded if forbidden(m) and m.startswith("chalicelib")]
    # Third-party I/O libraries only: the interpreter itself loads os, io and friends.
    third_party = [
        m
        for m in loaded
        if m.split(".")[0] in {"redis", "kombu", "celery", "boto3", "botocore", "yaml", "chalice"}
    ]
    assert project == []
    assert third_party == []
