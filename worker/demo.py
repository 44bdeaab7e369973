"""`orderfleet demo`: a whole fleet on this machine, simulated traffic, a summary, a clean exit.

With no ORDERFLEET_* URLs it runs on the embedded Redis and PostgreSQL (started here and
stopped at the end unless they already ran or --keep-running); with URLs it uses those servers
and never stops them. It truncates nothing: every order of a run has a run-unique id prefix,
and everything it counts (events, dead letters, decisions, divergences) is this run's alone.
"""

from __future__ import annotations

import contextlib
import math
import os
import signal
import time
import uuid
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
from orderfleet.worker.lifeline import lifeline
from orderfleet.worker.processes import FleetProcess
from orderfleet.worker.servers import FLEET as FLEET_SERVERS
from orderfleet.worker.servers import Embedded, resolve_servers
from orderfleet.worker.settings import Settings, SettingsError, load_settings, redact
from orderfleet.worker.workload import Workload, generate
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
    latencies: list[float] = field(default_factory=list)
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
    fleet: list[FleetProcess] = []
    leave_running = False
    with _terminate_as_interrupt():
        try:
            servers.start(console)
            _start_fleet(servers.data_dir, console, fleet)
            report = _run(settings, orders, console)
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
                _hand_over(fleet, servers)
                _print_still_running(console, settings, fleet, servers)
            else:
                _stop_fleet(fleet)
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
        from orderfleet.worker import embedded

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
        from orderfleet.worker import embedded

        running = {name for name, up in embedded.status(self.data_dir).items() if up}
        ours = {name for name in running if self.embedded and not self.ran_before[name]}
        if not ours:
            return
        if ours == running:
            console.print(f"stopped embedded {', '.join(embedded.stop(self.data_dir))}")
        else:
            console.print("embedded servers that ran before the demo are left running")


def _start_fleet(data_dir: Path, console: Console, fleet: list[FleetProcess]) -> None:
    """Two partition workers, the decisions worker and beat (appended as started), all ready."""
    log_dir = data_dir / "logs"
    env = {**os.environ, "ORDERFLEET_DATA_DIR": str(data_dir)}
    for name, args in FLEET:
        (log_dir / f"{name}.log").unlink(missing_ok=True)  # a fresh log per run
        fleet.append(FleetProcess(name, args, env, log_dir).start())
    with console.status("starting 2 partition workers, the decisions worker and beat..."):
        for process in fleet:
            process.wait_ready(timeout=90)
    for process in fleet:
        console.print(f"  {process.name:<10} pid {process.pid:<8} {' '.join(process.args)}")
    console.print(f"logs in {log_dir}", markup=False)


def _stop_fleet(fleet: Sequence[FleetProcess], timeout: float = 30.0) -> None:
    """SIGTERM every process group at once (warm shutdown), then wait; SIGKILL stragglers."""
    for process in fleet:
        if process.alive():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    for process in fleet:
        while process.alive() and time.monotonic() < deadline:
            time.sleep(0.05)
        process.kill()


def _hand_over(fleet: Sequence[FleetProcess], servers: Servers) -> None:
    """--keep-running: the fleet and the embedded servers outlive the demo."""
    for process in fleet:
        process.hand_over()
    lifeline.release_data_dir(servers.data_dir)


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


def _run(settings: Settings, orders: int, console: Console) -> Report:
    """Publish a workload, wait until every message ended, gather the report."""
    from orderfleet.worker.metrics import fleet_stats
    from orderfleet.worker.runtime import get_runtime

    runtime = get_runtime()
    prefix = f"demo-{uuid.uuid4().hex[:8]}-"
    workload = generate(
        orders,
        seed=int(time.time()),
        duplicate_rate=DUPLICATE_RATE,
        invalid_rate=INVALID_RATE,
        prefix=prefix,
    )
    console.print(
        f"run {prefix[:-1]}: {orders:,} orders, {len(workload.distinct):,} distinct events, "
        f"{len(workload.deliveries):,} messages ({workload.duplicates:,} re-deliveries, "
        f"{len(workload.invalid):,} invalid), shuffled across and within orders"
    )
    stats_before = fleet_stats(runtime.redis, settings.stats_key)
    began = time.monotonic()
    with _progress(console) as progress:
        published = _publish(workload, progress)
        drained, ledger = _drain(runtime.sessions, prefix, len(workload.deliveries), progress)
    seconds = time.monotonic() - began
    stats_after = fleet_stats(runtime.redis, settings.stats_key)
    _wait_for_decisions(runtime.sessions, prefix, console)
    report = Report(
        orders=orders,
        sent=len(workload.deliveries),
        duplicates_sent=workload.duplicates,
        invalid_sent=len(workload.invalid),
        drained=drained,
        drain_seconds=seconds,
        ledger=ledger,
        retries=_retries(stats_before, stats_after),
    )
    _gather(runtime.sessions, prefix, published, report)
    _verify(runtime.sessions, workload.order_ids, report)
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


