"""`orderfleet db upgrade`: the database schema."""

from __future__ import annotations

import typer
from orderfleet.worker.cli.connect import fleet_runtime, use_servers
from orderfleet.worker.servers import DATABASE, Embedded

db_cli = typer.Typer(help="Database schema.", no_args_is_help=True)


@db_cli.command("upgrade")
def db_upgrade() -> None:
    """Apply every pending migration to the database."""
    use_servers([DATABASE], Embedded.START)
    from orderfleet.worker.db import upgrade

    revision = upgrade(fleet_runtime().engine)
    typer.echo(f"database schema at revision {revision}")
