"""Fixtures of the deploy-path tests: a copy of the project to run scripts/deploy in."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A copy of the project with its check subnets filled in, as an operator leaves it."""
    project = tmp_path / "project"
    (project / "scripts").mkdir(parents=True)
    (project / "infra").mkdir()
    for name in ("deploy", "lambda_bundle.py"):
        shutil.copy2(ROOT / "scripts" / name, project / "scripts")
    shutil.copy2(ROOT / "infra" / "doorman.yaml", project / "infra")
    shutil.copy2(ROOT / "app.py", project)
    shutil.copy2(ROOT / "requirements.txt", project)
    shutil.copytree(
        ROOT / "chalicelib", project / "chalicelib", ignore=shutil.ignore_patterns("__pycache__")
    )
    shutil.copytree(
        ROOT / ".chalice", project / ".chalice", ignore=shutil.ignore_patterns("deployed")
    )
    path = project / ".chalice" / "config.json"
    config = json.loads(path.read_text())
    check = config["stages"]["dev"]["lambda_functions"]["check"]
    check["subnet_ids"] = ["subnet-0123456789abcdef0"]
    check["security_group_ids"] = ["sg-0123456789abcdef0"]
    path.write_text(json.dumps(config))
    return project
