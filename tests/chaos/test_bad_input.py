"""10,000 hostile messages straight onto the partition queues, beside valid traffic.

Every hostile message must end in the dead letters with a reason naming the problem, the
workers must stay up, and the valid orders must converge exactly.
"""

from __future__ import annotations

import json
import random
import uuid
from collections import Counter
from collections.abc import Callable

import pytest
from kombu import Producer
from orderfleet.models.tables import DeadLetterRow
from orderfleet.worker.dev.workload import deliveries_of, order_traffic
from sqlalchemy import select

from tests.e2e.test_fleet import assert_converged
from tests.fleet import ledger, wait_for

pytestmark = [pytest.mark.chaos, pytest.mark.slow]

HOSTILE = 10_000
EMBED = {"callbacks": None, "errbacks": None, "chain": None, "chord": None}
T = "2026-01-01T10:00:00Z"
CREATED = {
    "eventType": "OrderCreated",
    "orderId": "bad-1",
    "timestamp": T,
    "customerId": "c",
    "totalAmount": "1",
    "currency": "USD",
}
PAYMENT = {
    "eventType": "PaymentProcessed",
    "orderId": "bad-2",
    "timestamp": T,
    "transactionId": "t",
    "amount": "1",
    "status": "successful",
}


def task_body(event: object, **kwargs: object) -> str:
    return json.dumps([[], {"event": event, **kwargs}, EMBED])


def event_of(n: int, **change: object) -> str:
    base = CREATED if n % 2 else PAYMENT
    return task_body({**base, "orderId": f"bad-{n}", **change})


# kind -> (task name or None for no header, body builder, content type, reason, error text)
Kind = tuple[str | None, Callable[[int], str | bytes], str, str, str]
KINDS: dict[str, Kind] = {
    "not_json": (
        "orderfleet.events.order_created",
        lambda n: f"{{not json {n}",
        "application/json",
        "undecodable_message",
        "cannot decode the message",
    ),
    "wrong_types": (
        "orderfleet.events.order_created",
        lambda n: task_body({**CREATED, "orderId": f"b-{n}", "totalAmount": [n]}),
        "application/json",
        "invalid_event",
        "totalAmount: must be a decimal number",
    ),
    "missing_fields": (
        "orderfleet.events.payment_processed",
        lambda n: task_body({"eventType": "PaymentProcessed", "orderId": f"b-{n}"}),
        "application/json",
        "invalid_event",
        "PaymentProcessed.timestamp: is required",
    ),
    "huge": (
        "orderfleet.events.order_created",
        lambda n: task_body({**CREATED, "orderId": f"b-{n}", "pad": "x" * 70_000}),
        "application/json",
        "invalid_event",
        "event: must be at most 65536 bytes",
    ),
    "unknown_type": (
        "orderfleet.events.order_created",
        lambda n: task_body({**CREATED, "orderId": f"b-{n}", "eventType": "Shipped"}),
        "application/json",
        "invalid_event",
        "eventType: must be one of",
    ),
    "naive_time": (
        "orderfleet.events.order_created",
        lambda n: task_body({**CREATED, "orderId": f"b-{n}", "timestamp": "2026-01-01T10:00:00"}),
        "application/json",
        "invalid_event",
        "timestamp: must carry a UTC offset",
    ),
    "negative": (
        "orderfleet.events.payment_processed",
        lambda n: task_body({**PAYMENT, "orderId": f"b-{n}", "amount": -n - 1}),
        "application/json",
        "invalid_event",
        "PaymentProcessed.amount: must be >= 0",
    ),
    "nan": (
        "orderfleet.events.payment_processed",
        lambda n: task_body({**PAYMENT, "orderId": f"b-{n}", "amount": "__NAN__"}).replace(
            '"__NAN__"', "NaN" if n % 2 else "Infinity"
        ),
        "application/json",
        "invalid_event",
        "amount: must be a finite decimal number",
    ),
    "deep": (
        "orderfleet.events.order_created",
        lambda n: "[" * 50_000 + "]" * 50_000,
        "application/json",
        "undecodable_message",
        "maximum recursion depth",
    ),
    "bad_order_id": (
        "orderfleet.events.order_created",
        lambda n: task_body(
            {**CREATED, "orderId": ["o\u2003x", "\ud800", "", "o\x00", "x" * 129][n % 5]}
        ),
        "application/json",
        "invalid_event",
        "orderId: must",
    ),
    "mismatch": (
        "orderfleet.events.loyalty_points_updated",
        lambda n: event_of(n),
        "application/json",
        "task_mismatch",
        "must be sent to orderfleet.events.",
    ),
    "wrong_kwargs": (
        "orderfleet.events.order_created",
        lambda n: json.dumps([[1, 2], {"evnt": n}, EMBED]),
        "application/json",
        "invalid_message",
        "expected exactly one keyword argument",
    ),
    "unknown_task": (
        "orderfleet.events.order_shipped",
        lambda n: event_of(n),
        "application/json",
        "unknown_task",
        "unknown task 'orderfleet.events.order_shipped'",
    ),
    "bad_shape": (
        "orderfleet.events.order_created",
        lambda n: json.dumps([n, n]),
        "application/json",
        "invalid_task",
        "malformed task message",
    ),
    "no_header": (
        None,
        lambda n: json.dumps({"hello": n}),
        "application/json",
        "unknown_message",
        "not a Celery task message",
    ),
    "pickle": (
        "orderfleet.events.order_created",
        lambda n: b"\x80\x04K\x01.",
        "application/x-python-serialize",
        "invalid_task",
        "untrusted content of type pickle",
    ),
}


