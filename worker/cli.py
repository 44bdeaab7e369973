"""The `orderfleet` command line: run the fleet and operate it."""

from __future__ import annotations

import json
import sys
from collections.abc import Collection, Iterator
from contextlib import contextmanager
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import typer
from orderfleet.worker.servers import BROKER, DATABASE, FLEET, Embedded, Servers, resolve_servers
from orderfleet.worker.settings import Settings, SettingsError, load_settings, redact

if TYPE_CHECKING:
    import redis
    from celery import Celery
    from orderfleet.worker.dev.simulate import SimulationReport
    from orderfleet.worker.runtime import Runtime
    from rich.table import Table

cli = typer.Typer(
    name="orderfleet",
    help="A Celery worker fleet that turns out-of-order order events into correct state.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
db_cli = typer.Typer(help="Database schema.", no_args_is_help=True)
cli.add_typer(db_cli, name="db")
order_cli = typer.Typer(help="One order.", no_args_is_help=True)
cli.add_typer(order_cli, name="order")
orders_cli = typer.Typer(help="Many orders: list and export.", no_args_is_help=True)
cli.add_typer(orders_cli, name="orders")
dlq_cli = typer.Typer(help="Dead letters: list, show, replay, purge.", no_args_is_help=True)
cli.add_typer(dlq_cli, name="dlq")

JSON_OPTION = typer.Option(False, "--json", help="Print JSON instead of a table.")


def fail(message: str, code: int = 2) -> NoReturn:
    typer.secho(f"orderfleet: {redact(message)}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code)


def use_servers(needs: Collection[str], embedded: Embedded) -> Servers:
    """The servers of this command (worker/servers.py's rule), exported for Celery and runtime."""
    try:
        servers = resolve_servers(load_settings(), needs, embedded).export()
    except SettingsError as exc:
        fail(str(exc))
    if servers.embedded_dir is not None and embedded is Embedded.START:
        typer.secho(
            f"orderfleet: no ORDERFLEET_* server URLs are set: using the embedded servers of "
            f"{servers.embedded_dir} (ORDERFLEET_DATA_DIR)",
            err=True,
        )
    return servers


def worker_queues(
    partitions: str | None, index: int | None, of: int | None, decisions: bool
) -> tuple[list[str], str]:
    """The queues a worker consumes and a name for it, from exactly one way of choosing."""
    from orderfleet.worker import routing

    total = load_settings().partitions
    chosen = [partitions is not None, index is not None or of is not None, decisions]
    if sum(chosen) != 1:
        raise ValueError("choose exactly one of --partitions, --index/--of, --decisions")
    if decisions:
        return [routing.DECISIONS_QUEUE, routing.MAINTENANCE_QUEUE], "decisions"
    if partitions is not None:
        parts = routing.parse_partitions(partitions, total)
    elif index is None or of is None:
        raise ValueError("--index and --of go together")
    else:
        parts = routing.partitions_of_member(index, of, total)
    return [routing.queue_name(p) for p in parts], f"p{parts[0]}-{parts[-1]}"


@cli.command()
def worker(
    partitions: str = typer.Option(None, help="Partitions to consume, e.g. 0-7 or 0,3,8-11."),
    index: int = typer.Option(None, help="This worker's index among --of equal workers."),
    of: int = typer.Option(None, help="How many equal workers share the partitions."),
    decisions: bool = typer.Option(False, help="Consume the decisions and maintenance queues."),
    loglevel: str = typer.Option(None, help="Log level (default ORDERFLEET_LOG_LEVEL)."),
) -> None:
    """Run one single-threaded consumer (solo pool, late ack; batches) for some queues."""
    try:
        queues, name = worker_queues(partitions, index, of, decisions)
        settings = load_settings()
        from orderfleet.worker.retries import check_visibility

        check_visibility(settings)
    except (ValueError, SettingsError) as exc:
        fail(str(exc))
    use_servers(FLEET, Embedded.START)
    from orderfleet.worker.celery_app import app

    argv = [
        "worker",
        "--pool=solo",
        "--concurrency=1",
        # A partition worker's prefetch covers a batch (worker/batching.py); decisions: one.
        f"--prefetch-multiplier={1 if decisions else settings.flush_size}",
        f"--queues={','.join(queues)}",
        f"--hostname={name}.%h.{_pid()}",
        f"--loglevel={loglevel or settings.log_level}",
        "--without-gossip",
        "--without-mingle",
        *(["--task-events"] if settings.task_events else []),
    ]
    app.worker_main(argv)


def _pid() -> int:
    import os

    return os.getpid()


@cli.command()
def beat(loglevel: str = typer.Option(None, help="Log level.")) -> None:
    """Run Celery beat (the periodic outbox relay)."""
    settings = load_settings()
    use_servers([BROKER], Embedded.START)
    from orderfleet.worker.celery_app import app

    settings.data_dir.mkdir(parents=True, exist_ok=True)
    schedule = settings.data_dir / "celerybeat-schedule"
    app.start(["beat", f"--schedule={schedule}", f"--loglevel={loglevel or settings.log_level}"])


@db_cli.command("upgrade")
def db_upgrade() -> None:
    """Apply every pending migration to the database."""
    use_servers([DATABASE], Embedded.START)
    from orderfleet.worker.db import upgrade
    from orderfleet.worker.runtime import get_runtime

    revision = upgrade(get_runtime().engine)
    typer.echo(f"database schema at revision {revision}")


@cli.command()
def publish(
    path: Path = typer.Argument(..., help="JSON Lines file of events ('-' for stdin)."),
    batch: int = typer.Option(1000, help="Events validated and sent per pipelined batch."),
    bulk: bool = typer.Option(
        True, "--bulk/--per-event", help="Bulk messages by partition, or one message per event."
    ),
) -> None:
    """Validate and publish events from a JSON Lines file (all are checked before any is sent)."""
    from orderfleet import publish_many
    from orderfleet.models import InvalidEvent, parse_event

    lines = sys.stdin if str(path) == "-" else path.open(encoding="utf-8")
    events = []
    for number, line in enumerate(lines, 1):
        if line.strip():
            try:
                events.append(parse_event(line))
            except InvalidEvent as exc:
                fail(f"line {number}: {exc}")
    use_servers([BROKER], Embedded.ATTACH)
    for start in range(0, len(events), batch):
        publish_many(events[start : start + batch], bulk=bulk)
    typer.echo(f"published {len(events)} events")


@cli.command()
def demo(
    orders: int = typer.Option(2000, help="How many orders of simulated traffic to publish."),
    keep_running: bool = typer.Option(False, help="Leave the fleet running afterwards."),
) -> None:
    """Run the fleet on embedded servers with simulated out-of-order traffic, then summarise."""
    from orderfleet.worker.dev.demo import run_demo

    raise typer.Exit(run_demo(orders=orders, keep_running=keep_running))


@cli.command()
def simulate(
    orders: int = typer.Option(1000, min=0, help="How many orders of events to publish."),
    rate: float = typer.Option(
        0.0, min=0, help="Messages per second over all producers (0: as fast as possible)."
    ),
    producers: int = typer.Option(1, min=1, help="Producer processes, each sending its share."),
    duplicate_rate: float = typer.Option(
        0.3, min=0, max=1, help="Re-deliveries, as a share of the distinct events."
    ),
    invalid_rate: float = typer.Option(
        0.0, min=0, max=1, help="Invalid events (sent by task name), as a share of distinct ones."
    ),
    late_rate: float = typer.Option(
        0.0, min=0, max=1, help="Share of valid messages held back and sent --late-delay later."
    ),
    late_delay: float = typer.Option(5.0, min=0, help="Seconds a late message is held back."),
    seed: int = typer.Option(0, help="Seed of the workload (with --prefix)."),
    prefix: str = typer.Option("sim-", help="Order id prefix of this run."),
    out: Path | None = typer.Option(
        None, help="Write the distinct valid events published here (JSON Lines), for `check`."
    ),
    json_output: bool = JSON_OPTION,
) -> None:
    """Publish a seeded, out-of-order, duplicated workload at a bounded rate; exit 1 on errors."""
    from orderfleet.worker.dev.simulate import SimulateOptions, run_simulation

    options = SimulateOptions(
        orders, rate, producers, duplicate_rate, invalid_rate, late_rate, late_delay, seed, prefix
    )
    try:
        options.check()
    except ValueError as exc:
        fail(str(exc))
    use_servers([BROKER], Embedded.ATTACH)
    report = run_simulation(options, out)
    if json_output:
        print_json(report.to_json())
    else:
        print_simulation(report)
    for error in report.errors:
        typer.secho(f"orderfleet: producer failed: {error}", fg=typer.colors.RED, err=True)
    raise typer.Exit(1 if report.errors else 0)


def print_simulation(report: SimulationReport) -> None:
    """The run in three lines: the workload, what was sent, how fast."""
    typer.echo(
        f"workload: {plural(report.orders, 'order')}, {report.distinct:,} distinct events, "
        f"{report.duplicates:,} re-deliveries, {report.invalid_planned:,} invalid, "
        f"{report.late_planned:,} late"
    )
    typer.echo(
        f"sent {report.sent:,} messages ({report.valid_sent:,} valid, {report.invalid_sent:,} "
        f"invalid, {report.late_sent:,} late) from {plural(report.producers, 'producer')}; "
        f"{report.published_distinct:,} distinct events published"
    )
    typer.echo(
        f"{report.seconds:.2f} s, {report.rate:,.0f} messages/s, "
        f"{report.publish_retries} publish retries after broker errors"
    )


@cli.command()
def check(
    path: Path = typer.Argument(..., help="JSON Lines of published events (simulate --out)."),
) -> None:
    """Compare every order of FILE in the store with its published events; exit 1 if any differ."""
    from orderfleet.worker.dev.check import BadEventFile, check_orders, load_events

    try:
        published = load_events(path)
    except OSError as exc:
        fail(f"{path}: {exc.strerror or exc}")
    except BadEventFile as exc:
        fail(str(exc))
    divergent = missing = 0
    for finding in check_orders(checked_runtime().sessions, published):
        if finding.missing:
            missing += 1
            typer.echo(f"{finding.order_id}: missing from the store")
            continue
        divergent += 1
        typer.echo(f"{finding.order_id}: {', '.join(finding.fields)}")
        for detail in finding.details:
            typer.echo(f"  {detail}")
    summary = f"{len(published)} orders checked, {divergent} divergent"
    typer.echo(summary + (f", {missing} missing" if missing else ""))
    raise typer.Exit(1 if divergent or missing else 0)


@cli.command()
def stop() -> None:
    """Stop the embedded Redis and PostgreSQL of this data directory."""
    from orderfleet.worker.dev import embedded

    stopped = embedded.stop(load_settings().data_dir)
    typer.echo(f"stopped: {', '.join(stopped) if stopped else 'nothing was running'}")


# Operations: shared helpers


def checked_runtime(needs: Collection[str] = (DATABASE,)) -> Runtime:
    """The runtime, refusing (exit 2) when the database is unreachable or its schema behind.

    It uses configured servers, or embedded ones that already run: it starts none.
    """
    use_servers(needs, Embedded.ATTACH)
    from orderfleet.worker.db import SchemaBehind
    from orderfleet.worker.runtime import get_runtime
    from sqlalchemy.exc import OperationalError

    runtime = get_runtime()
    try:
        runtime.check_schema()
    except SchemaBehind as exc:
        fail(str(exc))
    except OperationalError as exc:
        fail(f"cannot reach the database: {exc.orig}")
    return runtime


@contextmanager
def broker_client(settings: Settings) -> Iterator[redis.Redis]:
    """A redis-py client on the Redis broker; a bad URL or a lost broker ends the command."""
    import redis
    from orderfleet.worker import broker_queues

    try:
        client = redis.Redis.from_url(broker_queues.broker_redis_url(settings), socket_timeout=5)
    except ValueError as exc:
        fail(str(exc))
    try:
        yield client
    except redis.RedisError as exc:
        fail(f"cannot reach the broker: {exc}")
    finally:
        client.close()


def celery_app() -> Celery:
    """The fleet's Celery app, configured from the ORDERFLEET_* settings."""
    from orderfleet.worker.celery_app import app

    return app


def print_json(data: Any) -> None:
    """Print data as indented JSON."""
    typer.echo(json.dumps(data, indent=2, ensure_ascii=False))


def print_table(table: Table) -> None:
    """Print a Rich table to stdout."""
    from rich.console import Console

    Console().print(table)


def new_table(title: str, *columns: str) -> Table:
    """A Rich table whose columns fold long values instead of cutting them."""
    from rich.table import Table

    table = Table(title=title)
    for column in columns:
        table.add_column(column, overflow="fold")
    return table


def cell(value: Any) -> str:
    """A value as table text: strings as they are, None as a dash, the rest as JSON."""
    if value is None:
        return "-"
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


def plural(count: int, noun: str) -> str:
    """'1 order', '2 orders'."""
    return f"{count} {noun}{'' if count == 1 else 's'}"


# order / orders


class OrderStatus(StrEnum):
    """The status an order can have."""

    pending = "pending"
    processing = "processing"
    confirmed = "confirmed"
    rejected = "rejected"


@order_cli.command("show")
def order_show(
    order_id: str = typer.Argument(..., help="The orderId."),
    json_output: bool = JSON_OPTION,
) -> None:
    """Show an order's document (docs/design.md §2); exit 1 when there is no such order."""
    from orderfleet.worker import order_queries

    document = order_queries.order_document(checked_runtime().sessions, order_id)
    if document is None:
        fail(f"order {order_id!r} not found", 1)
    if json_output:
        print_json(document)
    else:
        print_table(document_table(document))


def document_table(document: dict[str, Any]) -> Table:
    """An order document as field/value rows; sections flattened as section.field."""
    table = new_table(f"order {document['orderId']}", "field", "value")
    for key, value in document.items():
        if isinstance(value, dict):
            for field, inner in value.items():
                table.add_row(f"{key}.{field}", cell(inner))
        else:
            table.add_row(key, cell(value))
    return table


@orders_cli.command("list")
def orders_list(
    status: OrderStatus | None = typer.Option(None, help="Only orders with this status."),
    stalled: bool = typer.Option(
        False,
        "--stalled",
        help="Only pending/processing orders not updated for ORDERFLEET_STALLED_AFTER seconds.",
    ),
    limit: int = typer.Option(100, min=1, help="At most this many orders (in id order)."),
    json_output: bool = JSON_OPTION,
) -> None:
    """List orders in id order, by status and/or stalled."""
    from orderfleet.worker import order_queries

    runtime = checked_runtime()
    cutoff = order_queries.stalled_cutoff(runtime.settings, runtime.now()) if stalled else None
    wanted = status.value if status else None
    rows = order_queries.list_orders(runtime.sessions, wanted, cutoff, limit)
    if json_output:
        print_json(rows)
        return
    columns = ("orderId", "status", "completeness", "eventCount", "lastEventAt", "updatedAt")
    table = new_table(plural(len(rows), "order"), *columns, "version")
    for row in rows:
        table.add_row(*(cell(row[c]) for c in (*columns, "version")))
    print_table(table)


@orders_cli.command("export")
def orders_export(
    page_size: int = typer.Option(500, min=1, help="Orders read per keyset page."),
) -> None:
    """Print every order document as JSON Lines, streamed a page at a time."""
    from orderfleet.models.wire import dumps
    from orderfleet.worker import order_queries

    for document in order_queries.export_orders(checked_runtime().sessions, page_size):
        typer.echo(dumps(document))


# dlq


@dlq_cli.command("list")
def dlq_list(
    reason: str | None = typer.Option(None, help="Only dead letters of this reason."),
    limit: int = typer.Option(1000, min=1, help="At most this many (oldest first)."),
    json_output: bool = JSON_OPTION,
) -> None:
    """List dead letters, oldest first (without their raw messages)."""
    from orderfleet.worker import dead_letters

    letters = dead_letters.list_dead_letters(checked_runtime().sessions, reason, limit)
    if json_output:
        print_json(letters)
        return
    columns = ("id", "receivedAt", "reason", "orderId", "eventId", "replayedAt")
    table = new_table(plural(len(letters), "dead letter"), *columns, "error")
    for letter in letters:
        table.add_row(*(cell(letter[c]) for c in columns), cell(letter["error"])[:120])
    print_table(table)


@dlq_cli.command("show")
def dlq_show(
    letter_id: int = typer.Argument(..., help="The dead letter's id."),
    json_output: bool = JSON_OPTION,
) -> None:
    """Show one dead letter with its raw message; exit 1 when there is no such dead letter."""
    from orderfleet.worker import dead_letters

    letter = dead_letters.dead_letter(checked_runtime().sessions, letter_id)
    if letter is None:
        fail(f"dead letter {letter_id} not found", 1)
    if json_output:
        print_json(letter)
        return
    table = new_table(f"dead letter {letter_id}", "field", "value")
    for key, value in letter.items():
        table.add_row(key, cell(value))
    print_table(table)


@dlq_cli.command("replay")
def dlq_replay(
    letter_id: int | None = typer.Argument(None, help="The dead letter to replay."),
    event: str | None = typer.Option(
        None, "--event", help="Send this fixed-up event instead: a JSON file, or '-' for stdin."
    ),
    reason: str | None = typer.Option(None, help="Replay every unreplayed one of this reason."),
) -> None:
    """Send dead letters back through validation to a worker (step 1), marking them replayed."""
    if (letter_id is None) == (reason is None):
        fail("give either a dead letter ID or --reason")
    if event is not None and letter_id is None:
        fail("--event goes with a single dead letter ID")
    fixed = None if event is None else read_event(event)
    runtime = checked_runtime((DATABASE, BROKER))
    if letter_id is not None:
        replay_one(runtime, letter_id, fixed)
    elif reason is not None:
        replay_all(runtime, reason)


def read_event(path: str) -> str:
    """The text of a fixed-up event from a file, or stdin for '-'."""
    if path == "-":
        return sys.stdin.read()
    try:
        return Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        fail(f"--event {path}: {exc.strerror or exc}")


def replay_one(runtime: Runtime, letter_id: int, fixed: str | None) -> None:
    """Replay one dead letter, or exit 1 when it is missing or still invalid."""
    from kombu.exceptions import OperationalError as BrokerError
    from orderfleet.models import InvalidEvent
    from orderfleet.worker import dead_letters

    try:
        sent = dead_letters.replay_dead_letter(celery_app(), runtime, letter_id, fixed)
    except dead_letters.NotFound as exc:
        fail(str(exc), 1)
    except InvalidEvent as exc:
        fail(f"dead letter {letter_id} is still invalid, not replayed: {exc}", 1)
    except BrokerError as exc:
        fail(f"cannot reach the broker: {exc}")
    typer.echo(
        f"replayed dead letter {letter_id}: event {sent.event_id} of order {sent.order_id} "
        f"sent to {sent.task_name} on {sent.queue}"
    )


def replay_all(runtime: Runtime, reason: str) -> None:
    """Replay every unreplayed dead letter of a reason; exit 1 when some are still invalid."""
    from kombu.exceptions import OperationalError as BrokerError
    from orderfleet.worker import dead_letters

    try:
        replayed, refused = dead_letters.replay_reason(celery_app(), runtime, reason)
    except BrokerError as exc:
        fail(f"cannot reach the broker: {exc}")
    typer.echo(f"replayed {plural(len(replayed), 'dead letter')} of reason {reason}")
    for letter in refused:
        typer.secho(
            f"dead letter {letter.letter_id} is still invalid, not replayed: {letter.error}",
            fg=typer.colors.YELLOW,
            err=True,
        )
    if refused:
        raise typer.Exit(1)


@dlq_cli.command("purge")
def dlq_purge(
    before: str = typer.Option(..., help="Delete dead letters received before this RFC 3339 time."),
    reason: str | None = typer.Option(None, help="Only dead letters of this reason."),
) -> None:
    """Delete old dead letters and print how many."""
    from orderfleet.models.wire import WireError, to_instant
    from orderfleet.worker import dead_letters

    try:
        cutoff = to_instant(before)
    except WireError as exc:
        fail(f"--before {before!r} {exc}")
    purged = dead_letters.purge_dead_letters(checked_runtime().sessions, cutoff, reason)
    typer.echo(f"purged {plural(purged, 'dead letter')}")


# verify / rebuild


@cli.command()
def verify(json_output: bool = JSON_OPTION) -> None:
    """Compare every stored order with its event log; exit 1 when any diverges."""
    from orderfleet.worker.service import verify as divergent_orders

    found = list(divergent_orders(checked_runtime().sessions))
    rows = [{"orderId": d.order_id, "fields": list(d.fields)} for d in found]
    if json_output:
        print_json(rows)
    else:
        for row in rows:
            typer.echo(f"{row['orderId']}: {', '.join(row['fields'])}")
        typer.echo(f"{plural(len(rows), 'divergent order')}")
    raise typer.Exit(1 if rows else 0)


@cli.command()
def rebuild(
    order_id: str | None = typer.Argument(None, help="The order to rebuild (default: all)."),
) -> None:
    """Recompute orders from their event logs; corrections go out through the outbox relay."""
    from orderfleet.worker import rebuild

    runtime = checked_runtime()
    if order_id is not None:
        state = rebuild.rebuild_order(runtime, order_id)
        if state is None:
            fail(f"order {order_id!r} not found", 1)
        typer.echo(f"rebuilt order {order_id}: status {state.status}")
        return
    rebuilt = sum(1 for _ in rebuild.rebuild_all(runtime))
    typer.echo(f"rebuilt {plural(rebuilt, 'order')}")


# partitions / flower


@cli.command()
def partitions(
    timeout: float = typer.Option(1.0, help="Seconds to wait for workers to report queues."),
    record: bool = typer.Option(
        False, "--record", help="Record ORDERFLEET_PARTITIONS as the fleet's count (after a drain)."
    ),
    json_output: bool = JSON_OPTION,
) -> None:
    """Depth and consumers of every queue; exit 1 when messages wait outside the fleet's P."""
    from orderfleet.worker import broker_queues
    from orderfleet.worker.partition_count import record_partitions, recorded_partitions

    use_servers([BROKER], Embedded.ATTACH)
    settings = load_settings()
    prefix = settings.broker_prefix
    with broker_client(settings) as client:
        if record:
            record_partitions(client, prefix, settings.partitions, force=True)
        recorded = recorded_partitions(client, prefix)
        depths = broker_queues.partition_depths(client, prefix, settings.partitions)
        stray = broker_queues.stray_partition_queues(client, prefix, settings.partitions)
    consumers = broker_queues.queue_consumers(celery_app(), timeout)
    rows = broker_queues.partition_report(depths, consumers)
    if json_output:
        print_json(
            {
                "partitions": settings.partitions,
                "recorded": recorded,
                "queues": rows,
                "outside": [{"queue": q, "depth": d} for q, d in stray.items()],
            }
        )
    else:
        table = new_table(f"{settings.partitions} partitions", "queue", "depth", "consumers")
        for row in rows:
            table.add_row(row["queue"], str(row["depth"]), str(row["consumers"]))
        print_table(table)
        typer.echo(f"partition count recorded on the broker: {recorded or 'none'}")
    for queue, depth in stray.items():
        typer.secho(
            f"orderfleet: {depth} messages wait in {queue}, outside this fleet's "
            f"{settings.partitions} partitions: no worker consumes them",
            fg=typer.colors.RED,
            err=True,
        )
    raise typer.Exit(
        1 if stray or (recorded is not None and recorded != settings.partitions) else 0
    )


@cli.command()
def ledger(json_output: bool = JSON_OPTION) -> None:
    """Messages taken from the broker against outcomes committed, per queue; exit 1 on a loss."""
    from orderfleet.worker import broker_queues

    runtime = checked_runtime((DATABASE, BROKER))
    settings = runtime.settings
    with broker_client(settings) as client:
        rows = broker_queues.message_ledger(client, settings.broker_prefix, runtime.sessions)
    if json_output:
        print_json(rows)
    else:
        table = new_table("message ledger", "queue", "taken", "ended", "in flight", "lost")
        for row in rows:
            cells = (row["taken"], row["ended"], row["in_flight"], row["lost"])
            table.add_row(row["queue"], *(f"{n:,}" for n in cells))
        print_table(table)
    lost = sum(row["lost"] for row in rows)
    if lost:
        typer.secho(f"orderfleet: {lost} messages taken without an outcome", fg="red", err=True)
    raise typer.Exit(1 if lost else 0)


@cli.command()
def flower(
    port: int | None = typer.Option(None, help="HTTP port (default ORDERFLEET_FLOWER_PORT)."),
    no_auth: bool = typer.Option(
        False, "--no-auth", help="Run without basic auth (only on a trusted network)."
    ),
) -> None:
    """Run Flower with basic auth from ORDERFLEET_FLOWER_AUTH (user:password)."""
    from orderfleet.worker import flower_args

    settings = load_settings()
    auth = None
    if not no_auth:
        try:
            auth = flower_args.flower_auth(settings)
        except ValueError as exc:
            fail(str(exc))
    use_servers([BROKER], Embedded.ATTACH)
    argv = flower_args.flower_argv(settings.flower_port if port is None else port, auth)
    raise typer.Exit(celery_app().start(argv) or 0)


def main() -> None:
    try:
        cli()
    except SettingsError as exc:
        typer.secho(f"orderfleet: {redact(str(exc))}", fg=typer.colors.RED, err=True)
        sys.exit(2)
