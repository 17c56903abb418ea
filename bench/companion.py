"""The worker companion's cost: no-op task throughput of one worker with and without it.

Both workers run tests/support/companion_app.py (``COMPANION=0`` leaves the companion out)
with Celery's defaults (early acks, prefetch 4) and one hash seed, on the same redis-server;
every message carries the ``x_published_at`` header for both, so the only difference is the
worker side. The two race: each gets its own queue of preloaded tasks, both are told to
consume it, and one window is timed, from the moment both are consuming to the moment the
first has drained its queue; each worker's figures are the tasks it ran in that window
(tasks/s) and its process's CPU time per task (from /proc). Both workers are pinned to one
CPU (Redis and this process to the others), so they share a core at the same moment and
whatever else the machine does falls on both alike; who is told first alternates; several
races, then a fresh pair of workers (a process's own luck goes with it) for as many again.
Each race gives one ratio with / without; the figure is their median, the spread their least
and greatest. ``--same`` runs the companion in neither worker: the noise alone.

A third figure isolates the companion: the main-process CPU time per task of Celery's own
Request and solo pool driven in this process (a real task, a real message, the trace
included; no broker), with and without the companion's Request class.

Prints the figures, then a ``key=value`` line; ``make bench`` prints them in its
"companion" section.

    .venv/bin/python bench/companion.py [--tasks 2000] [--rounds 6] [--pairs 2] [--pool solo]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from celery import Celery  # noqa: E402
from celery.signals import before_task_publish  # noqa: E402

import doorman_celery  # noqa: E402
from chalicelib.embedded import RedisServer, Worker, wait_for_workers  # noqa: E402

APP = "tests.support.companion_app"
ENV = {"COMPANION_ACKS_LATE": "0", "COMPANION_PREFETCH": "4"}


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time of process ``pid`` so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _drain(
    app: Celery, client: Any, worker: str, pid: int, queue: str, tasks: int
) -> tuple[float, float]:
    """Preload ``tasks`` no-op tasks into ``queue``, then time ``worker`` consuming them:
    (wall seconds, worker CPU seconds)."""
    with app.producer_or_acquire() as producer:
        for _ in range(tasks):
            app.send_task("comp.noop", queue=queue, producer=producer, task_id=str(uuid.uuid4()))
    assert client.llen(queue) == tasks
    cpu = _cpu_seconds(pid)
    started = time.perf_counter()
    app.control.add_consumer(queue, destination=[worker], reply=True, timeout=5)
    while client.llen(queue) or client.hlen("unacked"):
        time.sleep(0.005)
    elapsed = time.perf_counter() - started
    cpu = _cpu_seconds(pid) - cpu
    app.control.cancel_consumer(queue, destination=[worker], reply=True, timeout=5)
    return elapsed, cpu


def _pin(server: RedisServer, pids: dict[str, int]) -> None:
    """Both workers on the last CPU, Redis and this process on the others: the two workers
    then share one core, and whatever else runs there slows both alike."""
    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    if len(cpus) < 2:
        return
    for pid in pids.values():
        os.sched_setaffinity(pid, {cpus[-1]})
    if server.proc is not None:
        os.sched_setaffinity(server.proc.pid, set(cpus[:-1]))
    os.sched_setaffinity(0, set(cpus[:-1]))


def _race(
    app: Celery, client: Any, names: dict[str, str], pids: dict[str, int], i: int, tasks: int
) -> dict[str, tuple[float, float]]:
    """Preload ``tasks`` no-op tasks for each worker and start both: per worker (tasks/s, CPU
    µs per task) over one window, from the moment both are consuming to the moment the first
    has drained its queue, so whatever else the machine does meanwhile falls on both alike."""
    labels = list(names) if i % 2 == 0 else list(reversed(names))  # who is told first
    queues = {label: f"race-{label}-{i}" for label in labels}
    with app.producer_or_acquire() as producer:
        for label in labels:
            for _ in range(tasks):
                app.send_task(
                    "comp.noop", queue=queues[label], producer=producer, task_id=str(uuid.uuid4())
                )
    for label in labels:
        app.control.add_consumer(queues[label], destination=[names[label]], reply=False)

    def lengths() -> dict[str, int]:
        return {label: client.llen(queues[label]) for label in labels}

    def cpu() -> dict[str, float]:
        return {label: _cpu_seconds(pids[label]) for label in labels}

    while max(lengths().values()) >= tasks:  # until both have begun
        time.sleep(0.001)
    before, cpu_before, started = lengths(), cpu(), time.perf_counter()
    while min(lengths().values()) > 0:
        time.sleep(0.002)
    elapsed, after, cpu_after = time.perf_counter() - started, lengths(), cpu()
    result = {}
    for label in labels:
        done = before[label] - after[label]
        result[label] = (done / elapsed, (cpu_after[label] - cpu_before[label]) / done * 1e6)
    while any(lengths().values()) or client.hlen("unacked"):
        time.sleep(0.005)
    for label in labels:
        app.control.cancel_consumer(queues[label], destination=[names[label]], reply=True)
    return result


def bench_hooks(tasks: int = 20000, rounds: int = 7) -> dict[str, float]:
    """Main-process CPU µs per task of Celery's Request + solo pool, without and with the
    companion's Request class (medians of alternating rounds)."""
    from celery.concurrency.solo import TaskPool
    from celery.worker.request import Request, create_request_cls
    from kombu import Message

    from doorman_celery._worker import companion_request

    app = Celery("companion-hooks", set_as_current=False)

    @app.task(name="hooks.noop", ignore_result=True)  # type: ignore[untyped-decorator]
    def noop() -> None:
        return None

    app.finalize()
    from celery.app.trace import build_tracer

    noop.__trace__ = build_tracer(noop.name, noop, app.loader, "bench", app=app)
    pool = TaskPool()
    pool.start()

    def messages(n: int) -> list[Any]:
        out = []
        for _ in range(n):
            sig = app.amqp.as_task_v2(str(uuid.uuid4()), noop.name, (), {})
            headers = {**sig.headers, doorman_celery.HEADER: time.time()}
            out.append(
                Message(
                    body=sig.body,
                    headers=headers,
                    delivery_info={"exchange": "", "routing_key": "celery"},
                    properties=sig.properties,
                )
            )
        return out

    def per_task_us(base: type) -> float:
        request_cls = create_request_cls(base, noop, pool, "bench", None, app=app)
        batch = messages(tasks)
        started = time.process_time()
        for message in batch:
            request = request_cls(
                message, app=app, task=noop, body=message.body, headers=message.headers,
                decoded=True,
            )  # fmt: skip
            request.execute_using_pool(pool)
        return (time.process_time() - started) / tasks * 1e6

    plain: list[float] = []
    with_: list[float] = []
    companion = companion_request(Request)
    for _ in range(rounds):
        plain.append(per_task_us(Request))
        with_.append(per_task_us(companion))
    base, more = statistics.median(plain), statistics.median(with_)
    return {
        "companion_hook_us_per_task_without": round(base, 2),
        "companion_hook_us_per_task_with": round(more, 2),
        "companion_hook_added_us_per_task": round(more - base, 2),
    }


