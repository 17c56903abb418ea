"""Doorman benchmarks: every figure is measured beside its baseline in the same run.

Prints one table and a last line of ``key=value`` figures. Run with ``make bench``.
"""

from __future__ import annotations

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
        deps.collector.close()

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


def _check_deps(url: str, **overrides: object) -> tuple[Any, Any]:
    """Settings and dependencies for checks of ``url``, after one warm-up check."""
    from chalicelib.cli import make_deps
    from chalicelib.runner import run_check
    from chalicelib.settings import load_settings

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
    deps = make_deps(settings)
    run_check(settings, deps)  # the first check learns the roster and the worker detail
    return settings, deps


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
            filled = server.client().eval(FILL_LUA, 0, 1000, per_queue, TEMPLATE)
            figures[f"scale_{label}_messages"] = float(filled)
            checks[label] = _check_deps(server.url)
        for label, median in _take_turns(checks, SCALE_ROUNDS, verify).items():
            figures[f"scale_{label}_check_ms"] = median
    finally:
        for _settings, deps in checks.values():
            deps.collector.close()
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
            server.client().eval(FILL_LUA, 0, count, 3, TEMPLATE)
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
            deps.collector.close()
        finally:
            server.stop()
    server = RedisServer().start()
    try:
        client = server.client()
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
        deps.collector.close()
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
        for _settings, deps in checks.values():
            deps.collector.close()
        for worker in workers:
            worker.stop()
        for server in servers:
            server.stop()
    figures["workers_8_vs_2_ratio"] = round(
        figures["workers_8_check_ms"] / figures["workers_2_check_ms"], 2
    )
    return figures


PEAK_RSS_SCRIPT = """
import resource, sys, tempfile, os
from chalicelib.cli import make_deps
from chalicelib.runner import run_check
from chalicelib.settings import load_settings
d = tempfile.mkdtemp()
s = load_settings(environ={}, overrides={"redis_url": sys.argv[1],
    "state_path": os.path.join(d, "s.db"), "hash_secret": "bench"})
deps = make_deps(s)
run_check(s, deps)
run_check(s, deps)
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0)
"""


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
    figures.update(bench_healthy())
    figures.update(bench_scale_queues())
    figures.update(bench_scale_workers())
    figures.update(bench_import())
    figures.update(bench_memory())
    figures.update(cost(figures["healthy_check_ms"]))
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
    print(" ".join(f"{k}={v}" for k, v in figures.items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
