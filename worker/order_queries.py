"""Orders as the operator commands read them: one document, summaries, the export.

Each function takes a session factory and returns JSON-ready dicts, so the CLI only formats.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

from orderfleet.models import OrderState
from orderfleet.models.tables import OrderRow
from orderfleet.models.wire import format_instant
from orderfleet.worker.settings import Settings
from orderfleet.worker.store import stream_orders
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

ACTIVE_STATUSES = ("pending", "processing")


def order_document(sessions: sessionmaker[Session], order_id: str) -> dict[str, Any] | None:
    """The Order document of one order (docs/design.md §2) with its row version, or None."""
    with sessions() as session:
        row = session.get(OrderRow, order_id)
        return None if row is None else _document(row)


def _document(row: OrderRow) -> dict[str, Any]:
    """The stored document in the contract's key order, row version injected."""
    return OrderState.from_document({**row.document, "version": row.version}).to_document()


def stalled_cutoff(settings: Settings, now: datetime) -> datetime:
    """Orders still active and not updated since this instant are stalled."""
    return now - timedelta(seconds=settings.stalled_after)


def list_orders(
    sessions: sessionmaker[Session],
    status: str | None = None,
    stalled_before: datetime | None = None,
    limit: int = 100,
) -> list[dict[str, Any]]:
    """Order summaries in id order, by status and/or stalled (active, not updated since)."""
    stmt = select(OrderRow).order_by(OrderRow.order_id).limit(limit)
    if status is not None:
        stmt = stmt.where(OrderRow.status == status)
    if stalled_before is not None:
        stmt = stmt.where(
            OrderRow.status.in_(ACTIVE_STATUSES), OrderRow.updated_at < stalled_before
        )
    with sessions() as session:
        return [_summary(row) for row in session.scalars(stmt)]


def _summary(row: OrderRow) -> dict[str, Any]:
    last_event_at = row.last_event_at
    return {
        "orderId": row.order_id,
        "status": row.status,
        "completeness": row.completeness,
        "eventCount": row.event_count,
        "lastEventAt": None if last_event_at is None else format_instant(last_event_at),
        "updatedAt": format_instant(row.updated_at),
        "version": row.version,
    }


def export_orders(
    sessions: sessionmaker[Session], page_size: int = 500
) -> Iterator[dict[str, Any]]:
    """Every Order document in id order, read in keyset pages (bounded memory)."""
    for state in stream_orders(sessions, page_size):
        yield state.to_document()
