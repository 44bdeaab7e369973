"""The `orderfleet` command line: run the fleet, operate it, and the dev tools.

One module per command group; this one assembles them into `cli` and is the console script
(`orderfleet.worker.cli:main`). `orderfleet --help` imports every module of this package, so
they import only what is light at module level: a command imports Celery, SQLAlchemy, pydantic
(orderfleet.models), redis-py, kombu, Rich or a dev tool when it runs.
"""

from __future__ import annotations

import sys

import typer
from orderfleet.worker.cli import (
    check,
    consistency,
    db,
    demo,
    dlq,
    fleet,
    orders,
    publish,
    queues,
    simulate,
)
from orderfleet.worker.settings import SettingsError, redact

__all__ = ["cli", "main"]

cli = typer.Typer(
    name="orderfleet",
    help="A Celery worker fleet that turns out-of-order order events into correct state.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
COMMANDS = (
    fleet.worker,
    fleet.beat,
    publish.publish,
    demo.demo,
    simulate.simulate,
    check.check,
    demo.stop,
    consistency.verify,
    consistency.rebuild,
    queues.partitions,
    queues.ledger,
    fleet.flower,
)
for command in COMMANDS:
    cli.command()(command)
cli.add_typer(db.db_cli, name="db")
cli.add_typer(orders.order_cli, name="order")
cli.add_typer(orders.orders_cli, name="orders")
cli.add_typer(dlq.dlq_cli, name="dlq")


def main() -> None:
    """The `orderfleet` console script: a settings error exits 2 with its message."""
    try:
        cli()
    except SettingsError as exc:
        typer.secho(f"orderfleet: {redact(str(exc))}", fg=typer.colors.RED, err=True)
        sys.exit(2)
