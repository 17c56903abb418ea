"""Doorman benchmarks: every figure is measured beside its baseline in the same run.

Prints one table and a last line of ``key=value`` figures. Run with ``make bench``.
"""

from __future__ import annotations

import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from companion import figures_of as companion_figures  # noqa: E402  (bench/ is this folder)
from companion import rows as companion_rows  # noqa: E402
from scrub import bench_scrub  # noqa: E402

from chalicelib.embedded import RedisServer, Worker, point_app_at, wait_for_workers  # noqa: E402

QUEUES = 20
MESSAGES_PER_QUEUE = 25
RUNS = 9
BASELINE_RUNS = 3


def _median_ms(fn: Callable[[], object], runs: int) -> tuple[float, list[float]]:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        fn()
        times.append((time.perf_counter() - started) * 1000.0)
    return statistics.median(times), times


def bench_healthy() -> dict[str, float]:
    """Doorman's check vs common health checks: 2 real workers, 20 queues with messages."""
    from chalicelib import demo_app
    from chalicelib.runner import run_check

    server = RedisServer().start()
    workers = [
        Worker(
            "chalicelib.demo_app", server.url, f"bench-{i}@doorman", pool="prefork", concurrency=2
        ).start()
        for i in range(2)
    ]
    try:
        wait_for_workers(server.url, [w.name for w in workers])
        point_app_at(demo_app.app, server.url)
        names = [f"bench-queue-{i:02d}" for i in range(QUEUES)]
        for name in names:
            for _ in range(MESSAGES_PER_QUEUE):
                demo_app.build_report.apply_async((0.0,), queue=name)
        demo_app.app.close()

        settings, deps = _check_deps(server.url)
        payload = run_check(settings, deps).payload
        assert payload["metrics"]["alive_workers"] == 2, payload["metrics"]
        assert payload["metrics"]["total_pending"] == QUEUES * MESSAGES_PER_QUEUE
        doorman_ms, _ = _median_ms(lambda: run_check(settings, deps), RUNS)
        _release(settings, deps)

        from celery import Celery

        client = server.client()
        app = Celery("baseline", broker=server.url, set_as_current=False)

        def baseline() -> None:
            inspect = app.control.inspect(timeout=1.0)
            inspect.ping()
            inspect.stats()
            inspect.active()
            for name in names:
                client.llen(name)

        baseline_ms, _ = _median_ms(baseline, BASELINE_RUNS)
        app.close()
        return {
            "healthy_check_ms": round(doorman_ms, 1),
            "healthy_baseline_ms": round(baseline_ms, 1),
            "healthy_speedup": round(baseline_ms / doorman_ms, 1),
        }
    finally:
        for worker in workers:
            worker.stop()
        server.stop()


COMPANION_APP = "tests.support.companion_app"
COMPANION_TASKS, COMPANION_RACES, COMPANION_PAIRS = 2000, 6, 2
COMPANION_CHECK_ROUNDS = 15


def bench_healthy_companion() -> dict[str, float]:
    """The healthy check of 2 prefork workers with the companion beside 2 without it.

    The same app (tests/support/companion_app.py, ``COMPANION=0`` leaves it out) and the
    same 20 queues of 25 messages as the healthy check above, each cluster on a
    redis-server of its own; the checks take turns and each figure is the median of its
    turns. A companion worker is asked ``doorman`` where a plain one is asked ``active``.
    """
    from celery import Celery

    servers: list[RedisServer] = []
    workers: list[Worker] = []
    checks: dict[str, tuple[Any, Any]] = {}

    def verify(label: str, payload: dict[str, Any]) -> None:
        metrics = payload["metrics"]
        assert metrics["alive_workers"] == 2, metrics
        assert metrics["total_pending"] == QUEUES * MESSAGES_PER_QUEUE, metrics
        companion = {w["companion"] for w in payload["workers"]}
        assert companion == {label == "companion"}, payload["workers"]

    try:
        for label, flag in (("plain", "0"), ("companion", "1")):
            server = RedisServer().start()
            servers.append(server)
            names = [f"healthy-{label}-{i}@doorman" for i in range(2)]
            workers.extend(
                Worker(
                    COMPANION_APP, server.url, name, pool="prefork", concurrency=2,
                    env={"COMPANION": flag}, cwd=str(ROOT),
                ).start()
                for name in names
            )  # fmt: skip
            wait_for_workers(server.url, names, timeout=60)
            app = Celery("healthy-fill", broker=server.url, set_as_current=False)
            with app.producer_or_acquire() as producer:
                for q in range(QUEUES):
                    for _ in range(MESSAGES_PER_QUEUE):
                        app.send_task("comp.noop", queue=f"bench-queue-{q:02d}", producer=producer)
            app.close()
            checks[label] = _check_deps(server.url)
        medians = _take_turns(checks, COMPANION_CHECK_ROUNDS, verify)
    finally:
        for settings, deps in checks.values():
            _release(settings, deps)
        for worker in workers:
            worker.stop()
        for server in servers:
            server.stop()
    return {
        "companion_healthy_plain_check_ms": medians["plain"],
        "companion_healthy_check_ms": medians["companion"],
        "companion_healthy_ratio": round(medians["companion"] / medians["plain"], 2),
    }


