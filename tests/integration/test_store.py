"""The durable store against a real PostgreSQL: dedupe, conflicts, the version fence."""

from __future__ import annotations

import random
import threading
from datetime import UTC, datetime, timedelta

import pytest
from orderfleet.models import parse_event
from orderfleet.models.tables import DeadLetterRow, EventRow, OrderRow, OutboxRow
from orderfleet.worker.service import apply_event, divergence, rebuild, verify
from orderfleet.worker.store import UnitOfWork, VersionConflict
from sqlalchemy import func, select, text

pytestmark = pytest.mark.integration

NOW = datetime(2026, 11, 1, tzinfo=UTC)
T0 = datetime(2026, 1, 1, 10, tzinfo=UTC)


def event(kind: str, order_id: str = "o-1", minutes: int = 0, **fields):
    base = {"orderId": order_id, "timestamp": (T0 + timedelta(minutes=minutes)).isoformat()}
    payloads = {
        "OrderCreated": {"customerId": "c-1", "totalAmount": "99.99", "currency": "USD"},
        "InventoryReserved": {"reservedItems": {"sku-1": 2}, "warehouseId": "w-1"},
        "PaymentProcessed": {"transactionId": "t-1", "amount": "99.99", "status": "successful"},
        "ShippingCalculated": {"shippingCost": "5", "estimatedDays": 3},
        "LoyaltyPointsUpdated": {"pointsEarned": 10, "totalPoints": 100, "tierStatus": "gold"},
    }
    return parse_event({"eventType": kind, **base, **payloads[kind], **fields})


def count(sessions, model) -> int:
    with sessions() as s:
        return s.scalar(select(func.count()).select_from(model))


def stored(sessions, order_id: str = "o-1"):
    with UnitOfWork(sessions) as uow:
        return uow.orders.get(order_id)


def test_applied_event_creates_the_order_and_logs_it(sessions):
    outcome = apply_event(UnitOfWork(sessions), event("OrderCreated"), NOW)
    assert outcome.status == "applied"
    state = stored(sessions)
    assert state.customer.customer_id == "c-1"
    assert state.version == 1
    assert count(sessions, EventRow) == 1


def test_duplicate_changes_nothing_and_is_reported(sessions):
    created = event("OrderCreated")
    apply_event(UnitOfWork(sessions), created, NOW)
    before = stored(sessions).to_document()
    outcome = apply_event(UnitOfWork(sessions), created, NOW + timedelta(seconds=1))
    assert outcome.status == "duplicate"
    assert stored(sessions).to_document() == before
    with sessions() as s:
        assert s.scalar(select(EventRow.deliveries)) == 2


def test_event_id_conflict_goes_to_dead_letters_and_first_content_stays(sessions):
    first = event("PaymentProcessed", eventId="e-1")
    second = event("PaymentProcessed", eventId="e-1", amount="1.00")
    apply_event(UnitOfWork(sessions), first, NOW)
    outcome = apply_event(UnitOfWork(sessions), second, NOW)
    assert (outcome.status, outcome.reason) == ("dead_lettered", "event_id_conflict")
    assert stored(sessions).payment.amount == first.amount
    with sessions() as s:
        letter = s.scalars(select(DeadLetterRow)).one()
    assert (letter.reason, letter.event_id, letter.order_id) == ("event_id_conflict", "e-1", "o-1")
    assert '"amount":"1"' in letter.raw


def test_decision_is_written_to_the_outbox_in_the_same_transaction(sessions):
    for kind in ("OrderCreated", "InventoryReserved", "PaymentProcessed"):
        outcome = apply_event(UnitOfWork(sessions), event(kind), NOW)
    assert outcome.decision.outcome == "confirmed"
    with sessions() as s:
        row = s.scalars(select(OutboxRow)).one()
    assert (row.seq, row.outcome, row.published_at) == (1, "confirmed", None)
    assert row.payload["decisionId"] == outcome.decision.decision_id


class PausingUnitOfWork(UnitOfWork):
    """Waits at a barrier after loading, so two writers read the same version."""

    def __init__(self, sessions, barrier: threading.Barrier) -> None:
        super().__init__(sessions)
        self.barrier = barrier

    def __enter__(self):
        uow = super().__enter__()
        get_many = uow.orders.get_many

        def paused(order_ids):
            found = get_many(order_ids)
            self.barrier.wait(timeout=10)
            return found

        uow.orders.get_many = paused
        return uow


