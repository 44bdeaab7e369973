"""`orderfleet verify` and `orderfleet rebuild`: stored orders against their event logs."""

from __future__ import annotations

import typer
from orderfleet.worker.cli.connect import checked_runtime
from orderfleet.worker.cli.output import JSON_OPTION, fail, plural, print_json


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


def rebuild(
    order_id: str | None = typer.Argument(None, help="The order to rebuild (default: all)."),
) -> None:
    """Recompute orders from their event logs; corrections go out through the outbox relay."""
    from orderfleet.worker.rebuild import rebuild_all, rebuild_order

    runtime = checked_runtime()
    if order_id is not None:
        state = rebuild_order(runtime, order_id)
        if state is None:
            fail(f"order {order_id!r} not found", 1)
        typer.echo(f"rebuilt order {order_id}: status {state.status}")
        return
    rebuilt = sum(1 for _ in rebuild_all(runtime))
    typer.echo(f"rebuilt {plural(rebuilt, 'order')}")