def companion_section(figures: dict[str, float]) -> list[tuple[str, str]]:
    """The companion's rows: its cost to a worker, then the healthy check beside plain."""
    return [
        *companion_rows(figures),
        ("healthy check, 2 plain workers", f"{figures['companion_healthy_plain_check_ms']:.1f} ms"),
        ("healthy check, 2 companion workers", f"{figures['companion_healthy_check_ms']:.1f} ms"),
        ("ratio companion / plain", f"{figures['companion_healthy_ratio']:.2f}"),
    ]


FILL_LUA = """
-- KEYS: none. ARGV[1] queue count, ARGV[2] messages per queue, ARGV[3] message template.
local queues, per = tonumber(ARGV[1]), tonumber(ARGV[2])
for q = 1, queues do
  local name = string.format('scale-queue-%04d', q)
  redis.call('SADD', '_kombu.binding.celery', 'celery' .. '\\6\\22' .. '\\6\\22' .. name)
  local batch = {}
  for i = 1, per do
    batch[#batch + 1] = string.format(ARGV[3], q, i)
    if #batch == 500 then redis.call('LPUSH', name, unpack(batch)); batch = {} end
  end
  if #batch > 0 then redis.call('LPUSH', name, unpack(batch)) end
end
return queues * per
"""

# A Celery-shaped envelope (headers only matter to Doorman; the body is opaque base64).
TEMPLATE = (
    '{"body": "W1tdLCB7fSwge31d", "content-encoding": "utf-8", "content-type":'
    ' "application/json", "headers": {"lang": "py", "task": "bench.task", "id":'
    ' "q%d-m%d", "eta": null, "expires": null, "retries": 0}, "properties":'
    ' {"delivery_info": {"exchange": "", "routing_key": "x"}, "priority": 0}}'
)


def _slow_client(server: RedisServer) -> Any:
    """A client for the long filling scripts: no read timeout and no retry. redis-py's
    defaults (5 s, then retries) would send a script again while the first still runs, on
    a busy machine, and Redis answers BUSY."""
    import redis
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    return redis.Redis(
        host="127.0.0.1",
        port=server.port,
        password=server.password,
        socket_timeout=None,
        retry=Retry(NoBackoff(), 0),
    )


def _check_deps(url: str, **overrides: object) -> tuple[Any, Any]:
    """Settings and dependencies for checks of ``url``, after one warm-up check."""
    from chalicelib.runner import run_check
    from chalicelib.settings import load_settings
    from chalicelib.wiring import local_deps

    state_dir = tempfile.mkdtemp(prefix="doorman-bench-")
    settings = load_settings(
        environ={},
        overrides={
            "redis_url": url,
            "state_path": str(Path(state_dir) / "state.db"),
            "hash_secret": "bench",
            **overrides,
        },
    )
    deps = local_deps(settings)
    run_check(settings, deps)  # the first check learns the roster and the worker detail
    return settings, deps


def _release(settings: Any, deps: Any) -> None:
    """Close what ``_check_deps`` opened and remove its state directory."""
    from chalicelib.wiring import close_deps

    close_deps(deps)
    shutil.rmtree(Path(settings.default_state_path).parent, ignore_errors=True)


def _take_turns(
    checks: dict[Any, tuple[Any, Any]],
    rounds: int,
    verify: Callable[[Any, dict[str, Any]], None],
) -> dict[Any, float]:
    """Median check time (ms) of each entry of ``checks``, checked in turns.

    The order rotates every round (a, b, c, then b, c, a, ...), so whatever else the machine
    does meanwhile falls on every entry alike. ``verify`` sees each check's payload.
    """
    from chalicelib.runner import run_check

    keys = list(checks)
    times: dict[Any, list[float]] = {key: [] for key in keys}
    for turn in range(rounds):
        shift = turn % len(keys)
        for key in keys[shift:] + keys[:shift]:
            settings, deps = checks[key]
            started = time.perf_counter()
            payload = run_check(settings, deps).payload
            times[key].append((time.perf_counter() - started) * 1000.0)
            verify(key, payload)
    return {key: round(statistics.median(values), 1) for key, values in times.items()}


SCALE_ROUNDS = 11


def bench_scale_queues() -> dict[str, float]:
    """1,000 queues discovered through their binding set: 1 K vs 1 M waiting messages.

    Both brokers are filled and checked in the same run, taking turns, so the ratio compares
    checks made side by side; each figure is the median of its turns.
    """
    figures: dict[str, float] = {}
    sizes = (("1k", 1), ("1m", 1000))
    servers: list[RedisServer] = []
    checks: dict[str, tuple[Any, Any]] = {}

    def verify(label: str, payload: dict[str, Any]) -> None:
        metrics = payload["metrics"]
        assert metrics["queues"] == 1000, metrics
        assert metrics["total_pending"] == figures[f"scale_{label}_messages"], metrics

    try:
        for label, per_queue in sizes:
            server = RedisServer().start()
            servers.append(server)
            filled = _slow_client(server).eval(FILL_LUA, 0, 1000, per_queue, TEMPLATE)
            figures[f"scale_{label}_messages"] = float(filled)
            checks[label] = _check_deps(server.url)
        for label, median in _take_turns(checks, SCALE_ROUNDS, verify).items():
            figures[f"scale_{label}_check_ms"] = median
    finally:
        for settings, deps in checks.values():
            _release(settings, deps)
        for server in servers:
            server.stop()
    figures["scale_1m_vs_1k_ratio"] = round(
        figures["scale_1m_check_ms"] / figures["scale_1k_check_ms"], 2
    )
    return figures