def test_concurrent_writers_one_gets_version_conflict_and_retry_converges(sessions):
    apply_event(UnitOfWork(sessions), event("OrderCreated"), NOW)
    barrier = threading.Barrier(2)
    pair = [event("InventoryReserved"), event("PaymentProcessed")]
    results: dict[str, object] = {}

    def write(e):
        try:
            results[e.event_id] = apply_event(PausingUnitOfWork(sessions, barrier), e, NOW).status
        except VersionConflict as exc:
            results[e.event_id] = exc

    threads = [threading.Thread(target=write, args=(e,)) for e in pair]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    conflicts = [e for e in pair if isinstance(results[e.event_id], VersionConflict)]
    assert len(conflicts) == 1
    assert apply_event(UnitOfWork(sessions), conflicts[0], NOW).status == "applied"
    state = stored(sessions)
    assert (state.inventory is not None, state.payment is not None) == (True, True)
    assert state.event_count == 3 and state.status == "confirmed"


def test_concurrent_creation_of_a_new_order_is_a_version_conflict(sessions):
    barrier = threading.Barrier(2)
    pair = [event("OrderCreated"), event("PaymentProcessed")]
    errors = []

    def write(e):
        try:
            apply_event(PausingUnitOfWork(sessions, barrier), e, NOW)
        except VersionConflict as exc:
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(e,)) for e in pair]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert len(errors) == 1
    assert stored(sessions).event_count == 1


def test_write_with_a_stale_version_is_rejected(sessions):
    apply_event(UnitOfWork(sessions), event("OrderCreated"), NOW)
    with UnitOfWork(sessions) as uow:
        state = uow.orders.get("o-1")
        with sessions.begin() as other:
            other.execute(text("UPDATE orders SET version = version + 1"))
        uow.orders.save(state.apply(event("PaymentProcessed")), NOW)
        with pytest.raises(VersionConflict):
            uow.commit()
    assert stored(sessions).payment is None


def test_crash_after_the_reducer_before_commit_leaves_no_trace(sessions, monkeypatch):
    def crash(self):
        raise RuntimeError("power cut")

    monkeypatch.setattr(UnitOfWork, "commit", crash)
    with pytest.raises(RuntimeError, match="power cut"):
        apply_event(UnitOfWork(sessions), event("OrderCreated"), NOW)
    monkeypatch.undo()
    assert (count(sessions, OrderRow), count(sessions, EventRow), count(sessions, OutboxRow)) == (
        0,
        0,
        0,
    )


def shuffled_traffic(orders: int, seed: int):
    rng = random.Random(seed)
    events = []
    for n in range(orders):
        oid = f"o-{n}"
        status = rng.choice(["successful", "failed", "pending"])
        events += [
            event("OrderCreated", oid, rng.randint(0, 5), totalAmount=rng.choice(["10", "20"])),
            event(
                "InventoryReserved", oid, rng.randint(0, 5), reservedItems={"a": rng.randint(0, 2)}
            ),
            event("PaymentProcessed", oid, rng.randint(0, 5), amount="10", status=status),
            event("PaymentProcessed", oid, rng.randint(0, 5), transactionId="t-2", amount="20"),
            event("ShippingCalculated", oid, rng.randint(0, 5)),
        ]
    deliveries = events + rng.sample(events, len(events) // 3)
    rng.shuffle(deliveries)
    return events, deliveries


def test_rebuild_equals_live_state_for_500_shuffled_orders_with_duplicates(sessions):
    events, deliveries = shuffled_traffic(500, seed=7)
    statuses = [apply_event(UnitOfWork(sessions), e, NOW).status for e in deliveries]
    assert statuses.count("applied") == len(events)
    assert statuses.count("duplicate") == len(deliveries) - len(events)
    assert list(verify(sessions)) == []
    for n in range(500):
        live = stored(sessions, f"o-{n}")
        rebuilt = rebuild(UnitOfWork(sessions), f"o-{n}", NOW)
        assert rebuilt.to_document() == live.to_document()
        assert divergence(live, [e for e in events if e.order_id == f"o-{n}"]) is None
    with sessions() as s:
        seqs = s.scalar(select(func.sum(OrderRow.decision_seq)))
    assert count(sessions, OutboxRow) == seqs


def test_verify_reports_a_tampered_order(sessions):
    for kind in ("OrderCreated", "InventoryReserved", "PaymentProcessed"):
        apply_event(UnitOfWork(sessions), event(kind), NOW)
    apply_event(UnitOfWork(sessions), event("OrderCreated", "o-2"), NOW)
    with sessions.begin() as s:
        s.execute(
            text(
                "UPDATE orders SET document = jsonb_set(document, '{eventCount}', '7') "
                "WHERE order_id = 'o-1'"
            )
        )
    found = list(verify(sessions))
    assert [(d.order_id, d.fields) for d in found] == [("o-1", ("eventCount",))]