def _publish(workload: Workload, progress: Progress) -> dict[str, datetime]:
    """Send every delivery in arrival order; when each event id was first sent (UTC)."""
    from orderfleet import publish_many

    invalid_ids = {wire["eventId"] for wire in workload.invalid}
    task = progress.add_task("publish", total=len(workload.deliveries), detail="")
    sent: dict[str, datetime] = {}
    for start in range(0, len(workload.deliveries), PUBLISH_CHUNK):
        chunk = workload.deliveries[start : start + PUBLISH_CHUNK]
        now = datetime.now(UTC)
        valid = [w for w in chunk if w.get("eventId") not in invalid_ids]
        for receipt in publish_many(valid, bulk=False):  # per-event, like the services
            sent.setdefault(receipt.event_id, now)
        for wire in chunk:
            if wire.get("eventId") in invalid_ids:
                _send_invalid(wire)
        progress.advance(task, len(chunk))
    return sent


def _send_invalid(wire: dict[str, Any]) -> None:
    """Send a broken event as a careless producer would: by task name, unvalidated."""
    from orderfleet.worker.celery_app import app
    from orderfleet.worker.routing import TASK_FOR_TYPE

    name = TASK_FOR_TYPE.get(wire.get("eventType"), TASK_FOR_TYPE["OrderCreated"])
    app.send_task(name, kwargs={"event": wire})


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
    """Retries scheduled during the run, by cause (fleet tallies are cumulative)."""
    causes = {k for k in after if k.startswith("retry:")}
    counts = {k.removeprefix("retry:"): after[k] - before.get(k, 0) for k in causes}
    return {cause: n for cause, n in sorted(counts.items()) if n}


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
    report.latencies = sorted(
        (at - published[eid]).total_seconds() for eid, at in received if eid in published
    )


def _verify(sessions: sessionmaker[Session], order_ids: list[str], report: Report) -> None:
    """The verify of docs/design.md §2, for this run's orders: each stored state equals its log's
    projection."""
    from orderfleet.worker.service import divergence, events_from_log
    from orderfleet.worker.store import EventLog, OrderRepository

    for start in range(0, len(order_ids), 500):
        page = order_ids[start : start + 500]
        with sessions() as s:
            states = OrderRepository(s).get_many(page)
            raws = EventLog(s).raw_events_of(list(states))
        report.missing += len(page) - len(states)
        for order_id, state in states.items():
            report.checked += 1
            found = divergence(state, events_from_log(raws[order_id]))
            if found is not None:
                report.divergent.append(f"{order_id} ({', '.join(found.fields)})")


def _percentile(values: list[float], q: float) -> float:
    """The nearest-rank percentile of sorted values."""
    if not values:
        return float("nan")
    return values[max(1, math.ceil(len(values) * q)) - 1]


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
    lat = report.latencies
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
        ("publish->commit p50", f"{_percentile(lat, 0.50) * 1000:,.0f} ms"),
        ("publish->commit p99", f"{_percentile(lat, 0.99) * 1000:,.0f} ms"),
        ("verify", f"{len(report.divergent)} divergent orders ({report.checked:,} checked)"),
    ]
    for what, value in rows:
        table.add_row(what, value)
    return table


def _retry_text(retries: dict[str, int]) -> str:
    total = sum(retries.values())
    if not total:
        return "0"
    return f"{total:,} (" + ", ".join(f"{k} {v:,}" for k, v in retries.items()) + ")"


def _letters_text(letters: dict[str, int], invalid_sent: int) -> str:
    parts = ", ".join(f"{reason} {n:,}" for reason, n in sorted(letters.items())) or "none"
    return f"{parts} ({invalid_sent:,} invalid sent)"