BUDGET_MS = 20.0  # the promise: no single command Doorman sends runs longer inside Redis
HUGE_MEMBERS = 1_000_000


def _longest_command(server: RedisServer, run: Callable[[], object]) -> tuple[float, str]:
    """The longest single command (ms inside Redis, SLOWLOG) while ``run`` runs.

    Commands of 0.1 ms and more are kept: logging every command run inside a script would
    itself slow the script down.
    """
    client = server.client()
    client.config_set("slowlog-log-slower-than", 100)
    client.config_set("slowlog-max-len", 100_000)
    client.slowlog_reset()
    run()
    entries = [
        (e["duration"] / 1000.0, e["command"].split()[0].decode().upper())
        for e in client.slowlog_get(100_000)
        if e["command"]
    ]
    client.close()
    return max(entries, default=(0.0, "-"))


def bench_redis_budget() -> dict[str, float]:
    """The longest single Redis command of a check at 1,000 and 10,000 queues and with a
    1,000,000-member binding set, beside the baseline of reading that set in one SMEMBERS
    (what one call of the discovery script did before), and the worst PING another client
    saw meanwhile."""
    from chalicelib.runner import run_check

    figures: dict[str, float] = {}
    for label, count in (("1k", 1000), ("10k", 10_000)):
        server = RedisServer().start()
        try:
            _slow_client(server).eval(FILL_LUA, 0, count, 3, TEMPLATE)
            settings, deps = _check_deps(server.url, max_queues=count)
            payloads: list[dict[str, Any]] = []
            timed: list[float] = []

            def check(
                settings: Any = settings,
                deps: Any = deps,
                payloads: list[dict[str, Any]] = payloads,
                timed: list[float] = timed,
            ) -> None:
                started = time.perf_counter()
                payloads.append(run_check(settings, deps).payload)
                timed.append((time.perf_counter() - started) * 1000.0)

            ms, _name = _longest_command(server, check)
            assert payloads[0]["metrics"]["queues"] == count, payloads[0]["metrics"]
            assert payloads[0]["metrics"]["total_pending"] == count * 3
            figures[f"budget_{label}_check_ms"] = round(timed[0], 1)
            figures[f"budget_{label}_longest_ms"] = round(ms, 2)
            _release(settings, deps)
        finally:
            server.stop()
    server = RedisServer().start()
    try:
        client = _slow_client(server)
        for start in range(0, HUGE_MEMBERS, 100_000):
            client.eval(
                "for i=ARGV[1],ARGV[1]+99999 do"
                " redis.call('SADD',KEYS[1],'rk\\6\\22\\6\\22q-'..i) end",
                1,
                "_kombu.binding.huge",
                start + 1,
            )
        settings, deps = _check_deps(server.url)
        worst = [0.0]
        stop = threading.Event()

        def ping() -> None:
            pinger = server.client()
            while not stop.is_set():
                started = time.perf_counter()
                pinger.ping()
                worst[0] = max(worst[0], (time.perf_counter() - started) * 1000.0)
                time.sleep(0.01)
            pinger.close()

        thread = threading.Thread(target=ping, daemon=True)
        thread.start()
        started = time.perf_counter()
        ms, _name = _longest_command(server, lambda: run_check(settings, deps))
        figures["budget_1m_members_check_ms"] = round((time.perf_counter() - started) * 1000, 1)
        stop.set()
        thread.join(5)
        figures["budget_1m_members_longest_ms"] = round(ms, 2)
        figures["budget_1m_members_worst_ping_ms"] = round(worst[0], 2)
        baseline, _name = _longest_command(server, lambda: client.smembers("_kombu.binding.huge"))
        figures["budget_1m_members_baseline_ms"] = round(baseline, 1)
        _release(settings, deps)
        client.close()
    finally:
        server.stop()
    return figures


WORKER_COUNTS = (2, 4, 8)
WORKER_ROUNDS = 25


