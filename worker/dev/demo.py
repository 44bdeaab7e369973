"""`orderfleet demo`: a whole fleet on this machine, simulated traffic, a summary, a clean exit.

The fleet runs under a Supervisor (worker/dev/processes.py), the traffic is planned and sent by
worker/dev/simulate.py, the store is compared with what was sent by worker/dev/check.py, and
the retries come from the workers' Prometheus metrics.

With no ORDERFLEET_* URLs it runs on the embedded Redis and PostgreSQL (started here and
stopped at the end unless they already ran or --keep-running); with URLs it uses those servers
and never stops them. It truncates nothing: every order of a run has a run-unique id prefix,
and everything it counts (events, dead letters, decisions, divergences) is this run's alone.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from orderfleet.models.tables import (
    DeadLetterRow,
    DecisionDeliveryRow,
    EventRow,
    OrderRow,
    OutboxRow,
)
from orderfleet.worker.dev.check import check_orders, published_events
from orderfleet.worker.dev.lifeline import lifeline
from orderfleet.worker.dev.percentiles import latency_summary
from orderfleet.worker.dev.processes import FleetProcess, Supervisor
from orderfleet.worker.dev.scratch import unique_id
from orderfleet.worker.dev.simulate import Send, SimulateOptions, plan, produce
from orderfleet.worker.dev.workload import Workload
from orderfleet.worker.metrics import retries_by_cause
from orderfleet.worker.servers import FLEET as FLEET_SERVERS
from orderfleet.worker.servers import Embedded, resolve_servers
from orderfleet.worker.settings import Settings, SettingsError, load_settings, redact
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

FLEET = (
    ("worker-0", ["worker", "--index", "0", "--of", "2"]),
    ("worker-1", ["worker", "--index", "1", "--of", "2"]),
    ("decisions", ["worker", "--decisions"]),
    ("beat", ["beat"]),
)
PUBLISH_CHUNK = 500
POLL = 0.25
STALL_AFTER = 90.0  # seconds without a single message ending before the demo gives up
READY_TIMEOUT = 90.0
STOP_TIMEOUT = 30.0
DECISIONS_WAIT = 30.0
DUPLICATE_RATE = 0.3
INVALID_RATE = 0.002


@dataclass
class Ledger:
    """How far this run's messages got: distinct events logged, deliveries, dead letters."""

    logged: int = 0
    deliveries: int = 0
    dead_letters: int = 0

    @property
    def ended(self) -> int:
        return self.deliveries + self.dead_letters


@dataclass
class Report:
    """Everything the summary shows."""

    orders: int
    sent: int
    duplicates_sent: int
    invalid_sent: int
    drained: bool
    drain_seconds: float
    ledger: Ledger
    statuses: list[tuple[str, str, str, int]] = field(default_factory=list)
    dead_letters: dict[str, int] = field(default_factory=dict)
    retries: dict[str, int] = field(default_factory=dict)
    decisions: int = 0
    corrections: int = 0
    delivered: int = 0
    latency_ms: dict[str, float] = field(default_factory=dict)
    checked: int = 0
    divergent: list[str] = field(default_factory=list)
    missing: int = 0

    @property
    def ok(self) -> bool:
        return self.drained and not self.divergent and not self.missing


def run_demo(orders: int, keep_running: bool) -> int:
    """Start servers and fleet, publish simulated traffic, summarise, shut down; exit code."""
    console = Console(highlight=False)
    if orders < 1:
        console.print("orderfleet: --orders must be at least 1", style="red", markup=False)
        return 2
    settings = load_settings()
    servers = Servers.plan(settings)
    supervisor = Supervisor(stop_timeout=STOP_TIMEOUT)
    leave_running = False
    with _terminate_as_interrupt():
        try:
            servers.start(console)
            _start_fleet(supervisor, servers.data_dir, console)
            report = _run(orders, console, supervisor)
            _print_report(console, report)
            leave_running = keep_running
            return 0 if report.ok else 1
        except KeyboardInterrupt:
            console.print("interrupted: shutting down", style="yellow")
            return 130
        except SettingsError as exc:
            console.print(f"orderfleet: {exc}", style="red", markup=False)
            return 2
        except Exception as exc:
            console.print(
                f"orderfleet demo failed: {type(exc).__name__}: {redact(str(exc))}",
                style="red",
                markup=False,
            )
            return 1
        finally:
            if leave_running:
                fleet = supervisor.hand_over()
                lifeline.release_data_dir(servers.data_dir)
                _print_still_running(console, settings, fleet, servers)
            else:
                supervisor.stop_all()
                _close_clients()
                servers.stop(console)
                lifeline.release_data_dir(servers.data_dir)


