"""`orderfleet order show` and `orderfleet orders list|export`: orders as the store holds them."""

from __future__ import annotations

from enum import StrEnum
from typing import Any

import typer
from orderfleet.worker.cli.connect import checked_runtime
from orderfleet.worker.cli.output import JSON_OPTION, cell, fail, plural, print_json, print_table

order_cli = typer.Typer(help="One order.", no_args_is_help=True)
orders_cli = typer.Typer(help="Many orders: list and export.", no_args_is_help=True)

SUMMARY_COLUMNS = ("orderId", "status", "completeness", "eventCount", "lastEventAt", "updatedAt")


class OrderStatus(StrEnum):
    """The status an order can have."""

    pending = "pending"
    processing = "processing"
    confirmed = "confirmed"
    rejected = "rejected"


@order_cli.command("show")
def order_show(
    order_id: str = typer.Argument(..., help="The orderId."),
    json_output: bool = JSON_OPTION,
) -> None:
    """Show an order's document (docs/design.md §2); exit 1 when there is no such order."""
    from orderfleet.worker.order_queries import order_document

    document = order_document(checked_runtime().sessions, order_id)
    if document is None:
        fail(f"order {order_id!r} not found", 1)
    if json_output:
        print_json(document)
    else:
        title = f"order {document['orderId']}"
        print_table(title, ("field", "value"), document_rows(document))


def document_rows(document: dict[str, Any]) -> list[tuple[str, str]]:
    """An order document as field/value rows; sections flattened as section.field."""
    rows: list[tuple[str, str]] = []
    for key, value in document.items():
        if isinstance(value, dict):
            rows.extend((f"{key}.{field}", cell(inner)) for field, inner in value.items())
        else:
            rows.append((key, cell(value)))
    return rows


@orders_cli.command("list")
def orders_list(
    status: OrderStatus | None = typer.Option(None, help="Only orders with this status."),
    stalled: bool = typer.Option(
        False,
        "--stalled",
        help="Only pending/processing orders not updated for ORDERFLEET_STALLED_AFTER seconds.",
    ),
    limit: int = typer.Option(100, min=1, help="At most this many orders (in id order)."),
    json_output: bool = JSON_OPTION,
) -> None:
    """List orders in id order, by status and/or stalled."""
    from orderfleet.worker.order_queries import list_orders, stalled_cutoff

    runtime = checked_runtime()
    cutoff = stalled_cutoff(runtime.settings, runtime.now()) if stalled else None
    rows = list_orders(runtime.sessions, status.value if status else None, cutoff, limit)
    if json_output:
        print_json(rows)
        return
    columns = (*SUMMARY_COLUMNS, "version")
    cells = ([cell(row[c]) for c in columns] for row in rows)
    print_table(plural(len(rows), "order"), columns, cells)


@orders_cli.command("export")
def orders_export(
    page_size: int = typer.Option(500, min=1, help="Orders read per keyset page."),
) -> None:
    """Print every order document as JSON Lines, streamed a page at a time."""
    from orderfleet.models.wire import dumps
    from orderfleet.worker.order_queries import export_orders

    for document in export_orders(checked_runtime().sessions, page_size):
        typer.echo(dumps(document))
