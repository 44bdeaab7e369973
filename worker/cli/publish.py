"""`orderfleet publish FILE`: validate and publish events from JSON Lines."""

from __future__ import annotations

import sys
from pathlib import Path

import typer
from orderfleet.worker.cli.connect import use_servers
from orderfleet.worker.cli.output import fail
from orderfleet.worker.servers import BROKER, Embedded


def publish(
    path: Path = typer.Argument(..., help="JSON Lines file of events ('-' for stdin)."),
    batch: int = typer.Option(1000, help="Events validated and sent per pipelined batch."),
    bulk: bool = typer.Option(
        True, "--bulk/--per-event", help="Bulk messages by partition, or one message per event."
    ),
) -> None:
    """Validate and publish events from a JSON Lines file (all are checked before any is sent)."""
    from orderfleet.models import InvalidEvent, parse_event
    from orderfleet.tasks.producer import publish_many

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