@contextlib.contextmanager
def _terminate_as_interrupt() -> Iterator[None]:
    """SIGTERM ends the demo like Ctrl-C does: through the clean shutdown."""

    def interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


# --------------------------------------------------------------------------- servers and fleet


@dataclass
class Servers:
    """The servers of the demo (worker/servers.py's rule), and which embedded ones already ran."""

    data_dir: Path
    ran_before: dict[str, bool]
    embedded: bool = False

    @classmethod
    def plan(cls, settings: Settings) -> Servers:
        from orderfleet.worker.dev import embedded

        data_dir = settings.data_dir.expanduser().resolve()
        return cls(data_dir, embedded.status(data_dir))

    def start(self, console: Console) -> None:
        """Resolve (starting the embedded servers if chosen), export the URLs, migrate."""
        from orderfleet.worker.db import upgrade
        from orderfleet.worker.runtime import get_runtime

        if not all(self.ran_before.values()):
            lifeline.guard_data_dir(self.data_dir)  # what the demo starts ends with it
        chosen = resolve_servers(load_settings(), FLEET_SERVERS, Embedded.START).export()
        self.embedded = chosen.embedded_dir is not None
        for name in self.ran_before:
            console.print(f"{name}: {self._origin(name)}", markup=False)
        console.print(f"database schema at revision {upgrade(get_runtime().engine)}")

    def _origin(self, name: str) -> str:
        if not self.embedded:
            return "external server (ORDERFLEET_* settings)"
        when = "already running" if self.ran_before[name] else "started"
        return f"embedded, {when} under {self.data_dir}"

    def stop(self, console: Console) -> None:
        """Stop the embedded servers, unless one ran before the demo (someone else's)."""
        from orderfleet.worker.dev import embedded

        running = {name for name, up in embedded.status(self.data_dir).items() if up}
        ours = {name for name in running if self.embedded and not self.ran_before[name]}
        if not ours:
            return
        if ours == running:
            console.print(f"stopped embedded {', '.join(embedded.stop(self.data_dir))}")
        else:
            console.print("embedded servers that ran before the demo are left running")


def _start_fleet(supervisor: Supervisor, data_dir: Path, console: Console) -> None:
    """Two partition workers, the decisions worker and beat, all ready."""
    log_dir = data_dir / "logs"
    env = {**os.environ, "ORDERFLEET_DATA_DIR": str(data_dir)}
    for name, _ in FLEET:
        (log_dir / f"{name}.log").unlink(missing_ok=True)  # a fresh log per run
    fleet = [FleetProcess(name, args, env, log_dir) for name, args in FLEET]
    with console.status("starting 2 partition workers, the decisions worker and beat..."):
        supervisor.start_ready(fleet, timeout=READY_TIMEOUT)
    for process in fleet:
        console.print(f"  {process.name:<10} pid {process.pid:<8} {' '.join(process.args)}")
    console.print(f"logs in {log_dir}", markup=False)


def _close_clients() -> None:
    """Close this process's broker, Redis and database connections."""
    from orderfleet.worker.celery_app import app
    from orderfleet.worker.runtime import reset_runtime

    with contextlib.suppress(Exception):
        app.close()
    reset_runtime(None)


def _print_still_running(
    console: Console, settings: Settings, fleet: Sequence[FleetProcess], servers: Servers
) -> None:
    """How to watch the fleet that keeps running, and how to stop it."""
    pids = " ".join(str(p.pid) for p in fleet if p.alive())
    _close_clients()
    console.print("\nThe fleet keeps running.", style="bold")
    for process in fleet:
        console.print(f"  {process.name:<10} pid {process.pid:<8} log {process.log_path}")
    console.print(f"Flower:  orderfleet flower   ->  http://127.0.0.1:{settings.flower_port}")
    console.print("Stop it: first the fleet, then the embedded servers:")
    console.print(f"  kill -TERM {pids}" if pids else "  (no fleet process is alive)")
    if servers.embedded:
        console.print(f"  ORDERFLEET_DATA_DIR={servers.data_dir} orderfleet stop", markup=False)


# --------------------------------------------------------------------------- the run


