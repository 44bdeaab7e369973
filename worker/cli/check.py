"""`orderfleet check FILE`: the store against the events a run says it published."""

from __future__ import annotations

from pathlib import Path

import typer
from orderfleet.worker.cli.connect import checked_runtime
from orderfleet.worker.cli.output import fail


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
