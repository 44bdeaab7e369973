"""The batch service on real PostgreSQL and Redis: every event of a batch ends on its own.

Bulk messages with invalid, duplicate, conflicting and wrong-partition events; locked and
concurrently changed orders retried alone; a poison event isolated; malformed bulk messages.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator

import pytest
from celery import Celery
from orderfleet.models import parse_event
from orderfleet.models.tables import DeadLetterRow, EventRow, OrderRow, OutboxRow
from orderfleet.worker import service
from orderfleet.worker.batch import Received, apply_batch
from orderfleet.worker.dev.workload import order_traffic
from orderfleet.worker.locks import LockNotAcquired
from orderfleet.worker.outbox import mark_sent
from orderfleet.worker.routing import BATCH_TASK, TASK_FOR_TYPE, queue_for
from orderfleet.worker.servers import broker_url_of_redis
from orderfleet.worker.store import OrderRepository, VersionConflict
from sqlalchemy import func, select, text

from tests.unit.factories import wire

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]


@pytest.fixture
def app(redis_server_url, key_prefix) -> Iterator[Celery]:
    """A producer app on the test's key prefix (decisions are published here)."""
    app = Celery("test-batch", set_as_current=False)
    app.conf.update(
        broker_url=broker_url_of_redis(redis_server_url),
        broker_transport_options={"global_keyprefix": key_prefix},
        task_serializer="json",
    )
    yield app
    app.close()


def bulk(events, queue=None) -> Received:
    return Received(BATCH_TASK, (), {"events": list(events)}, queue or "orderfleet.p000")


def single(event) -> Received:
    return Received(TASK_FOR_TYPE[event["eventType"]], (), {"event": event}, "orderfleet.p000")


def created(order_id: str, n: int = 0, **fields) -> dict:
    return wire(
        "OrderCreated",
        order_id=order_id,
        at=n,
        event_id=f"{order_id}-created-{n}",
        customerId="c-1",
        totalAmount="10.00",
        currency="USD",
        items=[],
        **fields,
    )


def paid(order_id: str, n: int = 1) -> dict:
    return wire(
        "PaymentProcessed",
        order_id=order_id,
        at=n,
        event_id=f"{order_id}-paid-{n}",
        transactionId="t-1",
        amount="10.00",
        status="successful",
        method="card",
    )


def rows(sessions, model) -> int:
    with sessions() as s:
        return s.scalar(select(func.count()).select_from(model))


def letters(sessions) -> Counter:
    with sessions() as s:
        return Counter(s.scalars(select(DeadLetterRow.reason)))


def stored(sessions, order_id):
    with sessions() as s:
        return OrderRepository(s).get(order_id)


def test_a_bulk_message_ends_each_event_on_its_own(app, runtime, sessions):
    first = [created("o-1"), paid("o-1")]
    assert [e.ended for e in apply_batch(app, runtime, [bulk(first)])] == [True]
    conflicting = {**created("o-1"), "totalAmount": "11.00"}  # same eventId, other content
    invalid = {"eventType": "PaymentProcessed", "orderId": "o-2"}  # no timestamp
    elsewhere = created("o-far")  # another partition than the message's queue
    events = [paid("o-1"), conflicting, invalid, created("o-2"), created("o-2"), elsewhere]
    (end,) = apply_batch(app, runtime, [bulk(events)])
    assert end.ended
    assert end.counts["applied"] == 2  # o-2 and o-far
    assert end.counts["duplicate"] == 2  # paid(o-1) again, o-2's second copy
    assert end.counts["dead_letter:event_id_conflict"] == 1
    assert end.counts["dead_letter:invalid_event"] == 1
    assert letters(sessions) == {"event_id_conflict": 1, "invalid_event": 1}
    assert rows(sessions, EventRow) == 4
    assert stored(sessions, "o-1").customer.total_amount == parse_event(first[0]).total_amount
    assert queue_for("o-far", 8) != "orderfleet.p000"
    assert stored(sessions, "o-far").event_count == 1


def test_documents_equal_the_projection_and_the_ledger_counts_messages(app, runtime, sessions):
    traffic = order_traffic(40, seed=7)
    messages = [bulk(traffic[i : i + 70]) for i in range(0, len(traffic), 70)]
    messages += [single(e) for e in traffic[:30]]  # re-deliveries, one message each
    ends = apply_batch(app, runtime, messages)
    assert all(e.ended for e in ends)
    by_order: dict[str, list] = {}
    for event in traffic:
        by_order.setdefault(event["orderId"], []).append(parse_event(event))
    for order_id, events in by_order.items():
        assert service.divergence(stored(sessions, order_id), events) is None
        assert stored(sessions, order_id).event_count == len({e.event_id for e in events})
    with sessions() as s:
        assert s.execute(text("SELECT sum(ended) FROM message_ledger")).scalar() == len(messages)


