"""The `orderfleet` command line: run the fleet and operate it."""

from __future__ import annotations

import sys
from pathlib import Path

import typer

from worker.settings import SettingsError, load_settings

cli = typer.Typer(
    name="orderfleet",
    help="A Celery worker fleet that turns out-of-order order events into correct state.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
db_cli = typer.Typer(help="Database schema.", no_args_is_help=True)
cli.add_typer(db_cli, name="db")


def fail(message: str, code: int = 2) -> None:
    typer.secho(f"orderfleet: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code)


def ensure_servers() -> None:
    """Start the embedded Redis / PostgreSQL for every URL that is not set."""
    settings = load_settings()
    from worker import embedded

    broker = settings.broker_url
    locks_on_broker = settings.redis_url is None and (broker or "").startswith("redis")
    if broker is None or (settings.redis_url is None and not locks_on_broker):
        embedded.ensure_redis(settings.data_dir)
    if settings.database_url is None:
        embedded.ensure_postgres(settings.data_dir)


def worker_queues(
    partitions: str | None, index: int | None, of: int | None, decisions: bool
) -> tuple[list[str], str]:
    """The queues a worker consumes and a name for it, from exactly one way of choosing."""
    from worker import routing

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
    """Run one single-threaded consumer (solo pool, prefetch 1, late ack) for some queues."""
    try:
        queues, name = worker_queues(partitions, index, of, decisions)
        settings = load_settings()
        from worker.retries import check_visibility

        check_visibility(settings)
    except (ValueError, SettingsError) as exc:
        fail(str(exc))
    ensure_servers()
    from worker.app import app

    argv = [
        "worker",
        "--pool=solo",
        "--concurrency=1",
        "--prefetch-multiplier=1",
        f"--queues={','.join(queues)}",
        f"--hostname={name}.%h.{_pid()}",
        f"--loglevel={loglevel or settings.log_level}",
        "--task-events",
        "--without-gossip",
        "--without-mingle",
    ]
    app.worker_main(argv)


def _pid() -> int:
    import os

    return os.getpid()


@cli.command()
def beat(loglevel: str = typer.Option(None, help="Log level.")) -> None:
    """Run Celery beat (the periodic outbox relay)."""
    settings = load_settings()
    ensure_servers()
    from worker.app import app

    settings.data_dir.mkdir(parents=True, exist_ok=True)
    schedule = settings.data_dir / "celerybeat-schedule"
    app.start(["beat", f"--schedule={schedule}", f"--loglevel={loglevel or settings.log_level}"])


@db_cli.command("upgrade")
def db_upgrade() -> None:
    """Apply every pending migration to the database."""
    ensure_servers()
    from worker.db import upgrade
    from worker.runtime import get_runtime

    revision = upgrade(get_runtime().engine)
    typer.echo(f"database schema at revision {revision}")


@cli.command()
def publish(
    path: Path = typer.Argument(..., help="JSON Lines file of events ('-' for stdin)."),
    batch: int = typer.Option(1000, help="Events validated and sent per pipelined batch."),
) -> None:
    """Validate and publish events from a JSON Lines file (all are checked before any is sent)."""
    from models import InvalidEvent, parse_event
    from tasks import publish_many

    lines = sys.stdin if str(path) == "-" else path.open(encoding="utf-8")
    events = []
    for number, line in enumerate(lines, 1):
        if line.strip():
            try:
                events.append(parse_event(line))
            except InvalidEvent as exc:
                fail(f"line {number}: {exc}")
    for start in range(0, len(events), batch):
        publish_many(events[start : start + batch])
    typer.echo(f"published {len(events)} events")


@cli.command()
def demo(
    orders: int = typer.Option(2000, help="How many orders of simulated traffic to publish."),
    keep_running: bool = typer.Option(False, help="Leave the fleet running afterwards."),
) -> None:
    """Run the fleet on embedded servers with simulated out-of-order traffic, then summarise."""
    from worker.demo import run_demo

    raise typer.Exit(run_demo(orders=orders, keep_running=keep_running))


@cli.command()
def stop() -> None:
    """Stop the embedded Redis and PostgreSQL of this data directory."""
    from worker import embedded

    stopped = embedded.stop(load_settings().data_dir)
    typer.echo(f"stopped: {', '.join(stopped) if stopped else 'nothing was running'}")


def main() -> None:
    try:
        cli()
    except SettingsError as exc:
        typer.secho(f"orderfleet: {exc}", fg=typer.colors.RED, err=True)
        sys.exit(2)
