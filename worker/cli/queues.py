"""`orderfleet partitions` and `orderfleet ledger`: the broker's queues."""

from __future__ import annotations

import typer
from orderfleet.worker.cli.connect import broker_client, celery_app, checked_runtime, use_servers
from orderfleet.worker.cli.output import JSON_OPTION, print_json, print_table
from orderfleet.worker.servers import BROKER, DATABASE, Embedded
from orderfleet.worker.settings import load_settings


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
        cells = ([row["queue"], str(row["depth"]), str(row["consumers"])] for row in rows)
        print_table(f"{settings.partitions} partitions", ("queue", "depth", "consumers"), cells)
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


def ledger(json_output: bool = JSON_OPTION) -> None:
    """Messages taken from the broker against outcomes committed, per queue; exit 1 on a loss."""
    from orderfleet.worker.broker_queues import message_ledger

    runtime = checked_runtime((DATABASE, BROKER))
    settings = runtime.settings
    with broker_client(settings) as client:
        rows = message_ledger(client, settings.broker_prefix, runtime.sessions)
    if json_output:
        print_json(rows)
    else:
        columns = ("taken", "ended", "in_flight", "lost")
        cells = ([row["queue"], *(f"{row[c]:,}" for c in columns)] for row in rows)
        headers = ("queue", "taken", "ended", "in flight", "lost")
        print_table("message ledger", headers, cells)
    lost = sum(row["lost"] for row in rows)
    if lost:
        typer.secho(f"orderfleet: {lost} messages taken without an outcome", fg="red", err=True)
    raise typer.Exit(1 if lost else 0)