def bench_scale_workers() -> dict[str, float]:
    """Check time with 2, 4 and 8 real solo-pool workers (all answering).

    Each count has its own redis-server and workers, all running at once; the checks take
    turns (2, 4, 8, then 4, 8, 2, ...) so that whatever else the machine does in the
    meantime falls on every count alike, and each figure is the median of its turns.
    """
    figures: dict[str, float] = {}
    servers: list[RedisServer] = []
    workers: list[Worker] = []
    checks: dict[int, tuple[Any, Any]] = {}

    def verify(count: int, payload: dict[str, Any]) -> None:
        assert payload["metrics"]["alive_workers"] == count, payload["metrics"]

    try:
        for count in WORKER_COUNTS:
            server = RedisServer().start()
            servers.append(server)
            names = [f"solo-{i}-of-{count}@doorman" for i in range(count)]
            workers.extend(
                Worker("chalicelib.demo_app", server.url, name, pool="solo").start()
                for name in names
            )
            wait_for_workers(server.url, names, timeout=60)
            checks[count] = _check_deps(server.url)
        for count, median in _take_turns(checks, WORKER_ROUNDS, verify).items():
            figures[f"workers_{count}_check_ms"] = median
    finally:
        for settings, deps in checks.values():
            _release(settings, deps)
        for worker in workers:
            worker.stop()
        for server in servers:
            server.stop()
    figures["workers_8_vs_2_ratio"] = round(
        figures["workers_8_check_ms"] / figures["workers_2_check_ms"], 2
    )
    return figures


# The peak resident memory of this process since it started its program: VmHWM is reset by
# exec, while getrusage's ru_maxrss keeps the forked copy of the (large) benchmark process.
PEAK_RSS_FUNCTION = """
def peak_rss_mb():
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    import resource
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
"""

PEAK_RSS_SCRIPT = (
    PEAK_RSS_FUNCTION
    + """
import sys, tempfile, os
from chalicelib.wiring import local_deps
from chalicelib.runner import run_check
from chalicelib.settings import load_settings
d = tempfile.mkdtemp()
s = load_settings(environ={}, overrides={"redis_url": sys.argv[1],
    "state_path": os.path.join(d, "s.db"), "hash_secret": "bench"})
deps = local_deps(s)
run_check(s, deps)
run_check(s, deps)
print(peak_rss_mb())
"""
)


def bench_memory() -> dict[str, float]:
    """Peak resident memory of a process that imports Doorman and runs two checks."""
    server = RedisServer().start()
    worker = Worker(
        "chalicelib.demo_app", server.url, "mem@doorman", pool="prefork", concurrency=2
    ).start()
    try:
        wait_for_workers(server.url, [worker.name])
        out = subprocess.run(
            [sys.executable, "-c", PEAK_RSS_SCRIPT, server.url],
            capture_output=True,
            text=True,
            cwd=ROOT,
            check=True,
        )
        return {"check_peak_rss_mb": round(float(out.stdout.strip().splitlines()[-1]), 1)}
    finally:
        worker.stop()
        server.stop()


# Prices used for the cost estimate (AWS us-east-1 list prices, on-demand).
LAMBDA_GB_SECOND = 0.0000166667
LAMBDA_PER_MILLION_REQUESTS = 0.20
DYNAMODB_PER_MILLION_WRITE_UNITS = 0.625
DYNAMODB_PER_MILLION_READ_UNITS = 0.125
CHECKS_PER_MONTH = 60 * 24 * 30


def cost(check_ms: float, memory_mb: int = 256) -> dict[str, float]:
    """Monthly cost of one target at a 1-minute schedule, from the measured duration.

    A check reads the target's items (one Query: ~1 read unit, eventually consistent: 0.5)
    and writes the sample item in a transaction (~4 KB: 4 units, doubled for transactions).
    """
    gb_seconds = CHECKS_PER_MONTH * (check_ms / 1000.0) * (memory_mb / 1024.0)
    lambda_cost = (
        gb_seconds * LAMBDA_GB_SECOND + CHECKS_PER_MONTH / 1e6 * LAMBDA_PER_MILLION_REQUESTS
    )
    write_units = CHECKS_PER_MONTH * 8
    read_units = CHECKS_PER_MONTH * 1
    dynamo_cost = (
        write_units / 1e6 * DYNAMODB_PER_MILLION_WRITE_UNITS
        + read_units / 1e6 * DYNAMODB_PER_MILLION_READ_UNITS
    )
    return {
        "cost_lambda_usd_month": round(lambda_cost, 3),
        "cost_dynamodb_usd_month": round(dynamo_cost, 3),
        "cost_total_usd_month": round(lambda_cost + dynamo_cost, 3),
    }


# CloudWatch prices used for the cost table (us-east-1 list prices).
CW_METRIC_MONTH = 0.30  # a custom metric series a month (first 10,000), prorated by the hour
CW_LOGS_INGEST_GB = 0.50  # PutLogEvents ingestion
CW_LOGS_STORE_GB_MONTH = 0.03  # storage (counted raw: CloudWatch bills it compressed)
CW_INSIGHTS_GB_SCANNED = 0.005
CW_ALARM_METRIC = 0.10  # a standard-resolution alarm, per metric it watches
CW_DASHBOARD = 3.00  # a dashboard a month, beyond the account's first three
LOG_RETENTION_DAYS = 30  # infra/doorman.yaml's log groups
# Lambda's own START, END and REPORT lines of one invocation (not measured here).
LAMBDA_PLATFORM_LOG_BYTES = 350
# The dashboards' Logs Insights widgets scan the check's log group over their time range: a
# person opening the per-target dashboard on 3 hours, 100 times a month, is the case priced.
DASHBOARD_VIEWS_A_MONTH = 100
DASHBOARD_VIEW_HOURS = 3
GB = 1024**3


