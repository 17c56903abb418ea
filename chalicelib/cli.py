"""The ``doorman`` command: argument parsing and output for check, simulate, audit, config,
silence, whois and acl; the work lives in the modules each command calls."""

from __future__ import annotations

import argparse
import json
import logging
import re
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from typing import IO, TYPE_CHECKING, Any, NoReturn

from .settings import ConfigError, Settings
from .text import safe_lines, safe_text

if TYPE_CHECKING:
    from _typeshed import SupportsWrite

EXIT_OK = 0
EXIT_CONFIG = 3
MAX_AUDIT_SAMPLES = 1000
MAX_AUDIT_INTERVAL = 3600.0

log = logging.getLogger("doorman")


def _say(text: str, file: IO[str] | None = None) -> None:
    """Print one line of output with every control character escaped (see ``safe_text``).

    Every line the command prints goes through here: a queue, task, worker or target name,
    a silence's comment or the operator's own argument may hold a newline or an escape
    sequence, and must not forge a line or drive the terminal.
    """
    print(safe_text(text), file=file if file is not None else sys.stdout)


class _Parser(argparse.ArgumentParser):
    """argparse, with its messages escaped.

    argparse echoes the operator's arguments raw ("unrecognized arguments: ..."): an error is
    one line, escaped whole (a newline in an argument stays ``\\n``); usage and help are
    several lines of our own, each escaped with the line breaks kept.
    """

    def error(self, message: str) -> NoReturn:
        super().error(safe_text(message))

    def _print_message(self, message: str, file: SupportsWrite[str] | None = None) -> None:
        super()._print_message(safe_lines(message) if message else message, file)


