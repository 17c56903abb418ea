"""Doorman benchmarks: every figure is measured beside its baseline in the same run.

Prints one table and a last line of ``key=value`` figures. Run with ``make bench``.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

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
    from chalicelib.cli import make_deps
    from chalicelib.runner import run_check
    from chalicelib.settings import load_settings

    server = RedisServer().start()
    workers = [
        Worker(
            "chalicelib.demo_app", server.url, f"bench-{i}@doorman", pool="prefork", concurrency=2
        ).start()
        for i in range(2)
    ]
    state_dir = tempfile.mkdtemp(prefix="doorman-bench-")
    try:
        wait_for_workers(server.url, [w.name for w in workers])
        point_app_at(demo_app.app, server.url)
        names = [f"bench-queue-{i:02d}" for i in range(QUEUES)]
        for name in names:
            for _ in range(MESSAGES_PER_QUEUE):
                demo_app.build_report.apply_async((0.0,), queue=name)
        demo_app.app.close()

        settings = load_settings(
            environ={},
            overrides={
                "redis_url": server.url,
                "state_path": str(Path(state_dir) / "state.db"),
                "hash_secret": "bench",
            },
        )
        deps = make_deps(settings)
        run_check(settings, deps)  # the first check learns the roster
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


def main() -> int:
    figures: dict[str, float] = {}
    figures.update(bench_healthy())
    figures.update(bench_import())
    print(f"{'benchmark':<28}{'value':>12}")
    rows = [
        ("healthy check (median)", f"{figures['healthy_check_ms']:.1f} ms"),
        ("baseline inspect+LLEN", f"{figures['healthy_baseline_ms']:.1f} ms"),
        ("healthy speedup", f"{figures['healthy_speedup']:.1f}x"),
        ("import app (cold)", f"{figures['import_app_ms']:.1f} ms"),
    ]
    for name, value in rows:
        print(f"{name:<28}{value:>12}")
    print(" ".join(f"{k}={v}" for k, v in figures.items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
