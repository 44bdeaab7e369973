"""Partition routing: a stable, language-independent map from orderId to a queue.

partition = jump_consistent_hash(first 8 bytes of SHA-256(UTF-8 orderId) as a big-endian
unsigned 64-bit integer, P). Jump hash (Lamping & Veach, 2014) moves only 1/P of the keys
when P grows by one.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from typing import Any

from orderfleet.models.wire import loads
from orderfleet.worker.settings import load_settings

EVENT_TASK_PREFIX = "orderfleet.events."
DECISION_TASK_PREFIX = "orderfleet.decisions."
MAINTENANCE_TASK_PREFIX = "orderfleet.maintenance."
DECISIONS_QUEUE = "orderfleet.decisions"
MAINTENANCE_QUEUE = "orderfleet.maintenance"
_MASK = (1 << 64) - 1
BATCH_TASK = "orderfleet.events.batch"  # bulk message: keyword argument `events`, a list
MAX_BATCH_EVENTS = 1000
MAX_BATCH_BYTES = 1024 * 1024  # a bulk message's body, at most

DECISION_TASKS = {  # decision outcome -> the task a decision is sent to (decisions queue)
    "confirmed": "orderfleet.decisions.order_confirmed",
    "rejected": "orderfleet.decisions.order_rejected",
    "on_hold": "orderfleet.decisions.order_on_hold",
}
TASK_FOR_TYPE = {  # eventType -> the event task that applies it
    "OrderCreated": "orderfleet.events.order_created",
    "InventoryReserved": "orderfleet.events.inventory_reserved",
    "PaymentProcessed": "orderfleet.events.payment_processed",
    "ShippingCalculated": "orderfleet.events.shipping_calculated",
    "LoyaltyPointsUpdated": "orderfleet.events.loyalty_points_updated",
}


def order_key(order_id: str) -> int:
    """The 64-bit digest of an order id: SHA-256 of its UTF-8, first 8 bytes, big-endian."""
    return int.from_bytes(hashlib.sha256(order_id.encode("utf-8")).digest()[:8], "big")


def jump_hash(key: int, buckets: int) -> int:
    """Jump consistent hash of a 64-bit key into [0, buckets)."""
    if buckets < 1:
        raise ValueError("buckets must be >= 1")
    b, j = -1, 0
    while j < buckets:
        b = j
        key = (key * 2862933555777941757 + 1) & _MASK
        j = int((b + 1) * ((1 << 31) / ((key >> 33) + 1)))
    return b


def partition_for(order_id: str, partitions: int) -> int:
    """The partition an order's events go to."""
    return jump_hash(order_key(order_id), partitions)


def queue_name(partition: int) -> str:
    return f"orderfleet.p{partition:03d}"


def queue_for(order_id: str, partitions: int | None = None) -> str:
    """The Celery queue an order's events go to (P from ORDERFLEET_PARTITIONS by default)."""
    if partitions is None:
        partitions = load_settings().partitions
    return queue_name(partition_for(order_id, partitions))


def parse_partitions(spec: str, partitions: int) -> list[int]:
    """'0-7' or '0,3,8-11' to a sorted list of partitions, each checked to be in range."""
    chosen: set[int] = set()
    for part in filter(None, (p.strip() for p in spec.split(","))):
        low, _, high = part.partition("-")
        try:
            first, last = int(low), int(high or low)
        except ValueError:
            raise ValueError(f"partitions {spec!r}: {part!r} is not N or N-M") from None
        if not 0 <= first <= last < partitions:
            raise ValueError(f"partitions {spec!r}: {part!r} is outside 0-{partitions - 1}")
        chosen.update(range(first, last + 1))
    if not chosen:
        raise ValueError(f"partitions {spec!r}: names no partition")
    return sorted(chosen)


def partitions_of_member(index: int, members: int, partitions: int) -> list[int]:
    """The contiguous share of worker `index` of `members` equal workers."""
    if not 0 <= index < members <= partitions:
        raise ValueError(f"--index {index} --of {members}: need 0 <= index < of <= {partitions}")
    return list(range(index * partitions // members, (index + 1) * partitions // members))


def event_order_id(event: Any) -> str | None:
    """The orderId of an event in any form a producer sends (dict, JSON text, model)."""
    if isinstance(event, str | bytes):
        try:
            event = loads(event)
        except (ValueError, RecursionError):
            return None
    if isinstance(event, Mapping):
        value = event.get("orderId", event.get("order_id"))
    else:
        value = getattr(event, "order_id", None)
    return value if isinstance(value, str) and value else None


def route_for(name: str, kwargs: Mapping[str, Any] | None, partitions: int) -> str | None:
    """The queue of a task by name; event tasks go to their order's partition."""
    if name == BATCH_TASK:
        events = (kwargs or {}).get("events")
        first = events[0] if isinstance(events, list) and events else None
        order_id = event_order_id(first)
        return queue_for(order_id, partitions) if order_id else queue_name(0)
    if name.startswith(EVENT_TASK_PREFIX):
        order_id = event_order_id((kwargs or {}).get("event"))
        return queue_for(order_id, partitions) if order_id else queue_name(0)
    if name.startswith(DECISION_TASK_PREFIX):
        return DECISIONS_QUEUE
    if name.startswith(MAINTENANCE_TASK_PREFIX):
        return MAINTENANCE_QUEUE
    return None


def all_queues(partitions: int) -> list[str]:
    return [queue_name(p) for p in range(partitions)] + [DECISIONS_QUEUE, MAINTENANCE_QUEUE]


def covers_exactly_once(ranges: Iterable[list[int]], partitions: int) -> bool:
    """Whether worker ranges cover every partition exactly once."""
    seen = [p for r in ranges for p in r]
    return sorted(seen) == list(range(partitions))
