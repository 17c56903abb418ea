"""The fleet in the stack: one "no check" watchdog alarm per target (Fn::ForEach over the
Targets parameter), and scripts/deploy handing it every target the check function checks."""

from __future__ import annotations

import json
from pathlib import Path

from cfnlint.decode import cfn_yaml

from tests.infra.test_deploy_script import deploy, outputs

ROOT = Path(__file__).resolve().parents[2]


def test_a_watchdog_alarm_per_target():
    template = cfn_yaml.load(str(ROOT / "infra" / "doorman.yaml"))
    assert template["Transform"] == "AWS::LanguageExtensions"
    assert template["Parameters"]["Targets"]["Type"] == "CommaDelimitedList"
    name, targets, body = template["Resources"]["Fn::ForEach::Watchdogs"]
    assert targets == {"Ref": "Targets"}
    ((logical, alarm),) = body.items()
    assert logical == f"WatchdogAlarm&{{{name}}}"
    props = alarm["Properties"]
    assert props["MetricName"] == "CheckSucceeded" and props["Namespace"] == "Doorman"
    assert props["Dimensions"] == [{"Name": "target", "Value": {"Ref": name}}]
    assert props["Statistic"] == "SampleCount" and props["TreatMissingData"] == "breaching"
    assert props["AlarmName"] == {"Fn::Sub": "${AppName}-${Stage}-${" + name + "}-no-check"}
    # No alarm left watching a single target outside the loop.
    assert "WatchdogAlarm" not in template["Resources"]


def _stack_parameters(run) -> dict[str, str]:  # type: ignore[no-untyped-def]
    (call,) = [c for c in run.of("aws") if c["argv"][2:4] == ["cloudformation", "deploy"]]
    argv = call["argv"]
    assert argv[argv.index("--capabilities") + 1] == "CAPABILITY_AUTO_EXPAND"
    start = argv.index("--parameter-overrides") + 1
    return dict(a.split("=", 1) for a in argv[start:] if "=" in a and not a.startswith("--"))


def test_deploy_passes_every_target_of_doorman_targets(project: Path):
    path = project / ".chalice" / "config.json"
    config = json.loads(path.read_text())
    check_env = config["stages"]["dev"]["lambda_functions"]["check"]["environment_variables"]
    check_env["DOORMAN_TARGETS"] = json.dumps(
        [{"name": "eu-orders"}, {"name": "us-mail"}, {"name": "batch.jobs"}]
    )
    path.write_text(json.dumps(config))
    run = deploy(
        project,
        "dev",
        AWS_REGION="eu-west-1",
        STUB_OUTPUTS=outputs("eu-west-1", leave_out=("TableName",)),  # stops after the stack
    )
    params = _stack_parameters(run)
    assert params["Targets"] == "eu-orders,us-mail,batch.jobs"
    assert params["Target"] == "eu-orders"


def test_deploy_of_one_target_names_it(project: Path):
    run = deploy(
        project,
        "dev",
        AWS_REGION="eu-west-1",
        STUB_OUTPUTS=outputs("eu-west-1", leave_out=("TableName",)),
    )
    params = _stack_parameters(run)
    assert params["Targets"] == params["Target"] == "dev"


def test_the_log_group_the_widgets_read_is_the_check_functions_and_is_kept_30_days():
    from chalicelib.dashboard import CHECK_LOG_GROUP, logs_queries

    template = cfn_yaml.load(str(ROOT / "infra" / "doorman.yaml"))
    groups = {
        key: r["Properties"]
        for key, r in template["Resources"].items()
        if isinstance(r, dict) and r["Type"] == "AWS::Logs::LogGroup"
    }
    assert groups and all(p.get("RetentionInDays") == 30 for p in groups.values()), groups
    assert groups["CheckLogGroup"]["LogGroupName"] == {"Fn::Sub": CHECK_LOG_GROUP}
    for query in logs_queries():
        assert query.text().startswith(f"SOURCE '{CHECK_LOG_GROUP}' | ")
