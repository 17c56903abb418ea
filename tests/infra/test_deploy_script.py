"""scripts/deploy: one region for every tool it runs, and no deploy with a missing stack output.

No AWS account can be reached here, so the script runs in a copy of the project with stub
``aws`` and ``chalice`` executables first on PATH: they record their arguments and the
region variables they were started with, and answer what the script asks (the stack's
outputs, the secrets). Everything else is real: the script, bash, Python, the Lambda bundle."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
EX_TEMPFAIL = 75
ACCOUNT = "123456789012"

STUB_AWS = """#!{python}
import json, os, sys
args = sys.argv[1:]
with open(os.environ["STUB_LOG"], "a") as f:
    f.write(json.dumps({{"tool": "aws", "argv": args, "AWS_REGION": os.environ.get("AWS_REGION"),
                        "AWS_DEFAULT_REGION": os.environ.get("AWS_DEFAULT_REGION")}}) + "\\n")
if "--region" in args:
    i = args.index("--region")
    del args[i:i + 2]
command = args[:2]
if command == ["configure", "get"]:
    region = os.environ.get("STUB_PROFILE_REGION")
    if not region:
        sys.exit(1)
    print(region)
elif command == ["ssm", "get-parameter"]:
    print("rediss://:pw@redis.example:6379/0" if "redis-url" in " ".join(args) else "h" * 64)
elif command == ["cloudformation", "describe-stacks"]:
    print(os.environ["STUB_OUTPUTS"])
elif command == ["lambda", "list-event-source-mappings"]:
    print("None")
"""

STUB_CHALICE = """#!{python}
import json, os, sys
stage = sys.argv[sys.argv.index("--stage") + 1]
config = json.load(open(".chalice/config.json"))
with open(os.environ["STUB_LOG"], "a") as f:
    f.write(json.dumps({{"tool": "chalice", "argv": sys.argv[1:],
                        "AWS_REGION": os.environ.get("AWS_REGION"),
                        "AWS_DEFAULT_REGION": os.environ.get("AWS_DEFAULT_REGION"),
                        "stage_env": config["stages"][stage]["environment_variables"]}}) + "\\n")
os.makedirs(".chalice/deployed", exist_ok=True)
json.dump({{"stage": stage, "resources": []}}, open(f".chalice/deployed/{{stage}}.json", "w"))
"""


def outputs(region: str, *, leave_out: tuple[str, ...] = ()) -> str:
    """describe-stacks' Outputs as JSON, as the stack in ``region`` would have them."""
    prefix = f"arn:aws:{{}}:{region}:{ACCOUNT}:"
    values = {
        "TableName": "doorman-dev",
        "StreamArn": prefix.format("dynamodb") + "table/doorman-dev/stream/2026-12-01T00:00:00.000",
        "TopicArn": prefix.format("sns") + "doorman-dev-alerts",
        "DeadLetterQueueUrl": f"https://sqs.{region}.amazonaws.com/{ACCOUNT}/doorman-dev-alerts-dlq",
        "DeadLetterQueueArn": prefix.format("sqs") + "doorman-dev-alerts-dlq",
        "DispatchDeadLetterQueueArn": prefix.format("sqs") + "doorman-dev-dispatch-dlq",
    }
    return json.dumps(
        [{"OutputKey": k, "OutputValue": v} for k, v in values.items() if k not in leave_out]
    )


@dataclass(frozen=True)
class Run:
    returncode: int
    stdout: str
    stderr: str
    calls: list[dict[str, Any]]

    def of(self, tool: str) -> list[dict[str, Any]]:
        return [c for c in self.calls if c["tool"] == tool]