def _alarm_metrics() -> tuple[int, int]:
    """(alarm metrics of the deployment, alarm metrics per target) in infra/doorman.yaml:
    an alarm on one metric counts 1, a metric-math alarm each metric it reads."""
    from cfnlint.decode import cfn_yaml

    resources = cfn_yaml.load(str(ROOT / "infra" / "doorman.yaml"))["Resources"]

    def metrics_of(resource: Any) -> int:
        props = resource["Properties"]
        if "MetricName" in props:
            return 1
        return sum(1 for m in props.get("Metrics", []) if "MetricStat" in m)

    shared = per_target = 0
    for key, resource in resources.items():
        if key.startswith("Fn::ForEach::"):
            per_target += sum(
                metrics_of(r) for r in resource[2].values() if r["Type"] == "AWS::CloudWatch::Alarm"
            )
        elif resource["Type"] == "AWS::CloudWatch::Alarm":
            shared += metrics_of(resource)
    return shared, per_target


def bench_cloudwatch() -> dict[str, float]:
    """A real check (1 worker, 20 queues holding 500 messages), its lines as the check
    function prints them: the metric series they define and the bytes they log, at the
    defaults and with two queues in ``metric_queues``; and the widgets' Logs Insights scan."""
    import io
    import json

    from chalicelib.dashboard import logs_queries
    from chalicelib.metrics import emit_metrics, series_defined
    from chalicelib.runner import run_check

    server = RedisServer().start()
    worker = Worker("chalicelib.demo_app", server.url, "cost@doorman", pool="solo").start()
    try:
        wait_for_workers(server.url, [worker.name])
        _slow_client(server).eval(FILL_LUA, 0, QUEUES, MESSAGES_PER_QUEUE, TEMPLATE)
        settings, deps = _check_deps(server.url)
        payload = run_check(settings, deps).payload
        _release(settings, deps)
    finally:
        worker.stop()
        server.stop()
    assert payload["metrics"]["total_pending"] == QUEUES * MESSAGES_PER_QUEUE, payload["metrics"]

    def lines(**options: Any) -> tuple[int, int]:
        out = io.StringIO()
        emit_metrics(payload, target="bench", stream=out, **options)
        text = out.getvalue()
        parsed = [json.loads(line) for line in text.splitlines()]
        return len(series_defined(parsed)), len(text.encode("utf-8"))

    series, log_bytes = lines()
    pinned = ["scale-queue-0001", "scale-queue-0002"]
    series_pinned, _bytes = lines(metric_queues=pinned)
    shared_alarms, target_alarms = _alarm_metrics()
    widgets = sum(1 for q in logs_queries() if q.one_target)
    per_check = log_bytes + LAMBDA_PLATFORM_LOG_BYTES
    month_gb = CHECKS_PER_MONTH * per_check / GB
    scanned_gb = DASHBOARD_VIEWS_A_MONTH * widgets * (DASHBOARD_VIEW_HOURS * 60) * per_check / GB
    return {
        "cw_series_default": float(series),
        "cw_series_two_metric_queues": float(series_pinned),
        "cw_log_bytes_per_check": float(log_bytes),
        "cw_logs_gb_month": round(month_gb, 4),
        "cw_alarm_metrics_shared": float(shared_alarms),
        "cw_alarm_metrics_per_target": float(target_alarms),
        "cost_cw_metrics_usd_month": round(series * CW_METRIC_MONTH, 2),
        "cost_cw_logs_usd_month": round(
            month_gb * CW_LOGS_INGEST_GB
            + month_gb * LOG_RETENTION_DAYS / 30 * CW_LOGS_STORE_GB_MONTH,
            3,
        ),
        "cost_cw_insights_usd_month": round(scanned_gb * CW_INSIGHTS_GB_SCANNED, 4),
        "cost_cw_alarms_shared_usd_month": round(shared_alarms * CW_ALARM_METRIC, 2),
        "cost_cw_alarms_target_usd_month": round(target_alarms * CW_ALARM_METRIC, 2),
    }


