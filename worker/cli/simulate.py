"""`orderfleet simulate`: publish a seeded, out-of-order workload at a bounded rate."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer
from orderfleet.worker.cli.connect import use_servers
from orderfleet.worker.cli.output import JSON_OPTION, fail, plural, print_json
from orderfleet.worker.servers import BROKER, Embedded

if TYPE_CHECKING:
    from orderfleet.worker.dev.simulate import SimulationReport


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
