"""Bench traffic: orders of the five event types, out of order, a share of them re-delivered."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from typing import Any

T0 = datetime(2026, 1, 1, 10, tzinfo=UTC)
REDELIVER = 0.3
WINDOW = 500


def traffic(
    messages: int, seed: int, tag: str, redeliver: float = REDELIVER, window: int = WINDOW
) -> list[dict[str, Any]]:
    """Exactly `messages` wire events: distinct ones plus re-deliveries, shuffled in windows."""
    rng = random.Random(seed)
    distinct = max(1, round(messages / (1 + redeliver)))
    events = _distinct(min(distinct, messages), rng, tag)
    return _deliveries(events, messages, rng, window)


def _distinct(count: int, rng: random.Random, tag: str) -> list[dict[str, Any]]:
    """Orders' events until `count`, each with an explicit eventId."""
    events: list[dict[str, Any]] = []
    orders = 0
    while len(events) < count:
        events += order_events(f"{tag}-o{orders}", rng)
        orders += 1
    events = events[:count]
    for number, event in enumerate(events):
        event["eventId"] = f"{tag}-e{number}"
    return events


def _deliveries(
    events: list[dict[str, Any]], messages: int, rng: random.Random, window: int
) -> list[dict[str, Any]]:
    """Every event once plus re-deliveries near it, shuffled within windows of `window`."""
    extra = [rng.randrange(len(events)) for _ in range(messages - len(events))]
    by_window: dict[int, list[int]] = {}
    for index in extra:
        by_window.setdefault(index // window, []).append(index)
    sent: list[dict[str, Any]] = []
    for start in range(0, len(events), window):
        chunk = events[start : start + window]
        chunk += [events[i] for i in by_window.get(start // window, [])]
        rng.shuffle(chunk)
        sent += chunk
    return sent


def order_events(order_id: str, rng: random.Random) -> list[dict[str, Any]]:
    """One order's events: created, reserved, paid (maybe failed first), shipped, loyalty."""

    def at(minutes: int) -> str:
        return (T0 + timedelta(minutes=minutes, seconds=rng.randint(0, 59))).isoformat()

    total = rng.choice(["99.99", "10.00", "250.50"])
    paid = total if rng.random() < 0.9 else "1.00"
    base = {"orderId": order_id}
    events = [
        {
            **base,
            "eventType": "OrderCreated",
            "timestamp": at(0),
            "customerId": f"c-{rng.randint(1, 500)}",
            "totalAmount": total,
            "currency": "USD",
            "items": [{"sku": "s-1", "quantity": 2, "unitPrice": "1.00"}],
        },
        {
            **base,
            "eventType": "InventoryReserved",
            "timestamp": at(1),
            "warehouseId": "w-1",
            "reservedItems": {"s-1": rng.choice([0, 2, 2, 2, 2])},
        },
        {
            **base,
            "eventType": "PaymentProcessed",
            "timestamp": at(2),
            "transactionId": "t-1",
            "amount": paid,
            "status": rng.choice(["failed", "successful", "successful", "pending"]),
            "method": "card",
        },
        {
            **base,
            "eventType": "ShippingCalculated",
            "timestamp": at(2),
            "shippingCost": "4.99",
            "estimatedDays": rng.randint(1, 9),
            "carrierOptions": [{"name": "post", "cost": "4.99", "estimatedDays": 3}],
        },
        {
            **base,
            "eventType": "LoyaltyPointsUpdated",
            "timestamp": at(4),
            "pointsEarned": 10,
            "totalPoints": rng.randint(10, 900),
            "tierStatus": "silver",
        },
    ]
    if rng.random() < 0.3:
        events.append(
            {**events[2], "timestamp": at(3), "transactionId": "t-2", "status": "successful"}
        )
    return [e for e in events if e["eventType"] == "OrderCreated" or rng.random() < 0.92]
