"""`orderfleet demo` and `orderfleet stop`: the fleet on embedded servers, and stopping them."""

from __future__ import annotations

import typer
from orderfleet.worker.settings import load_settings


def demo(
    orders: int = typer.Option(2000, help="How many orders of simulated traffic to publish."),
    keep_running: bool = typer.Option(False, help="Leave the fleet running afterwards."),
) -> None:
    """Run the fleet on embedded servers with simulated out-of-order traffic, then summarise."""
    from orderfleet.worker.dev.demo import run_demo

    raise typer.Exit(run_demo(orders=orders, keep_running=keep_running))


def stop() -> None:
    """Stop the embedded Redis and PostgreSQL of this data directory."""
    from orderfleet.worker.dev import embedded

    stopped = embedded.stop(load_settings().data_dir)
    typer.echo(f"stopped: {', '.join(stopped) if stopped else 'nothing was running'}")