class _SafeFormatter(logging.Formatter):
    """Log lines with the message escaped (one record, one line) and tracebacks per line."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        return safe_text(super().formatMessage(record))

    def formatException(self, ei: Any) -> str:
        return safe_lines(super().formatException(ei))

    def formatStack(self, stack_info: str) -> str:
        return safe_lines(super().formatStack(stack_info))


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", metavar="FILE", help="YAML config file (or $DOORMAN_CONFIG)")
    parser.add_argument(
        "--redis-url",
        metavar="URL",
        help="Redis broker to watch (or $CELERY_BROKER_URL/$REDIS_URL)",
    )
    parser.add_argument(
        "--state",
        metavar="PATH",
        help="SQLite file keeping the roster and observations between checks"
        " (default: $DOORMAN_STATE or ~/.local/state/doorman/state.db)",
    )
    parser.add_argument("--target", metavar="NAME", help="name of the watched cluster")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress to stderr")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="doorman",
        description="Privacy-first health checks for Celery clusters on Redis.",
        epilog="Exit codes of 'check': 0 the check ran (whatever it found), 3 bad configuration.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for add in (
        _add_check,
        _add_simulate,
        _add_audit,
        _add_config,
        _add_silence,
        _add_whois,
        _add_acl,
    ):
        add(sub)
    return parser


def _add_check(sub: Any) -> None:
    check = sub.add_parser(
        "check",
        help="check a cluster once or every CHECK_INTERVAL seconds",
        description="Collect one sanitized snapshot of the cluster and print it. Without"
        " --once, repeat every CHECK_INTERVAL seconds until interrupted (Ctrl-C).",
    )
    _common(check)
    check.add_argument("--once", action="store_true", help="run one check and exit")
    check.add_argument(
        "--format", choices=("json", "text"), default="json", help="stdout format (default json)"
    )
    check.add_argument(
        "--dry-run", action="store_true", help="deliver no notifications; show what would be sent"
    )
    check.add_argument(
        "--interval", type=float, metavar="S", help="seconds between checks (or $CHECK_INTERVAL)"
    )


def _add_simulate(sub: Any) -> None:
    sim = sub.add_parser(
        "simulate",
        help="run real workers on an embedded Redis and check them",
        description="Start an embedded redis-server on a free port and N real Celery workers of"
        " a bundled demo app, enqueue tasks, run checks and show what Doorman sees."
        " Everything is stopped on exit, Ctrl-C included.",
    )
    sim.add_argument("--workers", type=int, default=1, metavar="N", help="workers to start")
    sim.add_argument("--enqueue", type=int, default=0, metavar="M", help="tasks to enqueue")
    sim.add_argument(
        "--scenario",
        choices=("healthy", "workers-down", "backlog", "stuck", "failing", "expiring"),
        default=None,
        help="preset: healthy (1 worker), workers-down (0 workers, 5 tasks),"
        " backlog (1 slow worker, 20 tasks), stuck (a task running past its limit),"
        " failing (a task failing 3 runs in 4), expiring (tasks expiring while they wait);"
        " failing and expiring send their tasks after the first check, so need 2 checks",
    )
    sim.add_argument(
        "--checks",
        type=int,
        default=2,
        metavar="K",
        help="checks to run, 1 s apart (default 2: most alerts fire on their second breach)",
    )
    sim.add_argument(
        "--format", choices=("json", "text"), default="text", help="output (default text)"
    )
    sim.add_argument("--tour", action="store_true", help="run every scenario and summarize")
    sim.add_argument("-v", "--verbose", action="store_true", help="log progress to stderr")


def _add_audit(sub: Any) -> None:
    audit = sub.add_parser(
        "audit",
        help="print a health report; exit 0 healthy, 1 warnings, 2 critical",
        description="Take N checks S seconds apart (nothing is saved or sent) and print a"
        " report: infrastructure, workers, queues, metrics, trends, recommendations."
        " Exit 0 healthy, 1 warnings, 2 critical, 3 bad configuration.",
    )
    _common(audit)
    audit.add_argument("--samples", type=int, default=1, metavar="N", help="checks (default 1)")
    audit.add_argument(
        "--interval",
        dest="sample_interval",
        type=float,
        default=10.0,
        metavar="S",
        help="seconds between samples (default 10)",
    )
    audit.add_argument(
        "--deep", action="store_true", help="also analyse the Redis and Celery configuration"
    )


def _add_config(sub: Any) -> None:
    sub.add_parser(
        "config",
        help="list every setting: key, environment variable, default, meaning",
        description="Print the configuration table (markdown): every key Doorman reads, the"
        " environment variable that sets it, its default and what it means.",
    )


def _add_silence(sub: Any) -> None:
    silence = sub.add_parser(
        "silence",
        help="mute matching alerts for a while (add, list, remove)",
        description="Silences mute notifications of matching alerts; the alerts are still"
        " tracked and listed. A silence with no matcher mutes every alert.",
    )
    silence_sub = silence.add_subparsers(dest="action", metavar="ACTION")
    silence_sub.required = True
    add = silence_sub.add_parser("add", help="add a silence")
    _common(add)
    add.add_argument("--type", help="alert type, e.g. high_latency")
    add.add_argument("--queue", help="queue name (as you know it; scrubbed like the alerts)")
    add.add_argument("--duration", default="1h", help="how long, e.g. 30m, 2h, 1d (default 1h)")
    add.add_argument("--comment", help="why")
    lst = silence_sub.add_parser("list", help="list silences")
    _common(lst)
    rm = silence_sub.add_parser("remove", help="remove a silence")
    _common(rm)
    rm.add_argument("id", metavar="ID")


def _add_whois(sub: Any) -> None:
    whois = sub.add_parser(
        "whois",
        help="map a worker (w-...) or task (t-...) hash back to its live name",
        description="Hash the names Doorman can see right now with the local secret and print"
        " the one matching HASH. Run it where the state file and its secret live.",
    )
    _common(whois)
    whois.add_argument("hash", metavar="HASH")


def _add_acl(sub: Any) -> None:
    acl = sub.add_parser(
        "acl",
        help="print the Redis ACL rules of a least-privilege user for Doorman",
        description="Print the rules of a Redis user that can do everything Doorman does and"
        " nothing else, for the configured key prefix and database: read-only on queues,"
        " bindings and unacked messages; write only on its own remote-control reply keys;"
        " publish only on the pidbox channels. Needs Redis 7 (or ElastiCache 7) or later.",
    )
    acl.add_argument("--config", metavar="FILE", help="YAML config file (or $DOORMAN_CONFIG)")
    acl.add_argument("--redis-url", metavar="URL", help="the broker (its database is used)")
    acl.add_argument("--user", default="doorman", metavar="NAME", help="user name (doorman)")
    acl.add_argument(
        "--format",
        choices=("redis", "shell", "elasticache"),
        default="redis",
        help="redis: a line for redis-cli (default); shell: a redis-cli command line;"
        " elasticache: aws elasticache commands (user and user group)",
    )


def _settings(args: argparse.Namespace) -> Settings:
    from .wiring import local_settings

    return local_settings(
        config_path=getattr(args, "config", None),
        redis_url=getattr(args, "redis_url", None),
        state_path=getattr(args, "state", None),
        target=getattr(args, "target", None),
        interval=getattr(args, "interval", None),
    )


def _configure_logging(verbose: bool) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_SafeFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, handlers=[handler])
    # Celery and kombu log raw connection details at INFO; keep them quiet.
    for noisy in ("celery", "kombu", "amqp"):
        logging.getLogger(noisy).setLevel(logging.ERROR)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    _configure_logging(getattr(args, "verbose", False))
    commands = {
        "check": cmd_check,
        "simulate": cmd_simulate,
        "audit": cmd_audit,
        "whois": cmd_whois,
        "silence": cmd_silence,
        "acl": cmd_acl,
        "config": cmd_config,
    }
    try:
        command = commands.get(args.command)
        if command is not None:
            return command(args)
    except ConfigError as exc:
        _say(f"doorman: configuration error: {exc}", sys.stderr)
        return EXIT_CONFIG
    except KeyboardInterrupt:
        _say("doorman: interrupted", sys.stderr)
        return 130
    parser.error(f"unknown command {args.command}")
    return 2


def cmd_config(_args: argparse.Namespace) -> int:
    from .settings import config_table

    for row in config_table():
        _say(row)
    return EXIT_OK


def cmd_check(args: argparse.Namespace) -> int:
    from .delivery import DeliveryLog
    from .report import render_text
    from .runner import run_check
    from .wiring import close_deps, local_deps

    settings = _settings(args)
    deps = local_deps(settings)
    stop = threading.Event()

    memo = DeliveryLog()

    def _stop(_signum: int, _frame: object) -> None:
        stop.set()

    if not args.once:
        signal.signal(signal.SIGINT, _stop)
        signal.signal(signal.SIGTERM, _stop)
    try:
        while True:
            result = run_check(settings, deps, dry_run=args.dry_run)
            _deliver(settings, deps, result, dry_run=args.dry_run, memo=memo)
            if args.format == "json":
                sys.stdout.write(json.dumps(result.payload, separators=(",", ":")) + "\n")
            else:
                sys.stdout.write(render_text(result.payload) + "\n")
            sys.stdout.flush()
            if args.once or stop.wait(settings.check_interval_seconds):
                break
    finally:
        close_deps(deps)
    if stop.is_set():
        _say("doorman: stopped", sys.stderr)
    return EXIT_OK


def _deliver(
    settings: Settings, deps: Any, result: Any, *, dry_run: bool, memo: Any = None
) -> None:
    """Deliver the committed outbox (or, dry, show what would go); record it in the payload.

    Each notification of the payload gets ``delivery``: one ``{channel, ok, error?}`` per
    channel (``permanent`` when the channel refused it for good, ``skipped`` when it is below
    the channel's minimum severity). ``memo`` keeps, across the checks of one process, the
    channels that already took an item.
    """
    from .delivery import ConsoleChannel, console_line, deliver_outbox
    from .notify.direct import channels_from_settings

    channels = channels_from_settings(settings)
    if dry_run:
        for note in result.notifications:
            _say("doorman: would send: " + console_line(note), sys.stderr)
            for channel in channels:
                if channel.wants(note):
                    line = f"doorman: would send to {channel.name}: {channel.describe(note)}"
                else:
                    line = f"doorman: would skip {channel.name} (below {channel.minimum.value})"
                _say(line, sys.stderr)
        return
    if deps.store is None or not result.committed:
        return
    senders = [ConsoleChannel(), *channels]
    outcomes: dict[str, list[dict[str, Any]]] = {}
    for d in deliver_outbox(deps.store, settings.target, senders, log_=memo):
        entry: dict[str, Any] = {"channel": d.channel, "ok": d.ok}
        if d.error:
            entry["error"] = d.error
        if d.permanent:
            entry["permanent"] = True
        if d.skipped:
            entry["skipped"] = True
        outcomes.setdefault(d.id, []).append(entry)
    for note in result.payload["notifications"]:
        note["delivery"] = outcomes.get(note["id"], [])


def cmd_silence(args: argparse.Namespace) -> int:
    import secrets
    import time

    from .alerting import Silence
    from .sanitize import safe_name
    from .state import StateError
    from .state.sqlite import SqliteStore

    settings = _settings(args)
    store = SqliteStore(settings.default_state_path)
    try:
        if args.action == "add":
            seconds = parse_duration(args.duration)
            now = time.time()
            queue = args.queue
            if queue and settings.sanitize_task_signatures:
                queue = safe_name(queue)  # alerts name queues by their scrubbed (cut) names
            silence = Silence(
                id="s-" + secrets.token_hex(4),
                starts_at=now,
                ends_at=now + seconds,
                type=args.type,
                target=args.target,
                queue=queue,
                comment=args.comment or "",
            )
            store.add_silence(silence)
            _say(
                f"{silence.id} silences {_describe_silence(silence)} until {_when(silence.ends_at)}"
            )
        elif args.action == "list":
            found = store.silences()
            now = time.time()
            if not found:
                _say("no silences")
            for s in found:
                state = "active" if s.active(now) else "expired"
                _say(
                    f"{s.id}  {state:<8} until {_when(s.ends_at)}  {_describe_silence(s)}"
                    + (f"  # {s.comment}" if s.comment else "")
                )
        else:
            if not store.remove_silence(args.id):
                _say(f"doorman: no silence {args.id}", sys.stderr)
                return 1
            _say(f"removed {args.id}")
    except StateError as exc:
        _say(f"doorman: {exc}", sys.stderr)
        return 1
    finally:
        store.close()
    return EXIT_OK


def _when(ts: float) -> str:
    from .text import iso

    return iso(ts)


def _describe_silence(s: Any) -> str:
    parts = [
        f"{name}={value}"
        for name, value in (("type", s.type), ("target", s.target), ("queue", s.queue))
        if value
    ]
    return " ".join(parts) or "every alert"


def parse_duration(text: str) -> float:
    """'90s', '30m', '2h', '1d' or a number of seconds; raises ConfigError."""
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    raw = text.strip().lower()
    try:
        value = float(raw[:-1]) * units[raw[-1]] if raw and raw[-1] in units else float(raw)
    except ValueError:
        raise ConfigError(f"--duration: expected e.g. 30m, 2h or 1d, got {text!r}") from None
    if not 0 < value <= 365 * 86400:
        raise ConfigError("--duration: must be more than 0 and at most a year")
    return value


def cmd_acl(args: argparse.Namespace) -> int:
    """Print the least-privilege rules for the configured broker; exit 0 (3: bad config)."""
    from . import acl
    from .settings import parse_redis_url

    if not re.fullmatch(r"[A-Za-z0-9_.@-]{1,64}", args.user):
        raise ConfigError("--user: letters, digits and _ . @ - only (1 to 64)")
    settings = _settings(args)
    db = parse_redis_url(settings.broker_url).db
    found = acl.rules(settings.global_keyprefix, db)
    text = acl.render(found, args.user, args.format, prefix=settings.global_keyprefix, db=db)
    sys.stdout.write(text)
    return 0


def cmd_whois(args: argparse.Namespace) -> int:
    from .whois import whois
    from .wiring import close_deps, local_deps

    settings = _settings(args)
    deps = local_deps(settings)
    try:
        found = whois(settings, deps, args.hash)
    finally:
        close_deps(deps)
    if found is None:
        _say(f"doorman: {args.hash} matches nothing Doorman can see now", sys.stderr)
        return 1
    _say(found)
    return EXIT_OK


def cmd_audit(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from .audit.render import encodable, render, use_colour
    from .audit.report import build_report
    from .audit.sampling import run_audit
    from .text import iso
    from .wiring import close_deps, local_deps

    samples, interval = args.samples, args.sample_interval
    if not 1 <= samples <= MAX_AUDIT_SAMPLES:
        raise ConfigError(f"--samples: must be between 1 and {MAX_AUDIT_SAMPLES}")
    if not 0 <= interval <= MAX_AUDIT_INTERVAL:
        raise ConfigError(f"--interval: must be between 0 and {MAX_AUDIT_INTERVAL:.0f} seconds")
    # An audit measures over its own few samples, so each one asks the workers everything
    # (stats included: the throughput is measured between the audit's samples).
    settings = replace(_settings(args), worker_detail_interval_seconds=0.0)
    deps = local_deps(settings)
    progress = _progress(sys.stderr, samples)
    try:
        audit = run_audit(
            settings, deps, samples=samples, interval=interval, deep=args.deep, progress=progress
        )
    finally:
        if progress is not None and sys.stderr.isatty():
            sys.stderr.write("\r\033[K")
            sys.stderr.flush()
        close_deps(deps)
    report = build_report(audit, settings.target, iso(audit.samples[0].timestamp))
    text = render(report, colour=use_colour(sys.stdout))
    sys.stdout.write(encodable(text, sys.stdout) + "\n")
    sys.stdout.flush()
    return report.exit_code


def _progress(stream: IO[str], samples: int) -> Callable[[str], None] | None:
    """The audit's progress line: rewritten in place on a terminal, one line per sample
    otherwise (and nothing for a single sample off a terminal)."""
    tty = bool(getattr(stream, "isatty", None) and stream.isatty())
    if not tty and samples < 2:
        return None

    def show(text: str) -> None:
        if tty:
            stream.write("\r\033[K" + text)
        else:
            stream.write(text + "\n")
        stream.flush()

    return show


def cmd_simulate(args: argparse.Namespace) -> int:
    from . import simulate
    from .embedded import EmbeddedError

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        if args.tour:
            simulate.tour(args.format, out=_print)
            return EXIT_OK
        if args.scenario:
            scenario = simulate.SCENARIOS[args.scenario]
        elif args.workers < 0 or args.enqueue < 0:
            _say("doorman: --workers and --enqueue must not be negative", sys.stderr)
            return EXIT_CONFIG
        else:
            scenario = simulate.Scenario("custom", "custom", args.workers, args.enqueue)
        _say(
            f"Simulation '{scenario.name}': {scenario.workers} worker(s),"
            f" {scenario.enqueue} task(s)",
            sys.stderr,
        )
        simulate.show(scenario, max(args.checks, 1), args.format, out=_print)
    except EmbeddedError as exc:
        _say(f"doorman: {exc}", sys.stderr)
        return 1
    return EXIT_OK


def _print(text: str) -> None:
    """Output of the simulation: built from sanitized payloads (escaped names), flushed so
    the tour shows each scenario as it ends."""
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


if __name__ == "__main__":
    raise SystemExit(main())
