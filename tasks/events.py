"""The event tasks: per-event messages (`event`) and bulk messages (`events`).

A worker does not run these bodies message by message: the tasks' strategy gathers a
partition's messages into batches (worker/batching.py) and applies them together
(worker/batch.py). The bodies apply one message the same way, for a direct call (`apply`).
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from orderfleet.tasks.base import DurableTask
from orderfleet.worker.batch import Received, apply_batch
from orderfleet.worker.celery_app import app
from orderfleet.worker.routing import BATCH_TASK, TASK_FOR_TYPE
from orderfleet.worker.runtime import get_runtime


class EventTask(DurableTask):
    """Applies the events of a message; every message ends somewhere, none is lost."""

    Strategy = "orderfleet.worker.batching:strategy"

    def apply_message(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
        """Apply one message's events: a batch of one message."""
        runtime = get_runtime()
        end = apply_batch(app, runtime, [Received(self.name, args, kwargs, self.queue)])[0]
        if end.ended:
            return _status(end.counts)
        cause = end.cause or RuntimeError("not ended")
        return self.retry_or_give_up(runtime, cause, kwargs.get("event", [args, kwargs])).status


def _event_task(name: str, doc: str) -> EventTask:
    """The event task of one task name of the contract (worker/routing.py)."""

    @app.task(bind=True, base=EventTask, name=name)
    def apply(self: EventTask, *args: Any, **kwargs: Any) -> str:
        return self.apply_message(args, kwargs)

    apply.__doc__ = doc
    return apply


EVENT_TASK_FOR = {
    event_type: _event_task(name, f"A per-event message: keyword argument `event`, {event_type}.")
    for event_type, name in TASK_FOR_TYPE.items()
}
batch = _event_task(
    BATCH_TASK, "A bulk message: keyword argument `events`, 1 to 1,000 events of one partition."
)
# The tasks by name, for Python producers (`order_created.delay(event=...)`).
order_created = EVENT_TASK_FOR["OrderCreated"]
inventory_reserved = EVENT_TASK_FOR["InventoryReserved"]
payment_processed = EVENT_TASK_FOR["PaymentProcessed"]
shipping_calculated = EVENT_TASK_FOR["ShippingCalculated"]
loyalty_points_updated = EVENT_TASK_FOR["LoyaltyPointsUpdated"]


def _status(counts: Counter[str]) -> str:
    """One event's end (applied, duplicate, dead_lettered), or the counts of many."""
    ends = {k: v for k, v in counts.items() if not k.startswith("decision:")}
    if sum(ends.values()) == 1:
        (end,) = ends
        return "dead_lettered" if end.startswith("dead_letter:") else end
    return ", ".join(f"{k}={v}" for k, v in sorted(ends.items()))
