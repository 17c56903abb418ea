"""scripts/deploy and broker access: IAM authentication when the cache supports it (no Redis
password in the function's environment, elasticache:Connect on that user and cache only),
the password otherwise, and a customer-managed KMS key for the environment on request.

As in test_deploy_script, the script runs in a copy of the project with stub ``aws`` and
``chalice`` executables first on PATH; the aws stub answers from a table of replies."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.infra.test_deploy_script import EX_TEMPFAIL, Run, outputs

ACCOUNT = "123456789012"
REGION = "eu-west-1"
KEY_ARN = f"arn:aws:kms:{REGION}:{ACCOUNT}:key/0f0e0d0c-1111-2222-3333-444455556666"
PASSWORD_URL = "rediss://:pw-in-ssm@redis.example:6379/0"

STUB_AWS = """#!{python}
import json, os, sys
args = sys.argv[1:]
with open(os.environ["STUB_LOG"], "a") as f:
    f.write(json.dumps({{"tool": "aws", "argv": args}}) + "\\n")
if "--region" in args:
    i = args.index("--region")
    del args[i:i + 2]
replies = json.loads(os.environ["STUB_REPLIES"])
key = " ".join(args[:2])
if key == "ssm get-parameter":
    print("{password_url}" if "redis-url" in " ".join(args) else "h" * 64)
elif key in replies:
    if replies[key] is None:
        sys.exit(254)
    print(replies[key])
"""

STUB_CHALICE = """#!{python}
import json, os, sys
stage = sys.argv[sys.argv.index("--stage") + 1]
config = json.load(open(".chalice/config.json"))
check = config["stages"][stage]["lambda_functions"]["check"]
with open(os.environ["STUB_LOG"], "a") as f:
    f.write(json.dumps({{"tool": "chalice", "argv": sys.argv[1:],
                        "check_env": check["environment_variables"],
                        "check_policy": json.load(open(".chalice/" + check["iam_policy_file"]))}})
            + "\\n")
