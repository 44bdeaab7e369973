"""The one generator of dev traffic: seeded order events, out of order, re-delivered.

Each user has its profile:
- demo and simulate, `generate`: realistic orders (below), timed arrivals, a few invalid events;
- the benchmark, `bench_traffic`: exactly N messages of compact orders, explicit eventIds, a
  share re-delivered and shuffled within windows (its shape is what bench results compare);
- the fleet tests, `order_traffic` then `deliveries_of`: whole compact orders, eventIds derived
  from the content, a share re-delivered and everything shuffled together.

Pure: no I/O and no clock, so the same arguments always give the same events. A realistic
order has an OrderCreated and, usually, an inventory reservation (sometimes zero stock,
sometimes a restock after a zero), one or more payment attempts (failed then successful, a
pending one that arrives late, a wrong amount, ...), shipping quotes and a loyalty update.
Every realistic event gets an arrival time (its source timestamp plus a network delay, now and
then a long one) and the deliveries are sorted by it, which shuffles events across and within
orders. Re-deliveries are exact copies arriving after the original; invalid events are broken
copies of valid ones.
"""

from __future__ import annotations

import copy
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from itertools import count
from random import Random
from typing import Any

Wire = dict[str, Any]
Planned = tuple[Wire, bool]  # an event and whether it arrives late

T0 = datetime(2026, 1, 1, 9, tzinfo=UTC)
OFFSETS = (UTC, UTC, UTC, timezone(timedelta(hours=1)), timezone(timedelta(hours=-5)))
ORDER_SPACING = 1.5  # seconds between two orders being opened
MEAN_DELAY = 45.0  # seconds of network/queue delay, exponential
LATE_SHARE = 0.04  # events that arrive much later (minutes)
PAYMENT_SCENARIOS = (
    ("successful", 66),
    ("failed_then_successful", 10),
    ("late_pending_then_successful", 8),
    ("failed", 5),
    ("amount_mismatch", 4),
    ("pending", 3),
    ("none", 4),
)


@dataclass(frozen=True)
class Workload:
    """The events of one simulated run: the distinct valid ones, and what is sent."""

    distinct: list[Wire]
    deliveries: list[Wire]
    invalid: list[Wire]
    order_ids: list[str]

    @property
    def duplicates(self) -> int:
        """How many deliveries are re-sends of a distinct event."""
        return len(self.deliveries) - len(self.distinct) - len(self.invalid)


@dataclass(frozen=True)
class _Timed:
    """An event and when it arrives (seconds after T0)."""

    wire: Wire
    arrival: float


def generate(
    orders: int,
    seed: int = 0,
    duplicate_rate: float = 0.3,
    invalid_rate: float = 0.002,
    prefix: str = "order-",
    start: datetime = T0,
) -> Workload:
    """The events of `orders` orders; round(rate x distinct) re-deliveries and invalid events."""
    _check(orders, duplicate_rate, invalid_rate)
    rng = Random(seed)
    order_ids = [f"{prefix}{n:06d}" for n in range(orders)]
    timed = [t for n, oid in enumerate(order_ids) for t in _order(oid, n * ORDER_SPACING, rng)]
    distinct = [t.wire for t in timed]
    resent = _redeliveries(timed, round(duplicate_rate * len(distinct)), rng)
    broken = _invalid(timed, round(invalid_rate * len(distinct)), rng)
    arrivals = sorted([*timed, *resent, *broken], key=lambda t: t.arrival)
    deliveries = [_stamp(t.wire, start) for t in arrivals]
    return Workload(
        distinct=[_stamp(w, start) for w in distinct],
        deliveries=deliveries,
        invalid=[_stamp(t.wire, start) for t in broken],
        order_ids=order_ids,
    )


def _check(orders: int, duplicate_rate: float, invalid_rate: float) -> None:
    if orders < 0:
        raise ValueError(f"orders must be >= 0, not {orders}")
    for name, rate in (("duplicate_rate", duplicate_rate), ("invalid_rate", invalid_rate)):
        if not 0 <= rate <= 1:
            raise ValueError(f"{name} must be between 0 and 1, not {rate}")


