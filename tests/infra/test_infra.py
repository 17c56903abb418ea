"""Offline checks of the deployment: templates lint clean, policies stay least-privilege,
the dashboard matches its generator, and Chalice can package the app."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import pytest

from chalicelib.dashboard import BLOCKS, TEMPLATE, main, render_template

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
    "ec2:describesubnets",
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


@pytest.mark.parametrize("block", sorted(BLOCKS))
def test_dashboard_body_is_json_once_substituted(block):
    text = json.dumps(BLOCKS[block]())
    names = set(re.findall(r"\$\{([^}]+)\}", text))
    alarms = {
        "CheckErrorsAlarm.Arn",
        "DispatchErrorsAlarm.Arn",
        "NotifierErrorsAlarm.Arn",
        "DeadLetterAlarm.Arn",
        "DispatchDroppedAlarm.Arn",
        "DispatchRetriedAlarm.Arn",
        "DispatchIteratorAgeAlarm.Arn",
        "DispatchDeadLetterAlarm.Arn",
    }
    common = {"AWS::Region", "AppName", "Stage"}
    if block == "target dashboard":  # the watchdog of the target picked, by its name
        common |= {"Target", "AWS::Partition", "AWS::AccountId"}
    assert names == alarms | common
    filled = re.sub(r"\$\{[^}]+\}", "x", text)
    assert len(json.loads(filled)["widgets"]) >= (10 if block == "target dashboard" else 4)


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


# --- the Lambda bundle and the packaged stack -----------------------------------------------------

BUNDLE = ROOT / "scripts" / "lambda_bundle.py"
EX_TEMPFAIL = 75
STACK_PARAMS = {"AppName": "doorman", "Target": "prod"}
# Left out of the bundle: Celery's command line needs them, a Lambda function never runs it.
CLI_ONLY_DISTRIBUTIONS = (
    "click_repl",
    "click_didyoumean",
    "click_plugins",
    "prompt_toolkit",
    "wcwidth",
)
# The doorman command's own modules; app.py never imports them.
CLI_ONLY_MODULES = ("cli.py", "simulate.py", "demo_app.py", "embedded.py", "state/sqlite.py")
# What the Lambda runtime itself provides (not bundled).
RUNTIME_PACKAGES = ("boto3", "botocore", "s3transfer", "jmespath", "urllib3", "dateutil", "six.py")
FILLED = {
    "DOORMAN_TABLE": "doorman-prod",
    "DOORMAN_TOPIC_ARN": "arn:aws:sns:eu-west-1:123456789012:doorman-prod-alerts",
    "DOORMAN_STREAM_ARN": (
        "arn:aws:dynamodb:eu-west-1:123456789012:table/doorman-prod/stream/2026-12-01T00:00:00.000"
    ),
}


def build_bundle(build: Path, env: dict[str, str] | None = None) -> None:
    """scripts/lambda_bundle.py into ``build``; skips the test when the package index
    cannot be reached (no wheels, no bundle), fails on any other error."""
    result = subprocess.run(
        [sys.executable, str(BUNDLE), str(ROOT), str(build)],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        check=False,
    )
    if result.returncode == EX_TEMPFAIL:
        pytest.skip(f"Lambda wheels could not be downloaded: {result.stderr.strip()[-300:]}")
    assert result.returncode == 0, result.stdout + result.stderr


def fill_placeholders(project: Path, stage: str) -> None:
    """What scripts/deploy and an operator write into the build copy's config."""
    path = project / ".chalice" / "config.json"
    cfg = json.loads(path.read_text())
    stage_cfg = cfg["stages"][stage]
    stage_cfg["environment_variables"].update(FILLED)
    check = stage_cfg["lambda_functions"]["check"]
    check["subnet_ids"] = ["subnet-0123456789abcdef0", "subnet-0123456789abcdef1"]
    check["security_group_ids"] = ["sg-0123456789abcdef0"]
    check["environment_variables"].update(REDIS_URL="rediss://r:6379/0", DOORMAN_HASH_SECRET="x")
    path.write_text(json.dumps(cfg))


@dataclass(frozen=True)
class Packaged:
    project: Path
    out: Path
    sam: dict[str, Any]


