#!/usr/bin/env python3
"""Build the Chalice project that becomes the Lambda bundle.

    lambda_bundle.py SOURCE BUILD

SOURCE is the repository; BUILD (created, must not exist) receives:

- ``app.py`` and only the ``chalicelib`` modules it can import (every ``import`` in those
  files, lazy ones inside functions included): the ``doorman`` command's own modules (the
  CLI, the simulator, the SQLite store, ...) stay out;
- ``.chalice/config.json``, the policy files and the ``package-<stage>.json`` merge templates;
- ``vendor/``: the dependencies of ``requirements.txt`` for the Lambda runtime, built by
  Chalice's own dependency builder (the wheels ``chalice deploy`` would pick), minus the
  distributions only Celery's command line uses (``EXCLUDED``); and no ``requirements.txt``,
  so Chalice adds nothing more. Chalice copies ``vendor/`` to the top of the bundle.

Exit status: 0 built; 1 a dependency has no wheel for Lambda; 75 (EX_TEMPFAIL) the package
index could not be reached; 2 usage.
"""

from __future__ import annotations

import ast
import csv
import json
import re
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

# Celery's command line (celery.bin) needs these; a Lambda function never runs it. `click`
# itself stays: celery.exceptions imports it.
EXCLUDED = frozenset(
    {"click-repl", "click-didyoumean", "click-plugins", "prompt-toolkit", "wcwidth"}
)
EX_TEMPFAIL = 75
PACKAGE = "chalicelib"


def normalize(name: str) -> str:
    """A distribution name in PEP 503 form (``Prompt_Toolkit`` -> ``prompt-toolkit``)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def _imported(path: Path, module: str) -> Iterator[str]:
    """Every module name ``path`` (the module ``module``) imports, relative imports resolved;
    ``from a import b`` yields both ``a`` and ``a.b`` (b may be a submodule)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parts, *([node.module] if node.module else [])])
            yield base
            yield from (f"{base}.{alias.name}" for alias in node.names)


def app_modules(source: Path) -> list[Path]:
    """The files of ``chalicelib`` that ``app.py`` reaches, transitively (sorted)."""

    def file_of(module: str) -> Path | None:
        base = source.joinpath(*module.split("."))
        for candidate in (base / "__init__.py", base.with_suffix(".py")):
            if candidate.is_file():
                return candidate
        return None

    seen: dict[str, Path] = {}
    todo = [("app", source / "app.py")]
    while todo:
        module, path = todo.pop()
        if module in seen:
            continue
        seen[module] = path
        for name in _imported(path, module):
            parts = name.split(".")
            if parts[0] != PACKAGE:
                continue
            for i in range(1, len(parts) + 1):  # a module implies its parent packages
                parent = ".".join(parts[:i])
                found = file_of(parent)
                if found is not None and parent not in seen:
                    todo.append((parent, found))
    return sorted(p for m, p in seen.items() if m != "app")


def copy_app(source: Path, build: Path) -> None:
    """app.py, the reachable chalicelib modules and the data files of their packages."""
    shutil.copy2(source / "app.py", build / "app.py")
    packages: set[Path] = set()
    for path in app_modules(source):
        target = build / path.relative_to(source)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, target)
        packages.add(path.parent)
    for package in packages:  # e.g. chalicelib/collect/lua/*.lua, read with importlib.resources
        for data in package.rglob("*"):
            rel = data.relative_to(package)
            if (
                data.is_file()
                and data.suffix not in (".py", ".pyc")
                and "__pycache__" not in rel.parts
                and not (package / rel.parts[0] / "__init__.py").is_file()
            ):
                target = build / data.relative_to(source)
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(data, target)


def copy_config(source: Path, build: Path) -> None:
    (build / ".chalice").mkdir(parents=True)
    chalice = source / ".chalice"
    # The policies, and the merge templates `chalice package --merge-template` takes.
    for path in [
        chalice / "config.json",
        *chalice.glob("policy-*.json"),
        *chalice.glob("package-*.json"),
    ]:
        shutil.copy2(path, build / ".chalice" / path.name)


def remove_distributions(site: Path, names: frozenset[str]) -> list[str]:
    """Delete the installed distributions ``names`` from ``site`` (each file their RECORD
    lists, then the directories left empty); returns the names removed."""
    removed = []
    for info in sorted(site.glob("*.dist-info")):
        name = normalize(info.name[: -len(".dist-info")].rsplit("-", 1)[0])
        if name not in names:
            continue
        with (info / "RECORD").open(newline="", encoding="utf-8") as f:
            files = [row[0] for row in csv.reader(f) if row]
        dirs: set[Path] = set()
        for rel in files:
            path = (site / rel).resolve()
            if site.resolve() not in path.parents:  # ../../bin/... of a script entry
                continue
            path.unlink(missing_ok=True)
            dirs.update(p for p in path.parents if site.resolve() in p.parents)
        for directory in sorted(dirs, key=lambda p: len(p.parts), reverse=True):
            pycache = directory / "__pycache__"
            if pycache.is_dir():
                shutil.rmtree(pycache)
            if directory.is_dir() and not any(directory.iterdir()):
                directory.rmdir()
        shutil.rmtree(info, ignore_errors=True)
        removed.append(name)
    return removed


def build_vendor(source: Path, build: Path) -> int:
    """Lambda's dependencies into ``build/vendor``; returns an exit status."""
    from chalice.deploy.packager import (  # type: ignore[import-untyped]
        DependencyBuilder,
        MissingDependencyError,
        NoSuchPackageError,
        PackageDownloadError,
    )
    from chalice.utils import OSUtils  # type: ignore[import-untyped]

    config = json.loads((source / ".chalice" / "config.json").read_text())
    architecture = config.get("lambda_architecture", "x86_64")
    abi = f"cp{sys.version_info.major}{sys.version_info.minor}"  # Chalice's runtime is ours
    vendor = build / "vendor"
    vendor.mkdir()
    builder = DependencyBuilder(OSUtils(), architecture=architecture)
    try:
        builder.build_site_packages(abi, str(source / "requirements.txt"), str(vendor))
    except MissingDependencyError as exc:
        missing = ", ".join(sorted(p.identifier for p in exc.missing))
        print(f"lambda_bundle: no {architecture} Lambda wheel for: {missing}", file=sys.stderr)
        return 1
    except (PackageDownloadError, NoSuchPackageError) as exc:
        # pip says "Could not find a version" both for a wrong name and for no index at all.
        text = str(exc).strip()[-500:]
        print(f"lambda_bundle: could not download the dependencies: {text}", file=sys.stderr)
        return EX_TEMPFAIL
    removed = remove_distributions(vendor, EXCLUDED)
    print(f"lambda_bundle: left out {', '.join(removed) or 'nothing'} (Celery's CLI only)")
    return 0


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__.split("\n\n")[1], file=sys.stderr)
        return 2
    source, build = Path(argv[0]).resolve(), Path(argv[1])
    build.mkdir(parents=True)
    copy_app(source, build)
    copy_config(source, build)
    return build_vendor(source, build)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
