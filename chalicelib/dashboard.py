"""The CloudWatch dashboards, generated into ``infra/doorman.yaml``: one per target (a target
picked in the dashboard's own selector) and one for the fleet.

Only the heartbeat ``CheckSucceeded`` (and any ``metric_queues``) are metrics; every other
graph is a CloudWatch Logs Insights widget over the check function's log group, reading the
fields of the check's log lines (``chalicelib.metrics``). Each query is built from a
:class:`LogsQuery`, so the tests run the same query logic over a real check's lines.

``python -m chalicelib.dashboard --write`` (``make dashboard``) rewrites each dashboard body
between the template's GENERATED markers; ``--check`` exits 1 when the committed template
differs from what this module generates. The bodies are CloudFormation ``!Sub`` strings:
``${AppName}``, ``${Stage}``, ``${Target}``, ``${AWS::Region}``, ``${AWS::AccountId}``,
``${AWS::Partition}`` and the alarms' ``${...Arn}`` are filled in at deploy time.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .metrics import (
    CATALOGUE,
    CHECK_KIND,
    KIND_FIELD,
    NAMESPACE,
    QUEUE_DIMENSION,
    QUEUE_KIND,
    TARGET_DIMENSION,
    metric,
)

TEMPLATE = Path(__file__).resolve().parent.parent / "infra" / "doorman.yaml"
BEGIN = (
    "# BEGIN GENERATED {name} by `make dashboard` (python -m chalicelib.dashboard); do not edit."
)
END = "# END GENERATED {name}"
# The per-target dashboard's selector replaces this text everywhere in its body (a dashboard
# "pattern" variable), with a target name found in CheckSucceeded's target dimension.
TARGET_TOKEN = "DOORMAN-SELECTED-TARGET"  # noqa: S105 (a dashboard variable, no secret)
CHECK_LOG_GROUP = "/aws/lambda/${AppName}-${Stage}-check"
WATCHDOG_ALARM_NAME = "${AppName}-${Stage}-%s-no-check"
# The template's alarms shared by every target, shown in the alarm-status widgets.
ALARMS = (
    "CheckErrorsAlarm",
    "DispatchErrorsAlarm",
    "NotifierErrorsAlarm",
    "DeadLetterAlarm",
    "DispatchDroppedAlarm",
    "DispatchRetriedAlarm",
    "DispatchIteratorAgeAlarm",
    "DispatchDeadLetterAlarm",
)


@dataclass(frozen=True)
class LogsQuery:
    """A Logs Insights query over the check's lines: ``filter`` on the line kind (and the
    target), ``stats`` of fields, ``by`` groups, then an optional ``sort``.

    ``stats`` holds (function, field) pairs; each result is named after its field.
    """

    kind: str
    stats: tuple[tuple[str, str], ...]
    by: tuple[str, ...]
    one_target: bool = True
    sort: str | None = None

    def fields(self) -> set[str]:
        """The log fields the query reads (``@``-fields are CloudWatch's own)."""
        names = {KIND_FIELD} | {f for _fn, f in self.stats if not f.startswith("@")}
        names |= {b for b in self.by if not b.startswith("bin(")}
        if self.one_target:
            names.add(TARGET_DIMENSION)
        return names

    def text(self) -> str:
        """The query as a dashboard widget runs it (``SOURCE`` names the log group)."""
        where = f'{KIND_FIELD} = "{self.kind}"'
        if self.one_target:
            where += f' and {TARGET_DIMENSION} = "{TARGET_TOKEN}"'
        stats = ", ".join(f"{fn}({field}) as {_alias(field)}" for fn, field in self.stats)
        parts = [
            f"SOURCE '{CHECK_LOG_GROUP}'",
            f"filter {where}",
            f"stats {stats} by {', '.join(self.by)}",
        ]
        if self.sort:
            parts.append(f"sort {self.sort}")
        return " | ".join(parts)


def _alias(field: str) -> str:
    return "LastCheck" if field == "@timestamp" else field


def _check(*stats: tuple[str, str]) -> LogsQuery:
    return LogsQuery(CHECK_KIND, stats, ("bin(1m)",))


# The per-target graphs drawn from the check's line: (title, query), up to four to a row.
TARGET_ROWS: tuple[tuple[tuple[str, LogsQuery], ...], ...] = (
    (
        ("Check duration (ms)", _check(("max", "CheckDurationMs"))),
        ("Alerts firing", _check(("max", "AlertsFiring"))),
        ("Messages waiting", _check(("max", "TotalPending"))),
        ("Oldest waiting message (s)", _check(("max", "MaxLatencySec"))),
    ),
    (
        ("Workers", _check(("min", "AliveWorkers"), ("max", "TotalWorkers"))),
        ("Running tasks", _check(("avg", "TotalActive"))),
        ("Saturation (%)", _check(("avg", "SaturationPct"))),
        ("Stuck tasks", _check(("max", "StuckTasks"))),
    ),
    # Task outcomes (workers with the companion): counts since the previous check, so a bin
    # adds them up; the failure rate is the check's own, the worst one of the bin. A check
    # that did not measure them logs no field, and the graph has a gap.
    (
        (
            "Task outcomes",
            _check(("sum", "TasksSucceeded"), ("sum", "TasksFailed"), ("sum", "TasksExpired")),
        ),
        ("Failure rate (% of finished tasks)", _check(("max", "FailureRatePct"))),
    ),
    (
        ("Redis memory (% of maxmemory)", _check(("max", "RedisMemoryPct"))),
        ("Redis connections", _check(("max", "RedisClients"))),
        ("Queues not shown (max_queues)", _check(("max", "QueuesNotShown"))),
        ("Queues logged", _check(("max", "QueuesLogged"))),
    ),
)
# Every logged queue: two graphs (5-minute bins keep 100 queues x 3 hours under Logs
# Insights' 10,000 rows) and a table of the latest figures, deepest first.
QUEUE_GRAPHS: tuple[tuple[str, LogsQuery], ...] = (
    (
        "Depth by queue",
        LogsQuery(QUEUE_KIND, (("max", "QueueDepth"),), ("bin(5m)", QUEUE_DIMENSION)),
    ),
    (
        "Oldest message by queue (s)",
        LogsQuery(QUEUE_KIND, (("max", "QueueLatencySec"),), ("bin(5m)", QUEUE_DIMENSION)),
    ),
)
QUEUE_TABLE = LogsQuery(
    QUEUE_KIND,
    (("latest", "QueueDepth"), ("latest", "QueueLatencySec")),
    (QUEUE_DIMENSION,),
    sort="QueueDepth desc",
)
# The fleet: one row per target with its health, the unhealthy first.
FLEET_TABLE = LogsQuery(
    CHECK_KIND,
    (
        ("latest", "CheckSucceeded"),
        ("latest", "AlertsFiring"),
        ("latest", "TotalPending"),
        ("latest", "MaxLatencySec"),
        ("latest", "AliveWorkers"),
        ("max", "@timestamp"),
    ),
    (TARGET_DIMENSION,),
    one_target=False,
    sort="CheckSucceeded asc",
)
FLEET_GRAPHS: tuple[tuple[str, LogsQuery], ...] = (
    (
        "Messages waiting, by target",
        LogsQuery(CHECK_KIND, (("max", "TotalPending"),), ("bin(5m)", TARGET_DIMENSION), False),
    ),
    (
        "Oldest waiting message (s), by target",
        LogsQuery(CHECK_KIND, (("max", "MaxLatencySec"),), ("bin(5m)", TARGET_DIMENSION), False),
    ),
)


def logs_queries() -> list[LogsQuery]:
    """Every Logs Insights query of both dashboards."""
    found = [q for row in TARGET_ROWS for _t, q in row] + [q for _t, q in QUEUE_GRAPHS]
    return [*found, QUEUE_TABLE, FLEET_TABLE, *(q for _t, q in FLEET_GRAPHS)]


def _logs_widget(
    title: str, query: LogsQuery, x: int, y: int, w: int, h: int = 6, view: str = "timeSeries"
) -> dict[str, Any]:
    return {
        "type": "log",
        "x": x,
        "y": y,
        "width": w,
        "height": h,
        "properties": {
            "title": title,
            "region": "${AWS::Region}",
            "view": view,
            "query": query.text(),
        },
    }


def _heartbeat_widget(x: int, y: int, w: int, *, fleet: bool) -> dict[str, Any]:
    m = metric("CheckSucceeded")
    if fleet:
        search = (
            f"SEARCH('{{{NAMESPACE},{TARGET_DIMENSION}}} MetricName=\"{m.name}\"',"
            " 'SampleCount', 60)"
        )
        metrics: list[list[Any]] = [[{"expression": search, "id": "checks", "label": ""}]]
        title = "Checks per minute, by target (none: not checked)"
    else:
        metrics = [
            [NAMESPACE, m.name, TARGET_DIMENSION, TARGET_TOKEN, {"stat": stat, "label": label}]
            for stat, label in (("Minimum", "reached Redis (0/1)"), ("SampleCount", "checks"))
        ]
        title = "Checks of the target (CheckSucceeded)"
    return {
        "type": "metric",
        "x": x,
        "y": y,
        "width": w,
        "height": 6,
        "properties": {
            "title": title,
            "region": "${AWS::Region}",
            "view": "timeSeries",
            "period": 60,
            "metrics": metrics,
        },
    }


def _alarm_widget(title: str, alarms: list[str]) -> dict[str, Any]:
    return {
        "type": "alarm",
        "x": 0,
        "y": 0,
        "width": 24,
        "height": 2,
        "properties": {"title": title, "alarms": alarms},
    }


def _watchdog_arn(target: str) -> str:
    name = WATCHDOG_ALARM_NAME % target
    return "arn:${AWS::Partition}:cloudwatch:${AWS::Region}:${AWS::AccountId}:alarm:" + name


def dashboard_body() -> dict[str, Any]:
    """The per-target dashboard body (before CloudFormation's substitution)."""
    alarms = [_watchdog_arn(TARGET_TOKEN)] + [f"${{{name}.Arn}}" for name in ALARMS]
    widgets: list[dict[str, Any]] = [
        _alarm_widget("Doorman alarms (this target's watchdog)", alarms)
    ]
    y = 2
    widgets.append(_heartbeat_widget(0, y, 24, fleet=False))
    y += 6
    for row in TARGET_ROWS:
        width = 24 // len(row)
        for i, (title, query) in enumerate(row):
            widgets.append(_logs_widget(title, query, i * width, y, width))
        y += 6
    for i, (title, query) in enumerate(QUEUE_GRAPHS):
        widgets.append(_logs_widget(title, query, i * 12, y, 12, 8))
    y += 8
    widgets.append(_logs_widget("Queues now", QUEUE_TABLE, 0, y, 24, 8, "table"))
    variable = {
        "type": "pattern",
        "pattern": TARGET_TOKEN,
        "inputType": "select",
        "id": "target",
        "label": "Target",
        "defaultValue": "${Target}",
        "visible": True,
        "search": f'{{{NAMESPACE},{TARGET_DIMENSION}}} MetricName="CheckSucceeded"',
        "populateFrom": TARGET_DIMENSION,
    }
    return {"variables": [variable], "widgets": widgets}


def fleet_dashboard_body() -> dict[str, Any]:
    """The fleet dashboard body: one row per target, the shared alarms, every heartbeat."""
    alarms = [f"${{{name}.Arn}}" for name in ALARMS]
    widgets: list[dict[str, Any]] = [_alarm_widget("Doorman alarms (shared)", alarms)]
    widgets.append(_logs_widget("Targets: last check", FLEET_TABLE, 0, 2, 24, 10, "table"))
    widgets.append(_heartbeat_widget(0, 12, 8, fleet=True))
    for i, (title, query) in enumerate(FLEET_GRAPHS):
        widgets.append(_logs_widget(title, query, 8 + i * 8, 12, 8))
    return {"widgets": widgets}


BLOCKS = {"target dashboard": dashboard_body, "fleet dashboard": fleet_dashboard_body}


def dashboard_fields() -> set[str]:
    """Every field or metric either dashboard reads."""
    names = {f for q in logs_queries() for f in q.fields()}
    return names | {"CheckSucceeded"}


def render_block(name: str = "target dashboard", indent: str = "      ") -> str:
    """The template lines between (and including) ``name``'s GENERATED markers."""
    body = json.dumps(BLOCKS[name](), indent=2)
    lines = [indent + BEGIN.format(name=name), indent + "DashboardBody: !Sub |"]
    lines += [indent + "  " + line for line in body.splitlines()]
    lines.append(indent + END.format(name=name))
    return "\n".join(lines) + "\n"


def render_template(text: str) -> str:
    """``text`` with every generated block replaced; raises ValueError without the markers."""
    for name in BLOCKS:
        begin, end_marker = BEGIN.format(name=name), END.format(name=name)
        start = text.find(begin)
        end = text.find(end_marker, start)
        if start < 0 or end < 0:
            raise ValueError(f"the template has no GENERATED markers for the {name}")
        line_start = text.rfind("\n", 0, start) + 1
        indent = text[line_start:start]
        line_end = text.find("\n", end)
        line_end = len(text) if line_end < 0 else line_end + 1
        text = text[:line_start] + render_block(name, indent) + text[line_end:]
    return text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m chalicelib.dashboard", description=__doc__)
    parser.add_argument("--template", type=Path, default=TEMPLATE)
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--write", action="store_true", help="rewrite the template's dashboards")
    mode.add_argument("--check", action="store_true", help="exit 1 when the template drifted")
    args = parser.parse_args(argv)
    missing = {m.name for m in CATALOGUE} - dashboard_fields()
    if missing:
        print(f"figures missing from the dashboards: {sorted(missing)}", file=sys.stderr)
        return 1
    if not (args.write or args.check):
        print(json.dumps({name: build() for name, build in BLOCKS.items()}, indent=2))
        return 0
    current = args.template.read_text(encoding="utf-8")
    wanted = render_template(current)
    if args.check:
        if wanted != current:
            print(f"{args.template} is out of date: run make dashboard", file=sys.stderr)
            return 1
        return 0
    if wanted != current:
        args.template.write_text(wanted, encoding="utf-8")
        print(f"wrote {args.template}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