def deploy(project: Path, *args: str, **env_values: str) -> Run:
    """scripts/deploy in ``project`` with the stubs on PATH; ``env_values`` on top of an
    environment holding no AWS_ or DOORMAN_ variable."""
    stubs = project.parent / "stubs"
    stubs.mkdir(exist_ok=True)
    for name, text in (("aws", STUB_AWS), ("chalice", STUB_CHALICE)):
        (stubs / name).write_text(text.format(python=sys.executable))
        (stubs / name).chmod(0o755)
    log = project.parent / "calls.jsonl"
    log.write_text("")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "DOORMAN_"))}
    env.update(
        PATH=f"{stubs}{os.pathsep}{os.environ.get('PATH', '')}",
        PYTHON=sys.executable,
        CHALICE=str(stubs / "chalice"),
        STUB_LOG=str(log),
        **env_values,
    )
    result = subprocess.run(
        ["bash", str(project / "scripts" / "deploy"), *args],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    calls = [json.loads(line) for line in log.read_text().splitlines()]
    return Run(result.returncode, result.stdout, result.stderr, calls)


def assert_one_region(run: Run, region: str) -> None:
    aws_calls = [c for c in run.of("aws") if c["argv"][:2] != ["configure", "get"]]
    assert aws_calls
    for call in aws_calls:
        assert call["argv"][:2] == ["--region", region], call["argv"]
    for call in run.calls:
        if call["argv"][:2] != ["configure", "get"]:
            assert (call["AWS_REGION"], call["AWS_DEFAULT_REGION"]) == (region, region), call


def test_aws_region_reaches_every_tool(project: Path):
    """The README's `export AWS_REGION=...` with a different AWS_DEFAULT_REGION and profile
    region: the stack and the functions both go to AWS_REGION."""
    run = deploy(
        project,
        "dev",
        AWS_REGION="eu-west-1",
        AWS_DEFAULT_REGION="us-east-1",
        STUB_PROFILE_REGION="ap-southeast-2",
        STUB_OUTPUTS=outputs("eu-west-1"),
    )
    if run.returncode == EX_TEMPFAIL:
        pytest.skip(f"Lambda wheels could not be downloaded: {run.stderr.strip()[-300:]}")
    assert run.returncode == 0, run.stdout + run.stderr
    assert "deploy: region eu-west-1 (from AWS_REGION)" in run.stdout
    assert_one_region(run, "eu-west-1")
    assert [c["argv"][1] for c in run.of("aws") if c["argv"][2:4] == ["cloudformation", "deploy"]]
    (chalice,) = run.of("chalice")  # no stream mapping: no second deploy
    assert chalice["argv"] == ["deploy", "--stage", "dev"]
    env = chalice["stage_env"]
    assert env["DOORMAN_STREAM_ARN"].startswith("arn:aws:dynamodb:eu-west-1:")
    assert env["DOORMAN_TOPIC_ARN"] == f"arn:aws:sns:eu-west-1:{ACCOUNT}:doorman-dev-alerts"
    assert env["DOORMAN_TABLE"] == "doorman-dev"
    assert (project / ".chalice" / "deployed" / "dev.json").is_file()


def test_region_flag_wins(project: Path):
    run = deploy(
        project,
        "--region",
        "us-west-2",
        "dev",
        AWS_REGION="eu-west-1",
        AWS_DEFAULT_REGION="us-east-1",
        STUB_OUTPUTS=outputs("us-west-2", leave_out=("TableName",)),  # stops before Chalice
    )
    assert "deploy: region us-west-2 (from --region)" in run.stdout, run.stderr
    assert_one_region(run, "us-west-2")


def test_the_profiles_region_when_nothing_else_is_set(project: Path):
    run = deploy(
        project,
        "dev",
        AWS_PROFILE="ops",
        STUB_PROFILE_REGION="ap-southeast-2",
        STUB_OUTPUTS=outputs("ap-southeast-2", leave_out=("TableName",)),
    )
    assert "deploy: region ap-southeast-2 (from the profile ops)" in run.stdout, run.stderr
    assert_one_region(run, "ap-southeast-2")


def test_no_region_at_all_stops_before_any_aws_call(project: Path):
    run = deploy(project, "dev", STUB_OUTPUTS=outputs("eu-west-1"))
    assert run.returncode == 1
    assert "no usable region" in run.stderr and "--region" in run.stderr
    assert [c["argv"][:2] for c in run.of("aws")] == [["configure", "get"]]
    assert not run.of("chalice")


def test_missing_stack_outputs_stop_the_deploy_and_are_named(project: Path):
    run = deploy(
        project,
        "dev",
        AWS_REGION="eu-west-1",
        STUB_OUTPUTS=outputs("eu-west-1", leave_out=("StreamArn", "TopicArn")),
    )
    assert run.returncode == 1
    assert "deploy: the stack doorman-dev has no output StreamArn, TopicArn" in run.stderr
    assert not run.of("chalice")
    assert not (project / ".chalice" / "deployed").exists()


def test_a_stack_without_outputs_stops_the_deploy(project: Path):
    run = deploy(project, "dev", AWS_REGION="eu-west-1", STUB_OUTPUTS="null")
    assert run.returncode == 1
    assert "has no output TableName, StreamArn, TopicArn" in run.stderr
    assert not run.of("chalice")
