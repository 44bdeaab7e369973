"""The convergent order state (docs/design.md §2) and the Order document."""

import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import orderfleet.models as models
import pytest
from orderfleet.models import OrderState, converged_view, decision_id_for, project

from tests.unit.factories import (
    ORDER,
    fold,
    inventory_reserved,
    loyalty_points_updated,
    order_created,
    payment_processed,
    shipping_calculated,
    ts,
)

ROOT = Path(__file__).resolve().parents[2]


def seed_events():
    """The seed article's order, in the order the events arrive."""
    return [
        payment_processed(at=2, event_id="pay-1"),
        shipping_calculated(at=3, event_id="ship-1"),
        order_created(at=0, event_id="oc-1"),
        inventory_reserved(at=1, event_id="inv-1"),
    ]


SEED_DOCUMENT = {
    "orderId": "o-1",
    "status": "confirmed",
    "completeness": 80,
    "eventCount": 4,
    "createdAt": "2026-01-01T10:00:00Z",
    "firstEventAt": "2026-01-01T10:00:00Z",
    "lastEventAt": "2026-01-01T10:03:00Z",
    "customer": {
        "eventId": "oc-1",
        "timestamp": "2026-01-01T10:00:00Z",
        "customerId": "c-9",
        "totalAmount": "99.99",
        "currency": "USD",
        "items": [],
    },
    "inventory": {
        "eventId": "inv-1",
        "timestamp": "2026-01-01T10:01:00Z",
        "reservedItems": {"sku-1": 2},
        "warehouseId": "w-1",
    },
    "payment": {
        "eventId": "pay-1",
        "timestamp": "2026-01-01T10:02:00Z",
        "transactionId": "t-1",
        "amount": "99.99",
        "status": "successful",
        "method": "card",
    },
    "shipping": {
        "eventId": "ship-1",
        "timestamp": "2026-01-01T10:03:00Z",
        "shippingCost": "5",
        "estimatedDays": 3,
        "carrierOptions": [],
    },
    "loyalty": None,
    "decision": {
        "decisionId": decision_id_for("o-1", 1),
        "seq": 1,
        "outcome": "confirmed",
        "reason": None,
        "warehouseId": "w-1",
        "estimatedDays": 3,
        "supersedes": None,
    },
    "version": 4,
}


# ---------------------------------------------------------------- the seed article


def test_out_of_order_seed_sequence_ends_confirmed_with_four_sections():
    state = fold(seed_events())
    assert state.status == "confirmed"
    assert state.completeness == 80
    assert [e.event_id for e in state.winners()] == ["oc-1", "inv-1", "pay-1", "ship-1"]
    assert state.loyalty is None
    assert state.to_document() == SEED_DOCUMENT


def test_out_of_order_seed_sequence_projects_to_the_same_converged_view():
    doc = project(ORDER, seed_events()).to_document()
    assert converged_view(doc) == converged_view(SEED_DOCUMENT)
    # project folds in timestamp order: confirmed before shipping was known, not re-emitted
    assert doc["decision"] == {**SEED_DOCUMENT["decision"], "estimatedDays": 5}


def test_seed_sequence_status_along_the_way():
    statuses = []
    state = OrderState(order_id=ORDER)
    for event in seed_events():
        state = state.apply(event)
        statuses.append((state.status, state.completeness))
    assert statuses == [("pending", 20), ("pending", 40), ("processing", 60), ("confirmed", 80)]


def test_order_created_delivered_three_times_counts_once():
    event = order_created(event_id="oc-1")
    state = project(ORDER, [event, event, models.parse_event(event.to_wire())])
    assert state.event_count == 1
    assert state.completeness == 20
    assert state.status == "processing"
    assert state.version == 1
    assert state.to_document()["eventCount"] == 1


def test_identical_resend_without_event_id_counts_once():
    copies = [order_created() for _ in range(3)]
    assert len({e.event_id for e in copies}) == 1
    assert project(ORDER, copies).event_count == 1


# ---------------------------------------------------------------- winners


def test_later_timestamp_wins_whatever_the_event_id():
    late = payment_processed(at=5, event_id="a", amount="1")
    early = payment_processed(at=1, event_id="z", amount="2")
    for arrival in ([late, early], [early, late]):
        assert fold(arrival).payment.event_id == "a"


def test_timestamp_tie_is_broken_by_the_greater_event_id():
    a = payment_processed(at=1, event_id="a", status="failed")
    b = payment_processed(at=1, event_id="b", status="successful")
    for arrival in ([a, b], [b, a]):
        assert fold(arrival).payment.event_id == "b"
        assert fold(arrival).payment.status == "successful"


def test_event_ids_compare_as_strings_not_numbers():
    nine = payment_processed(at=1, event_id="9")
    ten = payment_processed(at=1, event_id="10")
    assert fold([nine, ten]).payment.event_id == "9"
    assert fold([ten, nine]).payment.event_id == "9"


def test_sub_microsecond_difference_is_a_tie():
    a = payment_processed(at="2026-01-01T10:00:00.123456999Z", event_id="a")
    b = payment_processed(at="2026-01-01T10:00:00.123456001Z", event_id="b")
    assert a.timestamp == b.timestamp
    assert fold([b, a]).payment.event_id == "b"