def test_a_locked_order_is_handed_back_alone(app, runtime, sessions):
    lock = runtime.redis.lock(f"{runtime.settings.lock_prefix}o-busy", timeout=30)
    assert lock.acquire(blocking=False)
    try:
        (end,) = apply_batch(app, runtime, [bulk([created("o-busy"), created("o-free")])])
    finally:
        lock.release()
    assert not end.ended and not end.whole
    assert [e["orderId"] for e in end.retry] == ["o-busy"]
    assert isinstance(end.cause, LockNotAcquired)
    assert end.counts["applied"] == 1 and stored(sessions, "o-busy") is None
    with sessions() as s:  # the message has not ended: its retry will
        assert s.execute(text("SELECT count(*) FROM message_ledger")).scalar() == 0


def test_an_order_changed_by_another_writer_is_retried_alone(app, runtime, sessions, monkeypatch):
    apply_batch(app, runtime, [single(created("o-1"))])
    rows = OrderRepository.rows
    calls = []

    def changed_once(self):
        if not calls:  # another writer commits o-1 between our read and our write
            calls.append(1)
            self.session.connection().execute(
                text("UPDATE orders SET version = version + 10 WHERE order_id = 'o-1'")
            )
        return rows(self)

    monkeypatch.setattr(OrderRepository, "rows", changed_once)
    (end,) = apply_batch(app, runtime, [bulk([paid("o-1"), created("o-2")])])
    assert isinstance(end.cause, VersionConflict) and end.cause.order_ids == {"o-1"}
    assert [e["orderId"] for e in end.retry] == ["o-1"]
    assert end.counts["applied"] == 1
    assert stored(sessions, "o-2").event_count == 1 and stored(sessions, "o-1").payment is None


def test_a_poison_event_is_dead_lettered_alone(app, runtime, sessions, monkeypatch):
    real = service.apply_events

    def poisoned(uow, batch, now, **kwargs):
        if any(item.event.order_id == "o-poison" for item in batch):
            raise ZeroDivisionError("a bug that only this event reaches")
        return real(uow, batch, now, **kwargs)

    monkeypatch.setattr("orderfleet.worker.batch.apply_events", poisoned)
    events = [created("o-a"), created("o-poison"), created("o-b")]
    ends = apply_batch(app, runtime, [bulk(events), single(created("o-c"))])
    assert all(e.ended for e in ends)
    assert ends[0].counts == {"applied": 2, "dead_letter:internal_error": 1}
    assert letters(sessions) == {"internal_error": 1}
    with sessions() as s:
        assert set(s.scalars(select(OrderRow.order_id))) == {"o-a", "o-b", "o-c"}
        letter = s.scalars(select(DeadLetterRow)).one()
        assert "ZeroDivisionError" in letter.error and letter.order_id == "o-poison"


@pytest.mark.parametrize(
    ("kwargs", "size", "rule"),
    [
        ({"events": []}, 10, "events: must be a list of 1 to 1000 events, got 0"),
        ({"events": [{}] * 1001}, 10, "got 1001"),
        ({"events": "nope"}, 10, "got str"),
        ({"event": {}}, 10, "expected exactly one keyword argument `events`"),
        ({"events": [{"a": 1}]}, 1024 * 1024 + 1, "bulk message is at most 1 MiB"),
    ],
)
def test_a_malformed_bulk_message_is_dead_lettered(app, runtime, sessions, kwargs, size, rule):
    message = Received(BATCH_TASK, (), kwargs, "orderfleet.p000", size)
    (end,) = apply_batch(app, runtime, [message])
    assert end.ended and end.counts == {"dead_letter:invalid_message": 1}
    with sessions() as s:
        assert rule in s.scalars(select(DeadLetterRow.error)).one()


def test_copies_of_an_event_in_one_batch_each_count_as_a_delivery(app, runtime, sessions):
    event = created("o-1")
    apply_batch(app, runtime, [single(event), single(event), bulk([event, event])])
    apply_batch(app, runtime, [single(event), single(event)])
    with sessions() as s:
        assert s.scalar(select(EventRow.deliveries)) == 6


def test_sent_decisions_are_marked_published_by_the_next_commit_or_when_quiet(
    app, runtime, sessions
):
    traffic = order_traffic(20, seed=11)
    orders = sorted({e["orderId"] for e in traffic})
    first, second = orders[:10], orders[10:]
    apply_batch(app, runtime, [bulk(e for e in traffic if e["orderId"] in first)])
    sent_first = unpublished(sessions)
    assert sent_first  # sent after the commit, not marked yet
    apply_batch(app, runtime, [bulk(e for e in traffic if e["orderId"] in second)])
    sent_second = unpublished(sessions)
    assert sent_second and not sent_second & sent_first  # the next commit marked the first
    mark_sent(runtime)  # a quiet worker marks the rest in one statement
    assert not unpublished(sessions)


def unpublished(sessions) -> set[str]:
    with sessions() as s:
        return set(s.scalars(select(OutboxRow.decision_id).where(OutboxRow.published_at.is_(None))))
