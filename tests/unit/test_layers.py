"""The pure layer stays pure: analysis, the alert lifecycle and sanitizing import no
configuration, collection, state or notification module and no I/O library, not even
through another module of the project."""

from __future__ import annotations

import ast
import json
import re
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


def runtime_imports_of(name: str) -> set[str]:
    """The project modules ``name`` imports when it runs (at any depth of its code, but not
    under ``if TYPE_CHECKING:``); ``from pkg import submodule`` counts as the submodule only."""
    path = module_path(name)
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    tree = ast.parse(path.read_text(encoding="utf-8"))
    typing_only = {
        id(inner)
        for node in ast.walk(tree)
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
        for inner in ast.walk(node)
    }
    found: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                target = ".".join([*base, *([node.module] if node.module else [])])
            else:
                target = node.module or ""
            modules = {f"{target}.{a.name}" for a in node.names}
            modules = {
                m for m in modules if m.startswith("chalicelib.") and module_path(m).exists()
            }
            found.update(modules if len(modules) == len(node.names) else {target, *modules})
    return {m for m in found if m == "chalicelib" or m.startswith("chalicelib.")}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every import circle of ``graph`` (one path per strongly connected group)."""
    found: list[list[str]] = []
    state: dict[str, int] = {}  # 1 on the current path, 2 done
    path: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                found.append([*path[path.index(nxt) :], nxt])
            elif nxt not in state:
                visit(nxt)
        path.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node)
    return found


def project_modules() -> list[str]:
    names = []
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        names.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return names


def test_no_import_circle() -> None:
    """No module of the project imports, however indirectly, a module that imports it back
    (the command line is wired from ``wiring``, never imported by what it runs)."""
    graph = {name: runtime_imports_of(name) for name in project_modules()}
    assert "chalicelib.cli" in graph
    assert cycles(graph) == []


def test_the_circle_check_finds_a_circle() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(graph) == [["a", "b", "c", "a"]]


def test_the_readme_layout_names_every_module() -> None:
    """The README's layout lists each module of the package (by path or, on a shared line,
    by file name), so a new module cannot go undocumented."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    start = readme.index("\nchalicelib/\n")
    layout = readme[start : readme.index("```", start)]
    missing = [
        str(path.relative_to(PACKAGE))
        for path in sorted(PACKAGE.rglob("*.py"))
        if path.name != "__init__.py"
        and not any(
            re.search(rf"(?<![\w/]){re.escape(name)}", layout)
            for name in (str(path.relative_to(PACKAGE)), path.name)
        )
    ]
    assert missing == []