def _spread(values: list[float]) -> tuple[float, float, float]:
    return statistics.median(values), min(values), max(values)


def bench_companion(
    tasks: int = 2000, rounds: int = 6, pool: str = "solo", same: bool = False, pairs: int = 2
) -> dict[str, float]:
    """Median tasks/s and CPU µs per task without and with the companion, and the median
    and spread of the per-race ratios: ``rounds`` races in each of ``pairs`` fresh pairs of
    workers."""
    rates: dict[str, list[float]] = {"without": [], "with": []}
    cpu_us: dict[str, list[float]] = {"without": [], "with": []}
    rate_ratios: list[float] = []
    cpu_ratios: list[float] = []
    for pair in range(pairs):
        run = _bench_pair(tasks, rounds, pool, same, pair)
        for label in ("without", "with"):
            rates[label].extend(run["rates"][label])
            cpu_us[label].extend(run["cpu_us"][label])
        for i in range(rounds):
            rate_ratios.append(run["rates"]["with"][i] / run["rates"]["without"][i])
            cpu_ratios.append(run["cpu_us"]["with"][i] / run["cpu_us"]["without"][i])
    ratio, ratio_min, ratio_max = _spread(rate_ratios)
    cpu_ratio, cpu_min, cpu_max = _spread(cpu_ratios)
    return {
        "companion_noop_tasks_per_s_without": round(statistics.median(rates["without"]), 1),
        "companion_noop_tasks_per_s_with": round(statistics.median(rates["with"]), 1),
        "companion_throughput_ratio": round(ratio, 3),
        "companion_throughput_ratio_min": round(ratio_min, 3),
        "companion_throughput_ratio_max": round(ratio_max, 3),
        "companion_cpu_us_per_task_without": round(statistics.median(cpu_us["without"]), 1),
        "companion_cpu_us_per_task_with": round(statistics.median(cpu_us["with"]), 1),
        "companion_cpu_ratio": round(cpu_ratio, 3),
        "companion_cpu_ratio_min": round(cpu_min, 3),
        "companion_cpu_ratio_max": round(cpu_max, 3),
        "companion_races": float(len(rate_ratios)),
    }


