"""`orderfleet rebuild`: recompute orders from their event logs, one transaction per order."""

from __future__ import annotations

from collections.abc import Iterator

from orderfleet.models import OrderState
from orderfleet.worker.runtime import Runtime
from orderfleet.worker.service import rebuild
from orderfleet.worker.store import VersionConflict, stream_orders

REBUILD_ATTEMPTS = 3


def rebuild_order(runtime: Runtime, order_id: str) -> OrderState | None:
    """Recompute one order from its event log; retried when a worker wrote it meanwhile."""
    for _ in range(REBUILD_ATTEMPTS - 1):
        try:
            return rebuild(runtime.unit_of_work(), order_id, runtime.now())
        except VersionConflict:
            continue
    return rebuild(runtime.unit_of_work(), order_id, runtime.now())


def rebuild_all(runtime: Runtime, page_size: int = 1000) -> Iterator[OrderState]:
    """Recompute every stored order from its event log (streaming, in id order)."""
    for stored in stream_orders(runtime.sessions, page_size):
        state = rebuild_order(runtime, stored.order_id)
        if state is not None:
            yield state