def headers(task: str | None) -> dict:
    if task is None:
        return {}
    return {
        "lang": "py",
        "task": task,
        "id": str(uuid.uuid4()),
        "root_id": None,
        "parent_id": None,
        "group": None,
        "retries": 0,
        "eta": None,
        "expires": None,
    }


def send_hostile(app, partitions: int, seed: int) -> Counter:
    rng = random.Random(seed)
    names = list(KINDS)
    sent: Counter = Counter()
    with app.connection_for_write() as conn:
        producer = Producer(conn.default_channel)
        with producer.batch(max_size=500):
            for n in range(HOSTILE):
                kind = names[n % len(names)]
                task, body, content_type, _, _ = KINDS[kind]
                producer.publish(
                    body(n),
                    routing_key=f"orderfleet.p{rng.randrange(partitions):03d}",
                    exchange="",
                    content_type=content_type,
                    content_encoding="utf-8" if content_type == "application/json" else "binary",
                    headers=headers(task),
                )
                sent[kind] += 1
    return sent


def test_10000_hostile_messages_are_dead_lettered_and_valid_traffic_is_unaffected(
    fleet, sessions, monkeypatch
):
    for key, value in fleet.env.items():
        if key.startswith("ORDERFLEET_"):
            monkeypatch.setenv(key, value)
    from celery import Celery

    app = Celery(broker=fleet.env["ORDERFLEET_BROKER_URL"])
    app.conf.broker_transport_options = {"global_keyprefix": fleet.env["ORDERFLEET_BROKER_PREFIX"]}
    workers = [
        fleet.start("w0", "worker", "--partitions", "0-3"),
        fleet.start("w1", "worker", "--partitions", "4-7"),
    ]
    events = order_traffic(100, seed=9, prefix="good")
    valid = deliveries_of(events, redeliver=0.3, seed=10)
    producer = fleet.publish(valid, "valid-producer")
    sent = send_hostile(app, partitions=8, seed=11)
    assert producer.wait(120) == 0
    assert sum(sent.values()) == HOSTILE
    wait_for(lambda: ledger(sessions)[2] >= HOSTILE, 240, f"{HOSTILE} dead letters")
    wait_for(lambda: ledger(sessions)[:2] == (len(events), len(valid)), 60, "the valid traffic")
    assert ledger(sessions) == (len(events), len(valid), HOSTILE)
    assert all(w.alive() for w in workers)
    with sessions() as s:
        letters = s.execute(select(DeadLetterRow.reason, DeadLetterRow.error)).all()
    for kind, count in sent.items():
        _, _, _, reason, text = KINDS[kind]
        matched = sum(1 for r, e in letters if r == reason and text in e)
        assert matched >= count, (kind, reason, text, matched, count)
    expected_reasons = Counter()
    for kind, count in sent.items():
        expected_reasons[KINDS[kind][3]] += count
    assert Counter(r for r, _ in letters) == expected_reasons
    assert_converged(sessions, events)