# --------------------------------------------------------------------------- one order


def _order(order_id: str, opened: float, rng: Random) -> list[_Timed]:
    """Every distinct event of one order, each with its arrival time."""
    items = _items(rng)
    total = sum((Decimal(i["unitPrice"]) * i["quantity"] for i in items), Decimal("0"))
    events = [_created(order_id, opened, items, total, rng)]
    events += _inventory(order_id, opened, items, rng)
    events += _payments(order_id, opened, total, rng)
    events += _shipping(order_id, opened, rng)
    events += _loyalty(order_id, opened, total, rng)
    return [_arrive(wire, late, rng) for wire, late in events]


def _items(rng: Random) -> list[Wire]:
    skus = rng.sample(range(1, 400), rng.randint(1, 3))
    return [
        {
            "sku": f"sku-{sku:04d}",
            "quantity": rng.randint(1, 4),
            "unitPrice": f"{rng.randint(199, 9999) / 100:.2f}",
        }
        for sku in skus
    ]


def _event(kind: str, order_id: str, at: float, rng: Random, **payload: Any) -> Wire:
    """A wire event; `timestamp` holds seconds after T0 until _stamp formats it."""
    wire: Wire = {"eventId": _uuid(rng), "eventType": kind, "orderId": order_id, "timestamp": at}
    if rng.random() < 0.1:
        del wire["eventId"]  # derived from the content, as docs/design.md §1 allows
    if rng.random() < 0.3:
        wire["correlationId"] = f"checkout-{order_id}"
    return {**wire, **payload}


def _uuid(rng: Random) -> str:
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def _created(order_id: str, at: float, items: list[Wire], total: Decimal, rng: Random) -> Planned:
    wire = _event(
        "OrderCreated",
        order_id,
        at,
        rng,
        customerId=f"cust-{rng.randint(1, 5000):05d}",
        totalAmount=str(total),
        currency=rng.choice(["USD", "USD", "EUR"]),
        items=items,
    )
    return wire, rng.random() < LATE_SHARE


def _inventory(order_id: str, opened: float, items: list[Wire], rng: Random) -> list[Planned]:
    """A reservation: usually full, sometimes zero, sometimes zero then a restock."""
    roll = rng.random()
    if roll < 0.04:
        return []
    warehouse = f"wh-{rng.randint(1, 6)}"
    full = {i["sku"]: i["quantity"] for i in items}
    zero = dict.fromkeys(full, 0)
    at = opened + rng.uniform(2, 40)
    if roll < 0.09:
        return [(_reserve(order_id, at, zero, warehouse, rng), False)]
    if roll < 0.13:
        later = at + rng.uniform(60, 600)
        restock = _reserve(order_id, later, full, f"wh-{rng.randint(1, 6)}", rng)
        return [(_reserve(order_id, at, zero, warehouse, rng), False), (restock, False)]
    return [(_reserve(order_id, at, full, warehouse, rng), rng.random() < LATE_SHARE)]


def _reserve(order_id: str, at: float, reserved: dict, warehouse: str, rng: Random) -> Wire:
    return _event(
        "InventoryReserved", order_id, at, rng, reservedItems=reserved, warehouseId=warehouse
    )


def _payments(order_id: str, opened: float, total: Decimal, rng: Random) -> list[Planned]:
    """The payment attempts of one scenario, in source order."""
    scenario = rng.choices([s for s, _ in PAYMENT_SCENARIOS], [w for _, w in PAYMENT_SCENARIOS])[0]
    first = opened + rng.uniform(5, 60)
    second = first + rng.uniform(20, 300)
    pay = _payment_factory(order_id, total, rng)
    if scenario == "none":
        return []
    if scenario == "failed_then_successful":
        return [(pay(first, "failed"), False), (pay(second, "successful"), False)]
    if scenario == "late_pending_then_successful":
        return [(pay(first, "pending"), True), (pay(second, "successful"), False)]
    if scenario == "amount_mismatch":
        return [(pay(first, "successful", _off_by(total, rng)), False)]
    status = {"successful": "successful", "failed": "failed", "pending": "pending"}[scenario]
    return [(pay(first, status), rng.random() < LATE_SHARE)]


