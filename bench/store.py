"""(e) A pre-filled store: N orders and their events inserted with SQL, not via the fleet."""

from __future__ import annotations

import random
import time
from typing import Any

from orderfleet.models import content_hash, parse_event
from orderfleet.models.state import OrderState
from orderfleet.models.tables import Base
from orderfleet.models.wire import dumps
from orderfleet.worker.dev.workload import compact_order
from sqlalchemy import Engine, text

MARK = "__ORDER__"
TAG = "store"
KINDS = ("OrderCreated", "InventoryReserved")  # an order in progress
CHUNK = 250_000  # orders per INSERT statement

ORDERS_SQL = """
INSERT INTO orders (order_id, version, status, completeness, event_count, decision_seq,
                    last_event_at, document, created_at, updated_at)
SELECT :tag || '-o' || g, :version, :status, :completeness, :event_count, 0,
       CAST(:last_event_at AS timestamptz), CAST(replace(:document, :mark, :tag || '-o' || g)
       AS jsonb), now(), now()
FROM generate_series(CAST(:first AS bigint), CAST(:last AS bigint)) AS g
"""

EVENTS_SQL = """
INSERT INTO order_events (event_id, order_id, event_type, event_at, raw, content_hash,
                          deliveries, received_at, applied_at)
SELECT replace(:event_id, :mark, :tag || '-o' || g), :tag || '-o' || g, :event_type,
       CAST(:event_at AS timestamptz), CAST(replace(:raw, :mark, :tag || '-o' || g) AS jsonb),
       md5(:hash || g) || md5(g || :hash), 1, now(), now()
FROM generate_series(CAST(:first AS bigint), CAST(:last AS bigint)) AS g
"""


def template() -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """One order's row values and its events' rows, with MARK where the orderId goes."""
    raws = [e for e in compact_order(MARK, random.Random(11)) if e["eventType"] in KINDS]
    state = OrderState(order_id=MARK)
    events = []
    for number, raw in enumerate(raws):
        raw["eventId"] = f"{MARK}-e{number}"
        event = parse_event(raw)
        state = state.apply(event)
        events.append(_event_row(event))
    order = {
        "version": state.version,
        "status": state.status,
        "completeness": state.completeness,
        "event_count": state.event_count,
        "last_event_at": state.last_event_at.isoformat() if state.last_event_at else None,
        "document": dumps(state.to_document()),
    }
    return order, events


def _event_row(event: Any) -> dict[str, Any]:
    """The values of an order_events row of this (template) event."""
    return {
        "event_id": event.event_id,
        "event_type": event.event_type,
        "event_at": event.timestamp.isoformat(),
        "raw": dumps(event.to_wire()),
        "hash": content_hash(event)[:16],
    }


def prefill(engine: Engine, orders: int, start: int = 0) -> dict[str, Any]:
    """Insert orders start+1..orders and their events, then VACUUM ANALYZE; counts, seconds."""
    started = time.perf_counter()
    order, events = template()
    for first in range(start + 1, orders + 1, CHUNK):
        bounds = {"first": first, "last": min(orders, first + CHUNK - 1), "mark": MARK, "tag": TAG}
        with engine.begin() as conn:
            conn.execute(text(ORDERS_SQL), {**order, **bounds})
            for event in events:
                conn.execute(text(EVENTS_SQL), {**event, **bounds})
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text("VACUUM ANALYZE orders, order_events"))
    seconds = time.perf_counter() - started
    return {"orders": orders, "events": orders * len(events), "fill_seconds": round(seconds, 1)}


def clear_except_store(engine: Engine) -> None:
    """Empty every table but the pre-filled orders and events; delete the other rows there."""
    kept = {"orders", "order_events"}
    names = ", ".join(t.name for t in Base.metadata.sorted_tables if t.name not in kept)
    pattern = {"pattern": f"{TAG}-o%"}
    with engine.begin() as conn:
        conn.execute(text(f"TRUNCATE {names} RESTART IDENTITY"))
        conn.execute(text("DELETE FROM order_events WHERE order_id NOT LIKE :pattern"), pattern)
        conn.execute(text("DELETE FROM orders WHERE order_id NOT LIKE :pattern"), pattern)
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text("VACUUM orders, order_events"))