@pytest.fixture(scope="module")
def packaged(tmp_path_factory: pytest.TempPathFactory) -> Packaged:
    """The prod stage built by scripts/lambda_bundle.py and packaged by `chalice package`
    with .chalice/package-prod.json, placeholders filled."""
    tmp = tmp_path_factory.mktemp("package")
    project = tmp / "project"
    build_bundle(project)
    fill_placeholders(project, "prod")
    # Doorman's own variables are not passed: a developer's DOORMAN_STREAM_ARN must not win.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DOORMAN_", "AWS_"))}
    env["AWS_DEFAULT_REGION"] = "eu-west-1"
    out = tmp / "out"
    merge = ["--merge-template", ".chalice/package-prod.json"]
    result = subprocess.run(
        [str(BIN / "chalice"), "package", "--stage", "prod", *merge, str(out)],
        cwd=project,
        capture_output=True,
        text=True,
        timeout=240,
        env=env,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return Packaged(project, out, json.loads((out / "sam.json").read_text()))


def functions_of(sam: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {
        key: r["Properties"]
        for key, r in sam["Resources"].items()
        if r["Type"] == "AWS::Serverless::Function"
    }


def stack_names(stage: str) -> tuple[set[str], set[str]]:
    """The log group names infra/doorman.yaml creates and the FunctionName every alarm
    watches, for ``stage``."""
    text = (ROOT / "infra" / "doorman.yaml").read_text()
    values = {**STACK_PARAMS, "Stage": stage}

    def sub(template: str) -> str:
        return re.sub(r"\$\{(\w+)\}", lambda m: values[m.group(1)], template)

    groups = {sub(m) for m in re.findall(r"LogGroupName: !Sub (\S+)", text)}
    watched = {
        sub(m)
        for m in re.findall(r"- Name: FunctionName\s+Value: !Sub (\S+)", text, flags=re.MULTILINE)
    }
    return groups, watched


def policy_log_groups(stage: str, fn: str) -> set[str]:
    name = config()["stages"][stage]["lambda_functions"][fn]["iam_policy_file"]
    doc = json.loads((CHALICE_DIR / name).read_text())
    (statement,) = [s for s in doc["Statement"] if s.get("Sid") == "OwnLogGroup"]
    return {r.split(":log-group:")[1] for r in statement["Resource"] if ":log-stream:" not in r}


def test_packaged_template_lints_clean(packaged: Packaged):
    result = subprocess.run(
        [str(BIN / "cfn-lint"), "--format", "parseable", str(packaged.out / "sam.json")],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_packaged_functions_are_the_ones_the_stack_watches_and_logs(packaged: Packaged):
    functions = functions_of(packaged.sam)
    assert len(functions) == len(FUNCTIONS), sorted(functions)
    names = {p.get("FunctionName") for p in functions.values()}
    groups, watched = stack_names("prod")
    assert groups == {f"/aws/lambda/{n}" for n in names}
    assert watched and watched <= names, watched - names
    # No log group of Chalice's own (it would clash with the stack's, or name no function).
    kinds = {r["Type"] for r in packaged.sam["Resources"].values()}
    assert "AWS::Logs::LogGroup" not in kinds
    # Each role may write to its function's group.
    roles = {k: r for k, r in packaged.sam["Resources"].items() if r["Type"] == "AWS::IAM::Role"}
    for props in functions.values():
        role = roles[props["Role"]["Fn::GetAtt"][0]]
        (policy,) = role["Properties"]["Policies"]
        text = json.dumps(policy["PolicyDocument"])
        assert f"log-group:/aws/lambda/{props['FunctionName']}:log-stream:*" in text


def test_packaged_functions_keep_their_settings(packaged: Packaged):
    functions = functions_of(packaged.sam)
    check = functions["Check"]
    assert check["MemorySize"] == 256 and check["Timeout"] == 60
    assert check["VpcConfig"]["SubnetIds"]
    for key, props in functions.items():
        if key != "Check":
            assert "VpcConfig" not in props, key


def test_deployed_functions_are_the_ones_the_stack_watches_and_logs():
    """`chalice deploy` names: Chalice's own application graph for each stage."""
    from chalice.cli.factory import CLIFactory
    from chalice.deploy import models
    from chalice.deploy.appgraph import ApplicationGraphBuilder, DependencyBuilder

    for stage in ("dev", "prod"):
        factory = CLIFactory(str(ROOT), environ={**FILLED})
        cfg = factory.create_config_obj(chalice_stage_name=stage)
        graph = ApplicationGraphBuilder().build(cfg, stage)
        resources = DependencyBuilder().build_dependencies(graph)
        functions = {r.resource_name: r for r in resources if isinstance(r, models.LambdaFunction)}
        assert set(functions) == set(FUNCTIONS)
        assert not [r for r in resources if isinstance(r, models.LogGroup)]
        names = {f.function_name for f in functions.values()}
        groups, watched = stack_names(stage)
        assert groups == {f"/aws/lambda/{n}" for n in names}
        assert watched <= names
        for fn, resource in functions.items():
            assert policy_log_groups(stage, fn) == {f"/aws/lambda/{resource.function_name}"}


def test_package_merge_templates_name_the_functions_as_chalice_deploy_does():
    for stage in ("dev", "prod"):
        merge = json.loads((CHALICE_DIR / f"package-{stage}.json").read_text())
        named = {p["Properties"]["FunctionName"] for p in merge["Resources"].values()}
        groups, _ = stack_names(stage)
        assert {f"/aws/lambda/{n}" for n in named} == groups


def unpacked(packaged: Packaged, where: Path) -> Path:
    with zipfile.ZipFile(packaged.out / "deployment.zip") as z:
        z.extractall(where)
    return where


def test_bundle_leaves_out_cli_only_code_and_dependencies(packaged: Packaged, tmp_path: Path):
    bundle = unpacked(packaged, tmp_path / "bundle")
    top = {p.name for p in bundle.iterdir()}
    for name in CLI_ONLY_DISTRIBUTIONS:
        assert not [t for t in top if t.lower().startswith(name)], name
    for name in CLI_ONLY_MODULES:
        assert not (bundle / "chalicelib" / name).exists(), name
    assert {"app.py", "chalicelib", "celery", "kombu", "redis", "click"} <= top
    assert (bundle / "chalicelib" / "collect" / "lua" / "queues.lua").is_file()
    size = (packaged.out / "deployment.zip").stat().st_size
    print(f"deployment.zip: {size} bytes")


def test_bundle_imports_and_runs_alone(packaged: Packaged, tmp_path: Path):
    """The unpacked bundle, with only what the Lambda runtime adds (boto3 and its
    dependencies), imports every module it carries and builds Celery's remote control."""
    bundle = unpacked(packaged, tmp_path / "bundle")
    runtime = tmp_path / "runtime"
    runtime.mkdir()
    import boto3

    site = Path(boto3.__file__).parents[1]
    for name in RUNTIME_PACKAGES:
        (runtime / name).symlink_to(site / name)
    code = f"""
import importlib, pathlib, sys
sys.path[:0] = [{str(bundle)!r}, {str(runtime)!r}]
bundle = pathlib.Path({str(bundle)!r})
for path in sorted((bundle / "chalicelib").rglob("*.py")):
    parts = path.relative_to(bundle).with_suffix("").parts
    importlib.import_module(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
import app
from celery import Celery
Celery("probe", broker="redis://127.0.0.1:1/0").control
leaked = sorted(m for m in sys.modules if m.split(".")[0] in {CLI_ONLY_DISTRIBUTIONS!r})
print("ok", leaked)
"""
    env = {
        "PATH": os.environ.get("PATH", ""),
        "DOORMAN_STREAM_ARN": FILLED["DOORMAN_STREAM_ARN"],
        "DOORMAN_TOPIC_ARN": FILLED["DOORMAN_TOPIC_ARN"],
        "AWS_LAMBDA_FUNCTION_NAME": "doorman-prod-check",
    }
    result = subprocess.run(
        [sys.executable, "-I", "-S", "-c", code],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip() == "ok []"


def test_bundle_build_skips_when_wheels_cannot_be_downloaded(tmp_path: Path):
    """No package index: the bundle script says so with EX_TEMPFAIL, and the tests that
    need a bundle skip instead of failing."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
    env.update(
        PIP_CONFIG_FILE=os.devnull,
        PIP_INDEX_URL="http://127.0.0.1:9/simple",
        PIP_RETRIES="0",
        PIP_TIMEOUT="2",
    )
    with pytest.raises(pytest.skip.Exception, match="could not be downloaded"):
        build_bundle(tmp_path / "project", env=env)


# What each function calls on the table (chalicelib/state/dynamodb.py): the check loads
# (Query), reads the manifest (GetItem) and commits in one TransactWriteItems of Puts and
# Deletes, which IAM authorizes as PutItem and DeleteItem; GET /status reads every target's
# items in batches (BatchGetItem) and a torn one again alone (Query). The
# outbox's UpdateItem (mark_delivered, mark_channel) is the doorman command's, never Lambda's.
DYNAMODB_ACTIONS = {
    "check": {"dynamodb:query", "dynamodb:getitem", "dynamodb:putitem", "dynamodb:deleteitem"},
    "api_handler": {"dynamodb:query", "dynamodb:batchgetitem"},
}


@pytest.mark.parametrize("stage", ["dev", "prod"])
def test_table_actions_are_the_ones_the_functions_call(stage):
    for fn, expected in DYNAMODB_ACTIONS.items():
        name = config()["stages"][stage]["lambda_functions"][fn]["iam_policy_file"]
        doc = json.loads((CHALICE_DIR / name).read_text())
        actions = {
            a.lower()
            for s in doc["Statement"]
            for a in as_list(s["Action"])
            if a.lower().startswith("dynamodb:")
            and not any("/stream/" in r for r in as_list(s["Resource"]))
        }
        assert actions == expected, f"{name}: {sorted(actions)}"


@pytest.mark.parametrize("stage", ["dev", "prod"])
def test_check_may_describe_its_subnets(stage):
    doc = json.loads((CHALICE_DIR / f"policy-{stage}-check.json").read_text())
    (vpc,) = [s for s in doc["Statement"] if s["Sid"] == "VpcNetworkInterfaces"]
    assert "ec2:DescribeSubnets" in vpc["Action"]