def _run(orders: int, console: Console, supervisor: Supervisor) -> Report:
    """Send a simulated workload, wait until every message ended, check, gather the report."""
    from orderfleet.worker.runtime import get_runtime

    runtime = get_runtime()
    prefix = f"demo-{unique_id(8)}-"
    options = SimulateOptions(
        orders=orders,
        duplicate_rate=DUPLICATE_RATE,
        invalid_rate=INVALID_RATE,
        seed=int(time.time()),
        prefix=prefix,
    )
    workload, sends = plan(options)
    console.print(
        f"run {prefix[:-1]}: {orders:,} orders, {len(workload.distinct):,} distinct events, "
        f"{len(sends):,} messages ({workload.duplicates:,} re-deliveries, "
        f"{len(workload.invalid):,} invalid), shuffled across and within orders"
    )
    tallies_before = supervisor.tallies()
    began = time.monotonic()
    with _progress(console) as progress:
        published = _send(sends, progress)
        drained, ledger = _drain(runtime.sessions, prefix, len(sends), progress)
    seconds = time.monotonic() - began
    tallies_after = supervisor.tallies()
    _wait_for_decisions(runtime.sessions, prefix, console)
    report = Report(
        orders=orders,
        sent=len(sends),
        duplicates_sent=workload.duplicates,
        invalid_sent=len(workload.invalid),
        drained=drained,
        drain_seconds=seconds,
        ledger=ledger,
        retries=_retries(tallies_before, tallies_after),
    )
    _gather(runtime.sessions, prefix, published, report)
    _check(runtime.sessions, workload, published, report)
    return report


def _progress(console: Console) -> Progress:
    return Progress(
        TextColumn("{task.description:<10}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[detail]}"),
        TimeElapsedColumn(),
        console=console,
    )


def _send(sends: list[Send], progress: Progress) -> dict[str, datetime]:
    """Send every message in arrival order, a chunk at a time through simulate's producer
    (as fast as it can); when each event id was first sent (UTC)."""
    task = progress.add_task("publish", total=len(sends), detail="")
    sent: dict[str, datetime] = {}
    for start in range(0, len(sends), PUBLISH_CHUNK):
        now = datetime.now(UTC)
        produced = produce(sends[start : start + PUBLISH_CHUNK], 0.0, 0.0)
        if produced.error is not None:
            raise RuntimeError(f"publishing failed: {produced.error}")
        for event_id in produced.event_ids:
            sent.setdefault(event_id, now)
        progress.advance(task, produced.sent)
    return sent


def _drain(
    sessions: sessionmaker[Session], prefix: str, expected: int, progress: Progress
) -> tuple[bool, Ledger]:
    """Poll the database until every message ended (or nothing moved for STALL_AFTER)."""
    task = progress.add_task("apply", total=expected, detail="")
    ledger, last_change, last_ended = Ledger(), time.monotonic(), -1
    while True:
        ledger = _ledger(sessions, prefix)
        detail = (
            f"{ledger.logged:,} applied, {ledger.deliveries - ledger.logged:,} duplicates, "
            f"{ledger.dead_letters:,} dead letters"
        )
        progress.update(task, completed=min(ledger.ended, expected), detail=detail)
        if ledger.ended >= expected:
            return True, ledger
        if ledger.ended != last_ended:
            last_ended, last_change = ledger.ended, time.monotonic()
        elif time.monotonic() - last_change > STALL_AFTER:
            return False, ledger
        time.sleep(POLL)


def _like(prefix: str) -> str:
    return f"{prefix}%"


def _ledger(sessions: sessionmaker[Session], prefix: str) -> Ledger:
    with sessions() as s:
        logged, deliveries = s.execute(
            select(func.count(), func.coalesce(func.sum(EventRow.deliveries), 0)).where(
                EventRow.order_id.like(_like(prefix))
            )
        ).one()
        letters = s.scalar(select(func.count()).where(DeadLetterRow.order_id.like(_like(prefix))))
    return Ledger(int(logged), int(deliveries), int(letters or 0))


def _wait_for_decisions(sessions: sessionmaker[Session], prefix: str, console: Console) -> None:
    """Give the decisions worker a moment to receive every decision this run emitted."""
    deadline = time.monotonic() + DECISIONS_WAIT
    with console.status("waiting for the decisions worker..."):
        while time.monotonic() < deadline:
            emitted, delivered = _decision_counts(sessions, prefix)
            if delivered >= emitted:
                return
            time.sleep(POLL)


def _decision_counts(sessions: sessionmaker[Session], prefix: str) -> tuple[int, int]:
    with sessions() as s:
        emitted = s.scalar(select(func.count()).where(OutboxRow.order_id.like(_like(prefix))))
        delivered = s.scalar(
            select(func.count()).where(DecisionDeliveryRow.order_id.like(_like(prefix)))
        )
    return int(emitted or 0), int(delivered or 0)