def _bench_pair(tasks: int, rounds: int, pool: str, same: bool, pair: int) -> dict[str, Any]:
    """One pair of workers on a redis-server of its own, ``rounds`` races."""
    server = RedisServer().start()
    workers: dict[str, Worker] = {}
    app = Celery("companion-bench", broker=server.url, set_as_current=False)
    app.conf.broker_connection_retry_on_startup = True
    doorman_celery.install(app)  # the header on every message, for both workers
    names = {label: f"bench-{label}-{pair}@companion" for label in ("without", "with")}
    try:
        # same=True: the companion in neither worker, to see what the noise alone gives.
        # One hash seed for both: dictionaries are laid out alike in the two processes.
        for label, flag in (("without", "0"), ("with", "0" if same else "1")):
            env = {**ENV, "COMPANION": flag, "PYTHONHASHSEED": "0"}
            workers[label] = Worker(
                APP, server.url, names[label], pool=pool, concurrency=1,
                queues=(f"idle-{label}",), env=env, cwd=str(ROOT),
            ).start()  # fmt: skip
        wait_for_workers(server.url, list(names.values()))
        client = server.client()
        pids = {label: w.proc.pid for label, w in workers.items() if w.proc is not None}
        _pin(server, pids)
        rates: dict[str, list[float]] = {"without": [], "with": []}
        cpu_us: dict[str, list[float]] = {"without": [], "with": []}
        # A warm-up drain each, not counted; then races.
        for label in workers:
            _drain(app, client, names[label], pids[label], f"warm-{label}", 500)
        for i in range(rounds):
            for label, (rate, cpu) in _race(app, client, names, pids, i, tasks).items():
                rates[label].append(rate)
                cpu_us[label].append(cpu)
        if not same:  # the companion counted every task of the races
            reply = app.control.broadcast(
                doorman_celery.COMMAND, reply=True, destination=[names["with"]], timeout=2
            )
            counted = reply[0][names["with"]]["tasks"]["comp.noop"]["succeeded"]
            assert counted == 500 + rounds * tasks, counted
        return {"rates": rates, "cpu_us": cpu_us}
    finally:
        if hasattr(os, "sched_setaffinity"):
            os.sched_setaffinity(0, range(os.cpu_count() or 1))
        before_task_publish.disconnect(dispatch_uid=doorman_celery.PUBLISH_UID)
        app.close()
        for worker in workers.values():
            worker.stop()
        server.stop()


def figures_of(
    tasks: int = 2000, rounds: int = 6, pool: str = "solo", same: bool = False, pairs: int = 2
) -> dict[str, float]:
    """Every figure: end to end, the isolated hooks, and the hooks' share of a task's CPU."""
    figures = bench_companion(tasks, rounds, pool, same, pairs)
    figures.update(bench_hooks())
    added = figures["companion_hook_added_us_per_task"]
    figures["companion_added_cpu_pct"] = round(
        added / figures["companion_cpu_us_per_task_without"] * 100.0, 2
    )
    return figures


def rows(figures: dict[str, float]) -> list[tuple[str, str]]:
    """The figures as (label, value) table rows."""
    f = figures
    slower = (1.0 - f["companion_throughput_ratio"]) * 100.0
    return [
        ("no-op tasks/s, without the companion", f"{f['companion_noop_tasks_per_s_without']:.1f}"),
        ("no-op tasks/s, with the companion", f"{f['companion_noop_tasks_per_s_with']:.1f}"),
        ("ratio with / without (median)", f"{f['companion_throughput_ratio']:.3f}"),
        (
            f"  spread over {int(f['companion_races'])} races",
            f"{f['companion_throughput_ratio_min']:.3f}-{f['companion_throughput_ratio_max']:.3f}",
        ),
        ("  slower with the companion (target < 5 %)", f"{slower:.1f} %"),
        ("worker CPU per task, without", f"{f['companion_cpu_us_per_task_without']:.1f} µs"),
        ("worker CPU per task, with", f"{f['companion_cpu_us_per_task_with']:.1f} µs"),
        ("CPU ratio with / without (median)", f"{f['companion_cpu_ratio']:.3f}"),
        (
            "  spread",
            f"{f['companion_cpu_ratio_min']:.3f}-{f['companion_cpu_ratio_max']:.3f}",
        ),
        ("Request + solo pool, no broker", f"{f['companion_hook_us_per_task_without']:.1f} µs"),
        ("  with the companion's hooks", f"{f['companion_hook_us_per_task_with']:.1f} µs"),
        ("  added per task by the hooks", f"{f['companion_hook_added_us_per_task']:.2f} µs"),
        ("  added / worker CPU per task", f"{f['companion_added_cpu_pct']:.2f} %"),
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tasks", type=int, default=2000, help="tasks per worker a race")
    parser.add_argument("--rounds", type=int, default=6, help="races per pair of workers")
    parser.add_argument("--pairs", type=int, default=2)
    parser.add_argument("--pool", default="solo", choices=("solo", "threads", "prefork"))
    parser.add_argument(
        "--same", action="store_true", help="no companion in either worker (noise check)"
    )
    args = parser.parse_args(argv)
    figures = figures_of(args.tasks, args.rounds, args.pool, args.same, args.pairs)
    print(
        f"no-op tasks, 1 {args.pool} worker each, {args.tasks} tasks a race,"
        f" {args.rounds} races x {args.pairs} worker pairs (medians)"
    )
    for name, value in rows(figures):
        print(f"{name:<44}{value:>14}")
    print(" ".join(f"{k}={v}" for k, v in figures.items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
