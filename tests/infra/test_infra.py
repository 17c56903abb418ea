"""Offline checks of the deployment: templates lint clean, policies stay least-privilege,
the dashboard matches its generator, and Chalice can package the app."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from functools import cache
from pathlib import Path
from typing import Any

import pytest

from chalicelib.dashboard import TEMPLATE, dashboard_body, main, render_template

ROOT = Path(__file__).resolve().parents[2]
CHALICE_DIR = ROOT / ".chalice"
BIN = Path(sys.executable).parent
TEMPLATES = sorted(p for ext in ("yaml", "yml", "json") for p in (ROOT / "infra").glob(f"*.{ext}"))
FUNCTIONS = ("check", "dispatch", "notify_slack", "notify_pagerduty", "api_handler")
# Lambda's own VPC access policy needs these on "*" (the interface does not exist yet).
NETWORK_INTERFACE_ACTIONS = {
    "ec2:createnetworkinterface",
    "ec2:describenetworkinterfaces",
    "ec2:deletenetworkinterface",
    "ec2:assignprivateipaddresses",
    "ec2:unassignprivateipaddresses",
}


def config() -> dict[str, Any]:
    doc: dict[str, Any] = json.loads((CHALICE_DIR / "config.json").read_text())
    return doc


@cache
def iam_actions() -> dict[str, Any]:
    """cfn-lint's table of IAM actions and the resource types each can be limited to."""
    import cfnlint

    path = Path(cfnlint.__file__).parent / "data" / "AdditionalSpecs" / "Policies.json"
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def resource_types(action: str) -> list[str] | None:
    """The resource types ``action`` can be limited to ([] none: it needs "*");
    None for an action AWS does not know."""
    service, _, name = action.lower().partition(":")
    entry = iam_actions().get(service, {}).get("Actions", {})
    if name not in entry:
        return None
    found: list[str] = entry[name].get("Resources", [])
    return found


def as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


# --- CloudFormation ----------------------------------------------------------------------------