def test_ties_compare_instants_not_offsets():
    utc = payment_processed(at="2026-01-01T10:00:00Z", event_id="b")
    local = payment_processed(at="2026-01-01T11:00:00+01:00", event_id="a")
    assert fold([utc, local]).payment.event_id == "b"
    assert fold([local, utc]).payment.event_id == "b"


# ---------------------------------------------------------------- derived fields


def test_derived_fields_count_losing_events_too():
    state = fold(
        [
            order_created(at=2, event_id="oc-b", total="10"),
            order_created(at=4, event_id="oc-a", total="20"),
            loyalty_points_updated(at=-1),
            shipping_calculated(at=9),
        ]
    )
    assert state.event_count == 4
    assert state.version == 4
    assert state.completeness == 60
    assert state.created_at == datetime(2026, 1, 1, 10, 4, tzinfo=UTC)
    assert state.first_event_at == datetime(2026, 1, 1, 9, 59, tzinfo=UTC)
    assert state.last_event_at == datetime(2026, 1, 1, 10, 9, tzinfo=UTC)


def test_all_five_sections_make_completeness_100():
    state = fold([*seed_events(), loyalty_points_updated(at=4)])
    assert state.completeness == 100
    assert state.to_document()["loyalty"] == {
        "eventId": state.loyalty.event_id,
        "timestamp": ts(4),
        "pointsEarned": 10,
        "totalPoints": 110,
        "tierStatus": "silver",
    }


def test_empty_state_document():
    assert project(ORDER, []).to_document() == {
        "orderId": ORDER,
        "status": "pending",
        "completeness": 0,
        "eventCount": 0,
        "createdAt": None,
        "firstEventAt": None,
        "lastEventAt": None,
        "customer": None,
        "inventory": None,
        "payment": None,
        "shipping": None,
        "loyalty": None,
        "decision": None,
        "version": 0,
    }


def test_status_is_pending_without_customer_and_processing_with_it():
    assert fold([payment_processed()]).status == "pending"
    assert fold([order_created()]).status == "processing"


def test_unknown_fields_are_ignored_by_the_reducer():
    plain = payment_processed(event_id="p")
    extra = payment_processed(event_id="p", promoCode="SPRING", status="successful")
    inv = inventory_reserved()
    assert extra.model_extra == {"promoCode": "SPRING"}
    assert fold([extra, inv]).to_document() == fold([plain, inv]).to_document()
    assert "promoCode" not in fold([extra]).to_document()["payment"]


def test_amounts_in_documents_are_decimal_strings():
    state = fold(
        [
            order_created(total=99.99, items=[{"sku": "a", "quantity": 1, "unitPrice": 1.50}]),
            shipping_calculated(
                cost="7.50", carriers=[{"name": "ups", "cost": 12, "estimatedDays": 2}]
            ),
        ]
    )
    doc = state.to_document()
    assert doc["customer"]["totalAmount"] == "99.99"
    assert doc["customer"]["items"] == [{"sku": "a", "quantity": 1, "unitPrice": "1.5"}]
    assert doc["shipping"]["shippingCost"] == "7.5"
    assert doc["shipping"]["carrierOptions"] == [{"name": "ups", "cost": "12", "estimatedDays": 2}]


def test_apply_rejects_an_event_of_another_order():
    with pytest.raises(ValueError, match="event for order 'o-2' applied to 'o-1'"):
        OrderState(order_id="o-1").apply(order_created(order_id="o-2"))


def test_project_keeps_the_first_of_conflicting_event_ids():
    first = payment_processed(event_id="p", amount="1")
    second = payment_processed(event_id="p", amount="2")
    assert project(ORDER, [first, second]).payment.amount == first.amount
    assert project(ORDER, [second, first]).payment.amount == second.amount
    assert project(ORDER, [first, second]).event_count == 1


def test_converged_view_drops_only_decision_and_version():
    doc = project(ORDER, seed_events()).to_document()
    view = converged_view(doc)
    assert set(doc) - set(view) == {"decision", "version"}
    assert all(view[k] == doc[k] for k in view)


# ---------------------------------------------------------------- documents round-trip


def test_document_round_trips_through_from_document():
    state = fold([*seed_events(), loyalty_points_updated(at=4, promoCode="X")])
    restored = OrderState.from_document(state.to_document())
    assert restored.to_document() == state.to_document()
    assert restored.decision == state.decision
    assert models.decide(restored) == models.decide(state)


def test_restored_state_keeps_folding_like_the_original():
    events = seed_events()
    restored = OrderState.from_document(fold(events[:2]).to_document())
    late = payment_processed(at=9, event_id="pay-2", status="failed")
    assert fold([*events[2:], late], state=restored).to_document() == (
        fold([*events, late]).to_document()
    )


def test_models_import_and_project_from_a_fresh_interpreter():
    code = "import models; print(models.project('o', []).to_document())"
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == (
        "{'orderId': 'o', 'status': 'pending', 'completeness': 0, 'eventCount': 0, "
        "'createdAt': None, 'firstEventAt': None, 'lastEventAt': None, 'customer': None, "
        "'inventory': None, 'payment': None, 'shipping': None, 'loyalty': None, "
        "'decision': None, 'version': 0}"
    )


def test_models_import_neither_celery_nor_tasks_nor_worker():
    names = ("celery", "kombu", "redis", "orderfleet.tasks", "orderfleet.worker")
    code = f"import sys, orderfleet.models; print(sorted(m for m in {names!r} if m in sys.modules))"
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert result.stdout.strip() == "[]", result.stderr