def cost_table(figures: dict[str, float]) -> list[tuple[str, str]]:
    """The monthly bill of one cluster checked every minute, item by item, and the totals
    for one cluster alone and per cluster in fleets of 10 and 50 (the shared alarms split)."""
    per_target = (
        figures["cost_lambda_usd_month"]
        + figures["cost_dynamodb_usd_month"]
        + figures["cost_cw_metrics_usd_month"]
        + figures["cost_cw_logs_usd_month"]
        + figures["cost_cw_insights_usd_month"]
        + figures["cost_cw_alarms_target_usd_month"]
    )
    shared = figures["cost_cw_alarms_shared_usd_month"]
    figures["cost_cluster_usd_month"] = round(per_target + shared, 2)
    figures["cost_fleet10_per_cluster_usd_month"] = round(per_target + shared / 10, 2)
    figures["cost_fleet50_per_cluster_usd_month"] = round(per_target + shared / 50, 2)
    series = int(figures["cw_series_default"])
    return [
        ("Lambda, check at 256 MB", f"${figures['cost_lambda_usd_month']:.3f}"),
        ("DynamoDB on demand", f"${figures['cost_dynamodb_usd_month']:.3f}"),
        (f"custom metrics: {series} series", f"${figures['cost_cw_metrics_usd_month']:.2f}"),
        (
            f"  + metric_queues: 2 queues -> {int(figures['cw_series_two_metric_queues'])} series",
            f"+${(figures['cw_series_two_metric_queues'] - series) * CW_METRIC_MONTH:.2f}",
        ),
        (
            f"log bytes per check (+{LAMBDA_PLATFORM_LOG_BYTES} Lambda)",
            f"{figures['cw_log_bytes_per_check']:.0f} B",
        ),
        (
            f"Logs: {figures['cw_logs_gb_month']:.3f} GB in, kept {LOG_RETENTION_DAYS} d",
            f"${figures['cost_cw_logs_usd_month']:.3f}",
        ),
        (
            f"Logs Insights: {DASHBOARD_VIEWS_A_MONTH} views of {DASHBOARD_VIEW_HOURS} h",
            f"${figures['cost_cw_insights_usd_month']:.4f}",
        ),
        (
            f"watchdog alarm: {int(figures['cw_alarm_metrics_per_target'])} metric",
            f"${figures['cost_cw_alarms_target_usd_month']:.2f}",
        ),
        (
            f"shared alarms: {int(figures['cw_alarm_metrics_shared'])} metrics",
            f"${figures['cost_cw_alarms_shared_usd_month']:.2f}",
        ),
        ("dashboards: 2 (3 free per account)", f"$0-{2 * CW_DASHBOARD:.2f}"),
        ("total, one cluster", f"${figures['cost_cluster_usd_month']:.2f}"),
        ("total per cluster, fleet of 10", f"${figures['cost_fleet10_per_cluster_usd_month']:.2f}"),
        ("total per cluster, fleet of 50", f"${figures['cost_fleet50_per_cluster_usd_month']:.2f}"),
    ]


FLEET_SIZES = (1, 10, 50)
FLEET_WORKERS = 2  # targets that have real workers (the first ones)
FLEET_QUEUES, FLEET_MESSAGES = 5, 10
FLEET_SCRIPT = (
    PEAK_RSS_FUNCTION
    + """
import json, os, sys, tempfile, time
from chalicelib.serverless import build_slots, run_targets
from chalicelib.settings import load_targets
from chalicelib.state.sqlite import SqliteStore
spec = json.loads(sys.argv[1])
d = tempfile.mkdtemp()
env = {"DOORMAN_TARGETS": json.dumps(spec["targets"]), "DOORMAN_HASH_SECRET": "bench",
       "DOORMAN_STATE": os.path.join(d, "unused.db")}
targets = load_targets(environ=env)
slots = build_slots(targets, "bench", lambda s: SqliteStore(os.path.join(d, s.target + ".db")))
runs = []
for _ in range(2):  # a cold invocation (first discovery), then a warm one
    started, cpu = time.perf_counter(), time.process_time()
    outcomes = run_targets(slots, spec["budget"])
    runs.append({"seconds": time.perf_counter() - started, "cpu": time.process_time() - cpu,
                 "targets": {o.target: [o.status, o.seconds,
                             (o.result.payload["metrics"] if o.result else {})]
                             for o in outcomes}})
for slot in slots.values():
    if slot.running is not None:
        slot.running.result(timeout=60)
    slot.close()
print(json.dumps({"runs": runs,
                  "rss_mb": peak_rss_mb()}))
"""
)
FLEET_BUDGET = 25.0  # check_budget_seconds' default


