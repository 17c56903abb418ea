"""app.py refuses placeholder or malformed event-source ARNs when it is imported, so a plain
``chalice deploy`` with the committed placeholders creates nothing instead of half a stack."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.moto_server import REGION, MotoServer, aws

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
PLACEHOLDER = "set-by-scripts/deploy"
STREAM = "arn:aws:dynamodb:eu-west-1:123456789012:table/doorman-dev/stream/2026-12-01T00:00:00.000"
TOPIC = "arn:aws:sns:eu-west-1:123456789012:doorman-dev-alerts"


def clean_env(**values: str) -> dict[str, str]:
    """The process environment without Doorman's, AWS's or Chalice's variables, plus ``values``."""
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("DOORMAN_", "AWS_", "POWERTOOLS_"))
    }
    env.update(values)
    return env


def import_app(**values: str) -> subprocess.CompletedProcess[str]:
    code = (
        "import app\n"
        "for source in app.app.event_sources:\n"
        "    arn = getattr(source, 'stream_arn', None) or getattr(source, 'topic', None)\n"
        "    print(type(source).__name__, arn)\n"
    )
    return subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env=clean_env(**values),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize("variable", ["DOORMAN_STREAM_ARN", "DOORMAN_TOPIC_ARN"])
def test_import_refuses_the_placeholder(variable):
    values = {"DOORMAN_STREAM_ARN": STREAM, "DOORMAN_TOPIC_ARN": TOPIC, variable: PLACEHOLDER}
    result = import_app(**values)
    assert result.returncode != 0
    assert f"{variable} is still the placeholder '{PLACEHOLDER}'" in result.stderr
    assert "scripts/deploy" in result.stderr


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("DOORMAN_STREAM_ARN", "arn:aws:dynamodb:eu-west-1:123456789012:table/doorman-dev"),
        ("DOORMAN_STREAM_ARN", TOPIC),
        ("DOORMAN_STREAM_ARN", "doorman-dev"),
        ("DOORMAN_TOPIC_ARN", "doorman-dev-alerts"),
        ("DOORMAN_TOPIC_ARN", "arn:aws:sns:eu-west-1:12345:doorman-dev-alerts"),
        ("DOORMAN_TOPIC_ARN", STREAM),
        ("DOORMAN_TOPIC_ARN", TOPIC + "\n\x1b[31m"),
    ],
)
def test_import_refuses_a_malformed_arn(variable, value):
    values = {"DOORMAN_STREAM_ARN": STREAM, "DOORMAN_TOPIC_ARN": TOPIC, variable: value}
    result = import_app(**values)
    assert result.returncode != 0
    assert f"{variable} is not " in result.stderr, result.stderr[-2000:]
    assert "\x1b" not in result.stderr


@pytest.mark.parametrize("variable", ["DOORMAN_STREAM_ARN", "DOORMAN_TOPIC_ARN"])
def test_chalice_commands_refuse_an_unset_arn(variable):
    values = {"DOORMAN_STREAM_ARN": STREAM, "DOORMAN_TOPIC_ARN": TOPIC}
    del values[variable]
    result = import_app(**values, AWS_CHALICE_CLI_MODE="true")
    assert result.returncode != 0
    assert f"{variable} is not set" in result.stderr


def test_valid_arns_are_the_event_sources():
    result = import_app(DOORMAN_STREAM_ARN=STREAM, DOORMAN_TOPIC_ARN=TOPIC)
    assert result.returncode == 0, result.stderr
    lines = set(result.stdout.splitlines())
    assert f"DynamoDBEventConfig {STREAM}" in lines
    assert f"SNSEventConfig {TOPIC}" in lines


def test_a_plain_import_outside_chalice_and_lambda_still_works():
    """Tests, the benchmark and local tools import app.py with no deployment at all."""
    result = import_app()
    assert result.returncode == 0, result.stderr


# --- a real `chalice deploy` against moto ---------------------------------------------------------


@pytest.fixture
def project(tmp_path: Path) -> Iterator[Path]:
    """A copy of the Chalice project as committed (placeholders and all), with subnets and
    a security group filled in as an operator would."""
    project = tmp_path / "project"
    (project / ".chalice").mkdir(parents=True)
    shutil.copy(ROOT / "app.py", project)
    shutil.copy(ROOT / "requirements.txt", project)
    shutil.copytree(
        ROOT / "chalicelib", project / "chalicelib", ignore=shutil.ignore_patterns("__pycache__")
    )
    for path in (ROOT / ".chalice").glob("*.json"):
        shutil.copy(path, project / ".chalice")
    config = json.loads((project / ".chalice" / "config.json").read_text())
    check = config["stages"]["dev"]["lambda_functions"]["check"]
    check["subnet_ids"] = ["subnet-0123456789abcdef0"]
    check["security_group_ids"] = ["sg-0123456789abcdef0"]
    (project / ".chalice" / "config.json").write_text(json.dumps(config))
    yield project


def test_plain_chalice_deploy_with_placeholders_creates_nothing(
    project: Path, moto_server: MotoServer
):
    env = clean_env(
        AWS_ENDPOINT_URL=moto_server.endpoint_url,
        AWS_DEFAULT_REGION=REGION,
        AWS_ACCESS_KEY_ID="testing",
        AWS_SECRET_ACCESS_KEY="testing",
    )
    result = subprocess.run(
        [str(BIN / "chalice"), "deploy", "--stage", "dev"],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    assert "is still the placeholder 'set-by-scripts/deploy'" in output, output[-3000:]
    lam, events, iam = (aws(moto_server, s) for s in ("lambda", "events", "iam"))
    try:
        functions = [f["FunctionName"] for f in lam.list_functions()["Functions"]]
        rules = [r["Name"] for r in events.list_rules()["Rules"]]
        roles = [r["RoleName"] for r in iam.list_roles()["Roles"]]
        created = [n for n in functions + rules + roles if n.startswith("doorman-dev")]
        assert created == [], created
        assert lam.list_event_source_mappings()["EventSourceMappings"] == []
    finally:
        for client in (lam, events, iam):
            client.close()
    assert not (project / ".chalice" / "deployed").exists()