os.makedirs(".chalice/deployed", exist_ok=True)
json.dump({{"stage": stage, "resources": []}}, open(f".chalice/deployed/{{stage}}.json", "w"))
"""


def group(**changes: Any) -> dict[str, Any]:
    found: dict[str, Any] = {
        "ReplicationGroupId": "orders",
        "TransitEncryptionEnabled": True,
        "ClusterEnabled": False,
        "UserGroupIds": ["doorman-group"],
        "NodeGroups": [
            {
                "PrimaryEndpoint": {
                    "Address": "master.orders.abc.euw1.cache.amazonaws.com",
                    "Port": 6379,
                }
            }
        ],
    }
    found.update(changes)
    return found


def user(**changes: Any) -> dict[str, Any]:
    found: dict[str, Any] = {
        "UserId": "doorman",
        "Status": "active",
        "Authentication": {"Type": "iam"},
        "UserGroupIds": ["doorman-group"],
        "AccessString": "on -@all +llen %R~*",
    }
    found.update(changes)
    return found


def run_deploy(project: Path, replies: dict[str, Any], **env_values: str) -> Run:
    stubs = project.parent / "stubs"
    stubs.mkdir(exist_ok=True)
    for name, text in (("aws", STUB_AWS), ("chalice", STUB_CHALICE)):
        (stubs / name).write_text(text.format(python=sys.executable, password_url=PASSWORD_URL))
        (stubs / name).chmod(0o755)
    log = project.parent / "calls.jsonl"
    log.write_text("")
    answers = {
        "cloudformation describe-stacks": outputs(REGION),
        "lambda list-event-source-mappings": "None",
        "sts get-caller-identity": ACCOUNT,
        "kms describe-key": KEY_ARN,
        **{
            k: (v if v is None or isinstance(v, str) else json.dumps(v)) for k, v in replies.items()
        },
    }
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "DOORMAN_"))}
    env.update(
        PATH=f"{stubs}{os.pathsep}{os.environ.get('PATH', '')}",
        PYTHON=sys.executable,
        CHALICE=str(stubs / "chalice"),
        STUB_LOG=str(log),
        STUB_REPLIES=json.dumps(answers),
        AWS_REGION=REGION,
        **env_values,
    )
    result = subprocess.run(
        ["bash", str(project / "scripts" / "deploy"), "dev"],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    calls = [json.loads(line) for line in log.read_text().splitlines()]
    run = Run(result.returncode, result.stdout, result.stderr, calls)
    if run.returncode == EX_TEMPFAIL:
        pytest.skip(f"Lambda wheels could not be downloaded: {run.stderr.strip()[-300:]}")
    assert run.returncode == 0, run.stdout + run.stderr
    return run


def connect_statements(policy: dict[str, Any]) -> list[dict[str, Any]]:
    return [s for s in policy["Statement"] if "elasticache" in json.dumps(s.get("Action"))]


def test_a_cache_with_iam_auth_gets_no_password(project: Path) -> None:
    replies = {
        "elasticache describe-replication-groups": group(),
        "elasticache describe-users": user(),
    }
    run = run_deploy(project, replies, DOORMAN_ELASTICACHE_CACHE="orders")
    assert "IAM authentication to orders as doorman" in run.stdout
    for chalice in run.of("chalice"):
        env = chalice["check_env"]
        assert env["REDIS_URL"] == "rediss://master.orders.abc.euw1.cache.amazonaws.com:6379/0"
        assert "@" not in env["REDIS_URL"] and "pw-in-ssm" not in json.dumps(env)
        assert env["DOORMAN_REDIS_AUTH"] == "iam"
        assert env["DOORMAN_ELASTICACHE_USER"] == "doorman"
        assert env["DOORMAN_ELASTICACHE_CACHE"] == "orders"
        assert connect_statements(chalice["check_policy"]) == [
            {
                "Sid": "ElastiCacheIamAuth",
                "Effect": "Allow",
                "Action": "elasticache:Connect",
                "Resource": [
                    f"arn:aws:elasticache:{REGION}:{ACCOUNT}:replicationgroup:orders",
                    f"arn:aws:elasticache:{REGION}:{ACCOUNT}:user:doorman",
                ],
            }
        ]
    # The password parameter is not even read.
    assert not [c for c in run.of("aws") if "redis-url" in " ".join(c["argv"])]
    # The committed policy file is untouched (the statement is the build copy's).
    committed = json.loads((project / ".chalice" / "policy-dev-check.json").read_text())
    assert connect_statements(committed) == []


@pytest.mark.parametrize(
    ("replies", "reason"),
    [
        (
            {
                "elasticache describe-replication-groups": group(TransitEncryptionEnabled=False),
                "elasticache describe-users": user(),
            },
            "no in-transit encryption",
        ),
        (
            {
                "elasticache describe-replication-groups": group(),
                "elasticache describe-users": user(Authentication={"Type": "password"}),
            },
            "does not use IAM authentication",
        ),
        (
            {
                "elasticache describe-replication-groups": group(),
                "elasticache describe-users": user(UserGroupIds=["other"]),
            },
            "none of orders's user groups",
        ),
        (
            {"elasticache describe-replication-groups": None, "elasticache describe-users": user()},
            "was not found",
        ),
    ],
    ids=["no-tls", "password-user", "other-group", "no-cache"],
)
def test_a_cache_without_iam_auth_keeps_the_password(
    project: Path,
    replies: dict[str, Any],
    reason: str,
) -> None:
    run = run_deploy(project, replies, DOORMAN_ELASTICACHE_CACHE="orders")
    assert "no IAM authentication: " in run.stderr and reason in run.stderr
    for chalice in run.of("chalice"):
        assert chalice["check_env"]["REDIS_URL"] == PASSWORD_URL
        assert "DOORMAN_REDIS_AUTH" not in chalice["check_env"]
        assert connect_statements(chalice["check_policy"]) == []
    # The password stays under the AWS-managed key: the script says so and what to do.
    assert "DOORMAN_ENV_KMS_KEY=true" in run.stderr


def test_a_customer_managed_key_encrypts_the_environment(project: Path) -> None:
    run = run_deploy(project, {}, DOORMAN_ENV_KMS_KEY="true")
    (stack,) = [c for c in run.of("aws") if c["argv"][2:4] == ["cloudformation", "deploy"]]
    assert "EnvKmsKey=true" in stack["argv"]
    updates = [c["argv"] for c in run.of("aws") if "update-function-configuration" in c["argv"]]
    assert len(updates) == 1
    assert updates[0][updates[0].index("--function-name") + 1] == "doorman-dev-check"
    assert updates[0][updates[0].index("--kms-key-arn") + 1] == KEY_ARN
    # Set after Chalice's last deploy, once the function's last update is done.
    order = [c["tool"] + ":" + " ".join(c["argv"][2:4]) for c in run.calls]
    assert order.index("aws:lambda wait") < order.index("aws:lambda update-function-configuration")
    assert max(i for i, c in enumerate(run.calls) if c["tool"] == "chalice") < order.index(
        "aws:lambda update-function-configuration"
    )
    assert f"encrypted with {KEY_ARN}" in run.stdout
    assert "DOORMAN_ENV_KMS_KEY=true encrypts" not in run.stderr


def test_env_kms_key_takes_true_or_false(project: Path) -> None:
    stubs = project.parent / "stubs"
    stubs.mkdir(exist_ok=True)
    with pytest.raises(AssertionError, match="must be true or false"):
        run_deploy(project, {}, DOORMAN_ENV_KMS_KEY="yes")