def bench_fleet() -> dict[str, float]:
    """DOORMAN_TARGETS with 1, 10 and 50 targets in one invocation (run_targets, as the
    check function runs them), each on its own redis-server, the first ones with a real
    worker; at 10 and 50, one target accepts connections and never answers and one has its
    port closed. Each size runs in a fresh process: the time of a cold and of a warm
    invocation, the slowest healthy target's check, and the peak RSS."""
    import json
    import socket

    from chalicelib.embedded import free_port

    largest = max(FLEET_SIZES)
    servers: list[RedisServer] = []
    workers: list[Worker] = []
    silent = socket.socket()
    figures: dict[str, float] = {}
    try:
        silent.bind(("127.0.0.1", 0))
        silent.listen(128)
        silent_port = silent.getsockname()[1]
        closed_port = free_port()
        for _i in range(largest):
            server = RedisServer().start()
            servers.append(server)
            _slow_client(server).eval(FILL_LUA, 0, FLEET_QUEUES, FLEET_MESSAGES, TEMPLATE)
        names = [f"fleet-{i}@doorman" for i in range(FLEET_WORKERS)]
        for i, name in enumerate(names):
            workers.append(Worker("chalicelib.demo_app", servers[i].url, name, pool="solo").start())
        for i, name in enumerate(names):
            wait_for_workers(servers[i].url, [name], timeout=60)
        for size in FLEET_SIZES:
            healthy = size if size == 1 else size - 2
            targets = [{"name": f"t{i:02d}", "redis_url": servers[i].url} for i in range(healthy)]
            if size > 1:
                targets.append({"name": "hangs", "redis_url": f"redis://127.0.0.1:{silent_port}/0"})
                targets.append(
                    {"name": "closed", "redis_url": f"redis://127.0.0.1:{closed_port}/0"}
                )
            spec = {"targets": targets, "budget": FLEET_BUDGET}
            out = subprocess.run(
                [sys.executable, "-c", FLEET_SCRIPT, json.dumps(spec)],
                capture_output=True,
                text=True,
                cwd=ROOT,
                check=True,
                timeout=300,
            )
            result = json.loads(out.stdout.strip().splitlines()[-1])
            for label, run in zip(("cold", "warm"), result["runs"], strict=True):
                statuses = run["targets"]
                ok = [v for k, v in statuses.items() if k.startswith("t")]
                assert all(s == "ok" and m.get("redis_connected") for s, _t, m in ok), statuses
                assert sum(m.get("total_pending", 0) for _s, _t, m in ok) == (
                    healthy * FLEET_QUEUES * FLEET_MESSAGES
                )
                # Workers that answered within worker_timeout_seconds (1 s), out of
                # min(FLEET_WORKERS, healthy): on 2 cores a cold 50-target invocation can
                # leave a solo worker's reply late.
                figures[f"fleet_{size}_{label}_alive_workers"] = float(
                    sum(m.get("alive_workers", 0) for _s, _t, m in ok)
                )
                figures[f"fleet_{size}_{label}_s"] = round(run["seconds"], 2)
                # CPU seconds of the invocation (threads that overran their budget go on
                # in the background and are not counted).
                figures[f"fleet_{size}_{label}_cpu_s"] = round(run["cpu"], 2)
                figures[f"fleet_{size}_{label}_slowest_healthy_s"] = round(
                    max(t for _s, t, _m in ok), 2
                )
                if size > 1:
                    hangs, closed = statuses["hangs"], statuses["closed"]
                    assert hangs[2].get("redis_connected") is False, hangs
                    assert closed[2].get("redis_connected") is False, closed
                    figures[f"fleet_{size}_{label}_hangs_s"] = round(hangs[1], 2)
                    figures[f"fleet_{size}_{label}_closed_s"] = round(closed[1], 2)
                assert run["seconds"] < FLEET_BUDGET, run["seconds"]
            figures[f"fleet_{size}_peak_rss_mb"] = round(result["rss_mb"], 1)
    finally:
        silent.close()
        for worker in workers:
            worker.stop()
        for server in servers:
            server.stop()
    return figures


LAMBDA_VCPU_AT_256_MB = 256 / 1769  # Lambda gives one vCPU at 1,769 MB, in proportion below


def fleet_rows(figures: dict[str, float]) -> list[tuple[str, str]]:
    """The fleet figures as table rows; the Lambda time is the measured CPU time over the
    share of a vCPU a 256 MB function gets (an estimate, the one figure not measured)."""
    rows: list[tuple[str, str]] = []
    for size in FLEET_SIZES:
        for label in ("cold", "warm"):
            key = f"fleet_{size}_{label}"
            rows.append((f"{size} targets, {label}: invocation", f"{figures[key + '_s']:.2f} s"))
            rows.append(
                ("  slowest healthy target", f"{figures[key + '_slowest_healthy_s']:.2f} s")
            )
            if size > 1:
                rows.append(
                    (
                        "  hanging / closed-port target",
                        f"{figures[key + '_hangs_s']:.2f} / {figures[key + '_closed_s']:.2f} s",
                    )
                )
            lambda_s = figures[key + "_cpu_s"] / LAMBDA_VCPU_AT_256_MB
            figures[key + "_lambda_256mb_est_s"] = round(lambda_s, 1)
            rows.append(
                (
                    "  CPU; est. at 256 MB (0.145 vCPU)",
                    f"{figures[key + '_cpu_s']:.2f}; {lambda_s:.1f} s",
                )
            )
        rows.append((f"{size} targets: peak RSS", f"{figures[f'fleet_{size}_peak_rss_mb']:.1f} MB"))
    rows.append(("budget per target (check_budget_seconds)", f"{FLEET_BUDGET:.0f} s"))
    return rows


def bench_import() -> dict[str, float]:
    """Time to import the Lambda module ``app`` in a fresh interpreter (median of 5)."""
    code = "import time; t=time.perf_counter(); import app; print((time.perf_counter()-t)*1000)"
    times = []
    for _ in range(5):
        out = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True
        )
        times.append(float(out.stdout.strip()))
    return {"import_app_ms": round(statistics.median(times), 1)}


def _budget_verdict(figures: dict[str, float]) -> str:
    keys = ("budget_1k_longest_ms", "budget_10k_longest_ms", "budget_1m_members_longest_ms")
    return "met" if all(figures[k] <= BUDGET_MS for k in keys) else "MISSED"


