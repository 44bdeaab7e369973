"""Run the fleet's processes: `orderfleet worker`, `beat` and `flower`."""

from __future__ import annotations

import os

import typer
from orderfleet.worker import rabbitmq, routing
from orderfleet.worker.cli.connect import celery_app, use_servers
from orderfleet.worker.cli.output import fail
from orderfleet.worker.flower_args import flower_argv, flower_auth
from orderfleet.worker.retries import check_visibility
from orderfleet.worker.servers import BROKER, FLEET, Embedded
from orderfleet.worker.settings import SettingsError, load_settings


def worker_queues(
    partitions: str | None, index: int | None, of: int | None, decisions: bool
) -> tuple[list[str], str]:
    """The queues a worker consumes and a name for it, from exactly one way of choosing."""
    settings = load_settings()
    total = settings.partitions
    chosen = [partitions is not None, index is not None or of is not None, decisions]
    if sum(chosen) != 1:
        raise ValueError("choose exactly one of --partitions, --index/--of, --decisions")
    if decisions:
        dead = [rabbitmq.DEAD_LETTER_QUEUE] if rabbitmq.is_rabbitmq(settings.broker_url) else []
        return [routing.DECISIONS_QUEUE, routing.MAINTENANCE_QUEUE, *dead], "decisions"
    if partitions is not None:
        parts = routing.parse_partitions(partitions, total)
    elif index is None or of is None:
        raise ValueError("--index and --of go together")
    else:
        parts = routing.partitions_of_member(index, of, total)
    return [routing.queue_name(p) for p in parts], f"p{parts[0]}-{parts[-1]}"


def worker(
    partitions: str = typer.Option(None, help="Partitions to consume, e.g. 0-7 or 0,3,8-11."),
    index: int = typer.Option(None, help="This worker's index among --of equal workers."),
    of: int = typer.Option(None, help="How many equal workers share the partitions."),
    decisions: bool = typer.Option(
        False, help="Consume the decisions and maintenance queues (RabbitMQ: and dead letters)."
    ),
    loglevel: str = typer.Option(None, help="Log level (default ORDERFLEET_LOG_LEVEL)."),
) -> None:
    """Run one single-threaded consumer (solo pool, late ack; batches) for some queues."""
    try:
        queues, name = worker_queues(partitions, index, of, decisions)
        settings = load_settings()
        check_visibility(settings)
    except (ValueError, SettingsError) as exc:
        fail(str(exc))
    use_servers(FLEET, Embedded.START)
    argv = [
        "worker",
        "--pool=solo",
        "--concurrency=1",
        # A partition worker's prefetch covers a batch (worker/batching.py); decisions: one.
        f"--prefetch-multiplier={1 if decisions else settings.flush_size}",
        f"--queues={','.join(queues)}",
        f"--hostname={name}.%h.{os.getpid()}",
        f"--loglevel={loglevel or settings.log_level}",
        "--without-gossip",
        "--without-mingle",
        *(["--task-events"] if settings.task_events else []),
    ]
    celery_app().worker_main(argv)


def beat(loglevel: str = typer.Option(None, help="Log level.")) -> None:
    """Run Celery beat (the periodic outbox relay)."""
    settings = load_settings()
    use_servers([BROKER], Embedded.START)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    schedule = settings.data_dir / "celerybeat-schedule"
    argv = ["beat", f"--schedule={schedule}", f"--loglevel={loglevel or settings.log_level}"]
    celery_app().start(argv)


def flower(
    port: int | None = typer.Option(None, help="HTTP port (default ORDERFLEET_FLOWER_PORT)."),
    no_auth: bool = typer.Option(
        False, "--no-auth", help="Run without basic auth (only on a trusted network)."
    ),
) -> None:
    """Run Flower with basic auth from ORDERFLEET_FLOWER_AUTH (user:password)."""
    settings = load_settings()
    auth = None
    if not no_auth:
        try:
            auth = flower_auth(settings)
        except ValueError as exc:
            fail(str(exc))
    use_servers([BROKER], Embedded.ATTACH)
    argv = flower_argv(settings.flower_port if port is None else port, auth)
    raise typer.Exit(celery_app().start(argv) or 0)