@pytest.mark.parametrize("template", TEMPLATES, ids=lambda p: p.name)
def test_template_lints_clean(template):
    result = subprocess.run(
        [str(BIN / "cfn-lint"), "--format", "parseable", str(template)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_there_is_a_template():
    assert ROOT / "infra" / "doorman.yaml" in TEMPLATES


def test_committed_dashboard_matches_the_generator():
    text = TEMPLATE.read_text(encoding="utf-8")
    assert render_template(text) == text, "infra/doorman.yaml drifted: run make dashboard"
    assert main(["--check"]) == 0


def test_dashboard_body_is_json_once_substituted():
    text = json.dumps(dashboard_body())
    names = set(re.findall(r"\$\{([^}]+)\}", text))
    assert names == {
        "Target",
        "AWS::Region",
        "WatchdogAlarm.Arn",
        "CheckErrorsAlarm.Arn",
        "DispatchErrorsAlarm.Arn",
        "NotifierErrorsAlarm.Arn",
        "DeadLetterAlarm.Arn",
    }
    filled = re.sub(r"\$\{[^}]+\}", "x", text)
    assert len(json.loads(filled)["widgets"]) > 10


# --- IAM ----------------------------------------------------------------------------------------


def policy_files() -> list[Path]:
    return sorted(CHALICE_DIR.glob("policy-*.json"))


def test_every_function_of_every_stage_has_its_own_policy_file():
    cfg = config()
    assert cfg["autogen_policy"] is False
    used = set()
    for stage, stage_cfg in cfg["stages"].items():
        for fn in FUNCTIONS:
            name = stage_cfg["lambda_functions"][fn]["iam_policy_file"]
            assert (CHALICE_DIR / name).is_file(), name
            assert name.startswith(f"policy-{stage}-")
            used.add(name)
    assert used == {p.name for p in policy_files()}, "a policy file no function uses"


def test_only_check_runs_in_the_vpc_and_placeholders_are_marked():
    for stage_cfg in config()["stages"].values():
        functions = stage_cfg["lambda_functions"]
        assert functions["check"]["subnet_ids"] and functions["check"]["security_group_ids"]
        for fn in FUNCTIONS[1:]:
            assert "subnet_ids" not in functions[fn]


@pytest.mark.parametrize("path", policy_files(), ids=lambda p: p.name)
def test_policy_is_least_privilege(path):
    stage = path.name.split("-")[1]
    other = {"dev": "prod", "prod": "dev"}[stage]
    doc = json.loads(path.read_text())
    assert doc["Version"] == "2012-10-17"
    for statement in doc["Statement"]:
        assert statement["Effect"] == "Allow"
        assert "NotAction" not in statement and "NotResource" not in statement
        actions = as_list(statement["Action"])
        resources = as_list(statement["Resource"])
        for action in actions:
            assert "*" not in action, f"{path.name}: wildcard action {action}"
            assert resource_types(action) is not None, f"{path.name}: unknown action {action}"
        for resource in resources:
            assert f"/{other}" not in resource and f"-{other}" not in resource, (
                f"{path.name}: names a resource of stage {other}: {resource}"
            )
            if resource == "*":
                for action in actions:
                    needs_star = resource_types(action) == []
                    assert needs_star or action.lower() in NETWORK_INTERFACE_ACTIONS, (
                        f"{path.name}: {action} on * (it can be limited to a resource)"
                    )
                continue
            assert resource.startswith("arn:aws:"), resource
            name = resource.split(":", 5)[5]
            if re.fullmatch(r"[\w-]+/\*", name):
                # Any key, say: only acceptable when a condition narrows it.
                assert statement.get("Condition"), f"{path.name}: {resource} unconditioned"
            else:
                assert stage in name, f"{path.name}: {resource} is not the stage's resource"


# --- Chalice -------------------------------------------------------------------------------------

NETWORK_TROUBLE = re.compile(
    r"Could not install dependencies|NewConnectionError|Max retries exceeded|"
    r"Temporary failure in name resolution|Network is unreachable|Connection refused|"
    r"No matching distribution|ReadTimeout|timed out",
    re.IGNORECASE,
)


def test_chalice_packages_the_app(tmp_path):
    project = tmp_path / "project"
    (project / ".chalice").mkdir(parents=True)
    shutil.copy(ROOT / "app.py", project)
    shutil.copy(ROOT / "requirements.txt", project)
    shutil.copytree(ROOT / "chalicelib", project / "chalicelib")
    for path in [CHALICE_DIR / "config.json", *policy_files()]:
        shutil.copy(path, project / ".chalice")
    if (CHALICE_DIR / "deployments").is_dir():  # chalice's wheel cache: a rerun is quick
        shutil.copytree(CHALICE_DIR / "deployments", project / ".chalice" / "deployments")
    # The machine's pip configuration (index, proxy, certificates) is kept; Doorman's own
    # variables are not, so a developer's DOORMAN_STREAM_ARN never reaches the package.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DOORMAN_", "AWS_"))}
    env["AWS_DEFAULT_REGION"] = "us-east-1"
    out = tmp_path / "out"
    try:
        result = subprocess.run(
            [str(BIN / "chalice"), "package", "--stage", "prod", str(out)],
            cwd=project,
            capture_output=True,
            text=True,
            timeout=240,
            env=env,
            check=False,
        )
    except subprocess.TimeoutExpired:
        pytest.skip("chalice package timed out fetching Lambda wheels (package index slow)")
    output = result.stdout + result.stderr
    if result.returncode != 0 and NETWORK_TROUBLE.search(output):
        print(output[-3000:])
        pytest.skip(f"chalice package could not fetch Lambda wheels: {output.strip()[-300:]}")
    assert result.returncode == 0, output
    sam = json.loads((out / "sam.json").read_text())
    functions = [
        key for key, p in sam["Resources"].items() if p["Type"] == "AWS::Serverless::Function"
    ]
    assert len(functions) == len(FUNCTIONS), sorted(functions)
    check = sam["Resources"]["Check"]["Properties"]
    assert check["MemorySize"] == 256 and check["Timeout"] == 60
    assert check["VpcConfig"]["SubnetIds"]
    for key, resource in sam["Resources"].items():
        if resource["Type"] == "AWS::Serverless::Function" and key != "Check":
            assert "VpcConfig" not in resource["Properties"], key
        if resource["Type"] == "AWS::IAM::Role":
            (policy,) = resource["Properties"]["Policies"]
            assert policy["PolicyDocument"]["Statement"], key
    assert (out / "deployment.zip").stat().st_size > 0