def _retries(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    """Retries scheduled during the run, by cause (the counters are cumulative)."""
    during = retries_by_cause({k: n - before.get(k, 0) for k, n in after.items()})
    return {cause: n for cause, n in during.items() if n}


# --------------------------------------------------------------------------- the report


def _gather(
    sessions: sessionmaker[Session], prefix: str, published: dict[str, datetime], report: Report
) -> None:
    like = _like(prefix)
    decision = OrderRow.document["decision"]
    with sessions() as s:
        rows = s.execute(
            select(
                OrderRow.status,
                decision["outcome"].astext,
                decision["reason"].astext,
                func.count(),
            )
            .where(OrderRow.order_id.like(like))
            .group_by(OrderRow.status, decision["outcome"].astext, decision["reason"].astext)
        ).all()
        report.statuses = sorted(
            ((st, out or "-", why or "-", int(n)) for st, out, why, n in rows),
            key=lambda row: -row[3],
        )
        letters = s.execute(
            select(DeadLetterRow.reason, func.count())
            .where(DeadLetterRow.order_id.like(like))
            .group_by(DeadLetterRow.reason)
        ).all()
        report.dead_letters = {reason: int(n) for reason, n in letters}
        report.corrections = int(
            s.scalar(select(func.count()).where(OutboxRow.order_id.like(like), OutboxRow.seq > 1))
            or 0
        )
        received = s.execute(
            select(EventRow.event_id, EventRow.received_at).where(EventRow.order_id.like(like))
        ).all()
    report.decisions, report.delivered = _decision_counts(sessions, prefix)
    report.latency_ms = latency_summary(
        [(at - published[eid]).total_seconds() for eid, at in received if eid in published]
    )


def _check(
    sessions: sessionmaker[Session],
    workload: Workload,
    published: dict[str, datetime],
    report: Report,
) -> None:
    """`orderfleet check` for this run: every order as the events it was sent says it is."""
    events = published_events(workload.distinct, published)
    report.checked = len(events)
    for finding in check_orders(sessions, events):
        if finding.missing:
            report.missing += 1
        else:
            report.divergent.append(f"{finding.order_id} ({', '.join(finding.fields)})")


def _print_report(console: Console, report: Report) -> None:
    console.print()
    console.print(_orders_table(report))
    console.print(_run_table(report))
    if report.divergent:
        console.print("[red]divergent orders:[/red] " + "; ".join(report.divergent[:20]))
    colour = "green" if report.ok else "red"
    verdict = f"verify: {len(report.divergent)} divergent orders"
    if report.missing:
        verdict += f", {report.missing} orders missing"
    if not report.drained:
        verdict += f"; the queues did not drain (nothing ended for {STALL_AFTER:.0f} s)"
    console.print(f"[bold {colour}]{verdict}[/bold {colour}]")


def _orders_table(report: Report) -> Table:
    table = Table(title=f"{report.orders:,} orders by status and decision")
    for name in ("status", "decision", "reason"):
        table.add_column(name)
    table.add_column("orders", justify="right")
    for status, outcome, reason, count in report.statuses:
        table.add_row(status, outcome, reason, f"{count:,}")
    return table


def _run_table(report: Report) -> Table:
    led = report.ledger
    table = Table(
        title="the run",
        caption="latency includes the wait in the queue behind the whole published backlog",
        show_header=False,
    )
    table.add_column("what")
    table.add_column("value", justify="right")
    rows = [
        ("messages sent", f"{report.sent:,}"),
        ("distinct events applied", f"{led.logged:,}"),
        ("duplicates absorbed", f"{led.deliveries - led.logged:,} of {report.duplicates_sent:,}"),
        ("conflicts retried", _retry_text(report.retries)),
        ("dead letters", _letters_text(report.dead_letters, report.invalid_sent)),
        ("decisions emitted", f"{report.decisions:,} ({report.delivered:,} delivered)"),
        ("corrections emitted", f"{report.corrections:,}"),
        ("drain time", f"{report.drain_seconds:.1f} s"),
        ("events/s", f"{led.deliveries / report.drain_seconds:,.0f}"),
        ("publish->commit p50", _latency_text(report.latency_ms, "p50_ms")),
        ("publish->commit p99", _latency_text(report.latency_ms, "p99_ms")),
        ("verify", f"{len(report.divergent)} divergent orders ({report.checked:,} checked)"),
    ]
    for what, value in rows:
        table.add_row(what, value)
    return table


def _latency_text(summary: dict[str, float], key: str) -> str:
    return f"{summary[key]:,.0f} ms" if summary.get("count") else "-"


def _retry_text(retries: dict[str, int]) -> str:
    total = sum(retries.values())
    if not total:
        return "0"
    return f"{total:,} (" + ", ".join(f"{k} {v:,}" for k, v in retries.items()) + ")"


def _letters_text(letters: dict[str, int], invalid_sent: int) -> str:
    parts = ", ".join(f"{reason} {n:,}" for reason, n in sorted(letters.items())) or "none"
    return f"{parts} ({invalid_sent:,} invalid sent)"