def main() -> int:
    figures: dict[str, float] = {}
    figures.update(bench_redis_budget())
    figures.update(bench_scrub())
    figures.update(bench_healthy())
    figures.update(bench_scale_queues())
    figures.update(bench_scale_workers())
    figures.update(bench_import())
    figures.update(bench_memory())
    figures.update(cost(figures["healthy_check_ms"]))
    figures.update(bench_cloudwatch())
    figures.update(bench_fleet())
    figures.update(companion_figures(COMPANION_TASKS, COMPANION_RACES, pairs=COMPANION_PAIRS))
    figures.update(bench_healthy_companion())
    print(f"{'benchmark':<40}{'value':>14}")
    rows = [
        ("healthy check, 2 workers, 20 queues", f"{figures['healthy_check_ms']:.1f} ms"),
        ("baseline inspect(1.0)+LLEN", f"{figures['healthy_baseline_ms']:.1f} ms"),
        ("healthy speedup", f"{figures['healthy_speedup']:.1f}x"),
        ("1,000 queues / 1,000 messages", f"{figures['scale_1k_check_ms']:.1f} ms"),
        ("1,000 queues / 1,000,000 messages", f"{figures['scale_1m_check_ms']:.1f} ms"),
        ("ratio 1M / 1K messages", f"{figures['scale_1m_vs_1k_ratio']:.2f}"),
        ("2 solo workers", f"{figures['workers_2_check_ms']:.1f} ms"),
        ("4 solo workers", f"{figures['workers_4_check_ms']:.1f} ms"),
        ("8 solo workers", f"{figures['workers_8_check_ms']:.1f} ms"),
        ("ratio 8 / 2 workers", f"{figures['workers_8_vs_2_ratio']:.2f}"),
        ("sanitize a 1 MB name (slowest shape)", f"{figures['scrub_1mb_name_ms']:.1f} ms"),
        ("scrub 1 MB of text (slowest shape)", f"{figures['scrub_1mb_text_ms']:.0f} ms"),
        ("baseline: one regex pass over 1 MB", f"{figures['scrub_1mb_one_pass_ms']:.1f} ms"),
        ("longest Redis command, 1,000 queues", f"{figures['budget_1k_longest_ms']:.2f} ms"),
        ("longest Redis command, 10,000 queues", f"{figures['budget_10k_longest_ms']:.2f} ms"),
        ("check of 10,000 queues", f"{figures['budget_10k_check_ms']:.0f} ms"),
        (
            "longest command, 1M-member binding set",
            f"{figures['budget_1m_members_longest_ms']:.2f} ms",
        ),
        ("baseline: SMEMBERS of that set", f"{figures['budget_1m_members_baseline_ms']:.1f} ms"),
        ("worst PING meanwhile", f"{figures['budget_1m_members_worst_ping_ms']:.1f} ms"),
        (f"budget per command (all {BUDGET_MS:.0f} ms or less)", _budget_verdict(figures)),
        ("import app (fresh interpreter)", f"{figures['import_app_ms']:.1f} ms"),
        ("peak RSS of a check", f"{figures['check_peak_rss_mb']:.1f} MB"),
        ("Lambda, 256 MB, 1/min", f"${figures['cost_lambda_usd_month']:.3f}/month"),
        ("DynamoDB on demand", f"${figures['cost_dynamodb_usd_month']:.3f}/month"),
    ]
    for name, value in rows:
        print(f"{name:<40}{value:>14}")
    print(
        f"prices: Lambda ${LAMBDA_GB_SECOND}/GB-s + ${LAMBDA_PER_MILLION_REQUESTS}/M requests;"
        f" DynamoDB ${DYNAMODB_PER_MILLION_WRITE_UNITS}/M WRU, ${DYNAMODB_PER_MILLION_READ_UNITS}/M"
        f" RRU; {CHECKS_PER_MONTH} checks a month"
    )
    print()
    print(f"{'cost of one cluster checked every minute':<48}{'per month':>14}")
    for name, value in cost_table(figures):
        print(f"{name:<48}{value:>14}")
    print(
        f"prices: custom metric ${CW_METRIC_MONTH}/series-month; logs ${CW_LOGS_INGEST_GB}/GB"
        f" ingested, ${CW_LOGS_STORE_GB_MONTH}/GB-month stored; Logs Insights"
        f" ${CW_INSIGHTS_GB_SCANNED}/GB scanned; alarm ${CW_ALARM_METRIC}/metric;"
        f" dashboard ${CW_DASHBOARD}/month beyond 3; the dispatcher's and notifiers' counts are"
        " sent only when not 0 (hours with alerts: ~$0)"
    )
    print()
    print(f"{'fleet: targets in one invocation':<48}{'value':>14}")
    for name, value in fleet_rows(figures):
        print(f"{name:<48}{value:>14}")
    print()
    print(
        f"{'companion: its cost to a worker, the check':<48}{'value':>14}\n"
        f"(2 workers racing on one core, {COMPANION_TASKS} tasks each a race,"
        f" {COMPANION_RACES} races x {COMPANION_PAIRS} fresh worker pairs; medians)"
    )
    for name, value in companion_section(figures):
        print(f"{name:<48}{value:>14}")
    print(" ".join(f"{k}={v}" for k, v in figures.items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