def _payment_factory(order_id: str, total: Decimal, rng: Random) -> Callable[..., Wire]:
    def pay(at: float, status: str, amount: Decimal = total) -> Wire:
        return _event(
            "PaymentProcessed",
            order_id,
            at,
            rng,
            transactionId=f"txn-{rng.getrandbits(40):010x}",
            amount=str(amount),
            status=status,
            method=rng.choice(["card", "card", "paypal", "bank_transfer"]),
        )

    return pay


def _off_by(total: Decimal, rng: Random) -> Decimal:
    delta = Decimal(rng.randint(1, 500)) / 100
    return total + delta if total < delta or rng.random() < 0.5 else total - delta


def _shipping(order_id: str, opened: float, rng: Random) -> list[Planned]:
    """Usually one quote, sometimes a re-quote later, sometimes none."""
    if rng.random() < 0.06:
        return []
    at = opened + rng.uniform(10, 90)
    quotes = [(_quote(order_id, at, rng), rng.random() < LATE_SHARE)]
    if rng.random() < 0.1:
        quotes.append((_quote(order_id, at + rng.uniform(30, 600), rng), False))
    return quotes


def _quote(order_id: str, at: float, rng: Random) -> Wire:
    options = [
        {"name": name, "cost": f"{rng.randint(0, 2500) / 100:.2f}", "estimatedDays": days}
        for name, days in rng.sample([("ground", 6), ("express", 2), ("overnight", 1)], 2)
    ]
    chosen = rng.choice(options)
    return _event(
        "ShippingCalculated",
        order_id,
        at,
        rng,
        shippingCost=chosen["cost"],
        estimatedDays=chosen["estimatedDays"],
        carrierOptions=options,
    )


def _loyalty(order_id: str, opened: float, total: Decimal, rng: Random) -> list[Planned]:
    if rng.random() < 0.12:
        return []
    earned = int(total)
    points = earned + rng.randint(0, 20_000)
    tier = "gold" if points >= 10_000 else "silver" if points >= 2_000 else "bronze"
    wire = _event(
        "LoyaltyPointsUpdated",
        order_id,
        opened + rng.uniform(60, 900),
        rng,
        pointsEarned=earned,
        totalPoints=points,
        tierStatus=tier,
    )
    return [(wire, rng.random() < LATE_SHARE)]


def _arrive(wire: Wire, late: bool, rng: Random) -> _Timed:
    delay = rng.expovariate(1 / MEAN_DELAY)
    if late or rng.random() < LATE_SHARE:
        delay += rng.uniform(300, 3600)
    return _Timed(wire, wire["timestamp"] + delay)


# --------------------------------------------------------------------------- the stream


def _redeliveries(timed: list[_Timed], count: int, rng: Random) -> list[_Timed]:
    """Exact copies of random events (some more than once), each after its original."""
    if not timed:
        return []
    picked = rng.choices(timed, k=count)
    return [
        _Timed(copy.deepcopy(t.wire), t.arrival + rng.expovariate(1 / MEAN_DELAY)) for t in picked
    ]


def _invalid(timed: list[_Timed], count: int, rng: Random) -> list[_Timed]:
    """Broken copies of random events (a new eventId each), arriving near their originals."""
    if not timed:
        return []
    broken = []
    for t in rng.choices(timed, k=count):
        wire = {**copy.deepcopy(t.wire), "eventId": _uuid(rng)}
        breaker = rng.choice(_BREAKERS)
        broken.append(_Timed(breaker(wire), t.arrival + rng.uniform(0, 5)))
    return broken


def _naive_timestamp(wire: Wire) -> Wire:
    return {**wire, "timestamp": ("naive", wire["timestamp"])}


def _unknown_type(wire: Wire) -> Wire:
    return {**wire, "eventType": "OrderTeleported"}


def _whitespace_order_id(wire: Wire) -> Wire:
    return {**wire, "orderId": wire["orderId"] + " copy"}


def _negative_amount(wire: Wire) -> Wire:
    return {**wire, "eventType": "PaymentProcessed", "amount": "-10.00", "status": "successful"}


