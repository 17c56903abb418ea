"""The worker companion's cost: no-op task throughput of one worker with and without it.

Both workers run tests/support/companion_app.py (``COMPANION=0`` leaves the companion out)
with Celery's defaults (early acks, prefetch 4) on the same redis-server, in alternating
rounds; every message carries the ``x_published_at`` header in both, so the only difference
is the worker side. A round preloads the tasks into a queue the worker does not consume yet,
then tells it to consume that queue and times it until the queue is drained and nothing is
left unacknowledged. Two figures per worker: throughput (tasks/s, wall clock) and the worker
process's CPU time per task (from /proc, so other load on the machine moves it much less).
On a busy or small machine those two move by several per cent between identical workers
(``--same`` shows it), so a third figure isolates the companion: the main-process CPU time
per task of Celery's own Request and solo pool driven in this process (a real task, a real
message, the trace included; no broker), with and without the companion's Request class.
Prints the medians and the ratios, then a ``key=value`` line.

    .venv/bin/python bench/companion.py [--tasks 5000] [--rounds 3] [--pool solo]
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


def bench_companion(
    tasks: int = 5000, rounds: int = 5, pool: str = "solo", same: bool = False
) -> dict[str, float]:
    """Median tasks/s and CPU µs per task without and with the companion, and the ratios."""
    server = RedisServer().start()
    workers: dict[str, Worker] = {}
    app = Celery("companion-bench", broker=server.url, set_as_current=False)
    app.conf.broker_connection_retry_on_startup = True
    doorman_celery.install(app)  # the header on every message, for both workers
    try:
        # same=True: the companion in neither worker, to see what the noise alone gives.
        for label, flag in (("without", "0"), ("with", "0" if same else "1")):
            name = f"bench-{label}@companion"
            workers[label] = Worker(
                APP, server.url, name, pool=pool, concurrency=1,
                queues=(f"idle-{label}",), env={**ENV, "COMPANION": flag}, cwd=str(ROOT),
            ).start()  # fmt: skip
        wait_for_workers(server.url, [f"bench-{label}@companion" for label in workers])
        client = server.client()
        pids = {label: w.proc.pid for label, w in workers.items() if w.proc is not None}
        rates: dict[str, list[float]] = {"without": [], "with": []}
        cpu_us: dict[str, list[float]] = {"without": [], "with": []}
        # A warm-up round each, not counted, then alternate so drift hits both alike.
        for label in workers:
            _drain(app, client, f"bench-{label}@companion", pids[label], f"warm-{label}", 500)
        for i in range(rounds):
            order = ("without", "with") if i % 2 == 0 else ("with", "without")
            for label in order:
                queue = f"bench-{label}-{i}"
                wall, cpu = _drain(
                    app, client, f"bench-{label}@companion", pids[label], queue, tasks
                )
                rates[label].append(tasks / wall)
                cpu_us[label].append(cpu / tasks * 1e6)
        reply = app.control.broadcast(
            doorman_celery.COMMAND, reply=True, destination=["bench-with@companion"], timeout=2
        )
        if not same:
            counted = reply[0]["bench-with@companion"]["tasks"]["comp.noop"]["succeeded"]
            assert counted == 500 + rounds * tasks, counted
        without = statistics.median(rates["without"])
        with_ = statistics.median(rates["with"])
        cpu_without = statistics.median(cpu_us["without"])
        cpu_with = statistics.median(cpu_us["with"])
        return {
            "companion_noop_tasks_per_s_without": round(without, 1),
            "companion_noop_tasks_per_s_with": round(with_, 1),
            "companion_throughput_ratio": round(with_ / without, 3),
            "companion_cpu_us_per_task_without": round(cpu_without, 1),
            "companion_cpu_us_per_task_with": round(cpu_with, 1),
            "companion_cpu_ratio": round(cpu_with / cpu_without, 3),
        }
    finally:
        before_task_publish.disconnect(dispatch_uid="doorman-publish-time")
        app.close()
        for worker in workers.values():
            worker.stop()
        server.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tasks", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--pool", default="solo", choices=("solo", "threads", "prefork"))
    parser.add_argument(
        "--same", action="store_true", help="no companion in either worker (noise check)"
    )
    args = parser.parse_args(argv)
    figures = bench_companion(args.tasks, args.rounds, args.pool, args.same)
    figures.update(bench_hooks())
    added = figures["companion_hook_added_us_per_task"]
    figures["companion_added_cpu_pct"] = round(
        added / figures["companion_cpu_us_per_task_without"] * 100.0, 2
    )
    print(f"no-op tasks, 1 {args.pool} worker, {args.tasks} tasks x {args.rounds} rounds (median)")
    print(f"{'without the companion':<32}{figures['companion_noop_tasks_per_s_without']:>10.1f} /s")
    print(f"{'with the companion':<32}{figures['companion_noop_tasks_per_s_with']:>10.1f} /s")
    print(f"{'ratio with / without':<32}{figures['companion_throughput_ratio']:>10.3f}")
    cpu_without = figures["companion_cpu_us_per_task_without"]
    print(f"{'worker CPU per task, without':<32}{cpu_without:>10.1f} µs")
    print(f"{'worker CPU per task, with':<32}{figures['companion_cpu_us_per_task_with']:>10.1f} µs")
    print(f"{'ratio with / without':<32}{figures['companion_cpu_ratio']:>10.3f}")
    print(
        f"{'Request + solo pool, no broker':<32}"
        f"{figures['companion_hook_us_per_task_without']:>10.1f} µs/task"
    )
    print(
        f"{'  with the companion':<32}{figures['companion_hook_us_per_task_with']:>10.1f} µs/task"
    )
    print(f"{'  added by the companion':<32}{added:>10.2f} µs/task")
    print(
        f"{'added / worker CPU per task':<32}{figures['companion_added_cpu_pct']:>10.2f} %"
        "  (target: under 5 %)"
    )
    print(" ".join(f"{k}={v}" for k, v in figures.items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