def _bad_currency(wire: Wire) -> Wire:
    return {**wire, "eventType": "OrderCreated", "currency": "DOLLARS", "totalAmount": "1.00"}


def _missing_timestamp(wire: Wire) -> Wire:
    return {k: v for k, v in wire.items() if k != "timestamp"}


_BREAKERS = (
    _naive_timestamp,
    _unknown_type,
    _whitespace_order_id,
    _negative_amount,
    _bad_currency,
    _missing_timestamp,
)


def _stamp(wire: Wire, start: datetime) -> Wire:
    """The wire event with its seconds-after-start turned into an RFC 3339 timestamp."""
    value = wire.get("timestamp")
    if value is None:
        return copy.deepcopy(wire)
    naive = isinstance(value, tuple)
    seconds = value[1] if naive else value
    instant = start + timedelta(microseconds=round(seconds * 1_000_000))
    return {**copy.deepcopy(wire), "timestamp": _format(instant, naive, seconds)}


def _format(instant: datetime, naive: bool, seconds: float) -> str:
    if naive:
        return instant.replace(tzinfo=None).isoformat()
    zone = OFFSETS[int(seconds * 1000) % len(OFFSETS)]
    text = instant.astimezone(zone).isoformat()
    return text.replace("+00:00", "Z") if int(seconds) % 2 else text


# --------------------------------------------------------------------------- compact traffic

COMPACT_T0 = datetime(2026, 1, 1, 10, tzinfo=UTC)
BENCH_REDELIVER = 0.3  # share of bench messages that are re-deliveries
BENCH_WINDOW = 500  # bench re-deliveries are shuffled within windows of this many events


def bench_traffic(
    messages: int,
    seed: int,
    tag: str,
    redeliver: float = BENCH_REDELIVER,
    window: int = BENCH_WINDOW,
) -> list[Wire]:
    """Exactly `messages` events of orders `{tag}-o{n}`, eventIds `{tag}-e{n}`: distinct ones
    plus a `redeliver` share of re-deliveries, shuffled within windows of `window` events."""
    rng = Random(seed)
    wanted = min(messages, max(1, round(messages / (1 + redeliver))))
    events: list[Wire] = []
    for number in count():
        if len(events) >= wanted:
            break
        events += compact_order(f"{tag}-o{number}", rng)
    events = events[:wanted]
    for number, event in enumerate(events):
        event["eventId"] = f"{tag}-e{number}"
    return _shuffled_in_windows(events, messages - len(events), rng, window)


def order_traffic(orders: int, seed: int, prefix: str = "o") -> list[Wire]:
    """The distinct events of orders `{prefix}-{n}`, in order, eventIds derived from content."""
    rng = Random(seed)
    return [e for n in range(orders) for e in compact_order(f"{prefix}-{n}", rng)]


def deliveries_of(events: list[Wire], redeliver: float, seed: int) -> list[Wire]:
    """Every event once plus int(redeliver x events) re-deliveries, all shuffled together."""
    rng = Random(seed)
    return _shuffled_in_windows(events, int(len(events) * redeliver), rng, len(events))


def _shuffled_in_windows(events: list[Wire], extra: int, rng: Random, window: int) -> list[Wire]:
    """Every event once plus `extra` re-deliveries of random ones, each shuffled within its
    original's window of `window` events."""
    picked = [rng.randrange(len(events)) for _ in range(extra)]
    window = max(1, window)
    by_window: dict[int, list[int]] = {}
    for index in picked:
        by_window.setdefault(index // window, []).append(index)
    sent: list[Wire] = []
    for start in range(0, len(events), window):
        chunk = events[start : start + window]
        chunk += [events[i] for i in by_window.get(start // window, [])]
        rng.shuffle(chunk)
        sent += chunk
    return sent


def compact_order(order_id: str, rng: Random) -> list[Wire]:
    """One small order: created, reserved, paid (maybe failed first), shipped, loyalty; each but
    OrderCreated missing now and then."""

    def at(minutes: int) -> str:
        return (COMPACT_T0 + timedelta(minutes=minutes, seconds=rng.randint(0, 59))).isoformat()

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
