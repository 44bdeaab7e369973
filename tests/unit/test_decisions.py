"""Decisions (docs/design.md §3): the rules, the emission stream, deterministic ids."""

import uuid

import pytest
from orderfleet.models import (
    Decision,
    EmittedDecision,
    decide,
    decision_holds,
    decision_id_for,
    next_decision,
    project,
)

from tests.unit.factories import (
    ORDER,
    fold,
    inventory_reserved,
    order_created,
    payment_processed,
    shipping_calculated,
)


def decision_of(*events):
    return decide(project(ORDER, events))


# ---------------------------------------------------------------- the rules


def test_failed_payment_is_rejected_payment_failed():
    assert decision_of(payment_processed(status="failed")) == Decision(
        outcome="rejected", reason="payment_failed"
    )


def test_payment_failed_comes_before_out_of_stock():
    events = [payment_processed(status="failed"), inventory_reserved(reserved={"sku-1": 0})]
    assert decision_of(*events) == Decision(outcome="rejected", reason="payment_failed")


@pytest.mark.parametrize("reserved", [{}, {"sku-1": 0}, {"sku-1": 0, "sku-2": 0}])
def test_nothing_reserved_is_rejected_out_of_stock(reserved):
    assert decision_of(inventory_reserved(reserved=reserved)) == Decision(
        outcome="rejected", reason="out_of_stock"
    )


def test_out_of_stock_comes_before_amount_mismatch():
    events = [
        order_created(total="50"),
        payment_processed(amount="10"),
        inventory_reserved(reserved={"sku-1": 0}),
    ]
    assert decision_of(*events) == Decision(outcome="rejected", reason="out_of_stock")


def test_partly_reserved_inventory_is_not_out_of_stock():
    events = [payment_processed(), inventory_reserved(reserved={"sku-1": 0, "sku-2": 1})]
    assert decision_of(*events).outcome == "confirmed"


def test_successful_payment_not_matching_the_total_is_rejected_amount_mismatch():
    events = [order_created(total="99.99"), payment_processed(amount="99.98"), inventory_reserved()]
    assert decision_of(*events) == Decision(outcome="rejected", reason="amount_mismatch")


def test_amounts_compare_as_decimals():
    events = [order_created(total="10"), payment_processed(amount="10.00"), inventory_reserved()]
    assert decision_of(*events).outcome == "confirmed"


def test_confirmed_carries_warehouse_and_shipping_days():
    events = [
        order_created(),
        payment_processed(),
        inventory_reserved(warehouse="w-7"),
        shipping_calculated(days=2),
    ]
    assert decision_of(*events) == Decision(
        outcome="confirmed", reason=None, warehouse_id="w-7", estimated_days=2
    )


def test_confirmed_without_shipping_defaults_to_5_days():
    events = [order_created(), payment_processed(), inventory_reserved()]
    assert decision_of(*events) == Decision(
        outcome="confirmed", warehouse_id="w-1", estimated_days=5
    )


def test_zero_shipping_days_are_kept():
    events = [payment_processed(), inventory_reserved(), shipping_calculated(days=0)]
    assert decision_of(*events).estimated_days == 0


def test_confirmed_without_customer_skips_the_amount_check():
    events = [payment_processed(amount="1"), inventory_reserved()]
    assert decision_of(*events) == Decision(
        outcome="confirmed", warehouse_id="w-1", estimated_days=5
    )


@pytest.mark.parametrize(
    "events",
    [
        [],
        [order_created()],
        [inventory_reserved()],
        [payment_processed()],
        [order_created(), payment_processed()],
        [payment_processed(status="pending"), inventory_reserved(), order_created()],
        [shipping_calculated()],
    ],
    ids=[
        "nothing",
        "customer only",
        "inventory only",
        "payment only",
        "no inventory",
        "pending payment",
        "shipping only",
    ],
)
def test_no_decision(events):
    assert decision_of(*events) is None


# ---------------------------------------------------------------- decision ids


def test_decision_id_is_deterministic_uuid5():
    assert decision_id_for("o-1", 1) == decision_id_for("o-1", 1)
    assert uuid.UUID(decision_id_for("o-1", 1)).version == 5


def test_decision_id_differs_by_seq_and_by_order():
    ids = {decision_id_for(o, s) for o in ("o-1", "o-2", "o-11") for s in (1, 2, 11)}
    assert len(ids) == 9
    assert decision_id_for("o-1", 11) != decision_id_for("o-11", 1)


def test_same_events_give_the_same_decision_id():
    events = [payment_processed(), inventory_reserved()]
    assert fold(events).decision.decision_id == fold(events).decision.decision_id
    assert fold(events).decision.decision_id == decision_id_for(ORDER, 1)


# ---------------------------------------------------------------- the emission rule


def test_first_decision_has_seq_1_and_supersedes_nothing():
    emitted = next_decision(ORDER, None, Decision(outcome="rejected", reason="out_of_stock"))
    assert emitted == EmittedDecision(
        decision_id=decision_id_for(ORDER, 1),
        order_id=ORDER,
        seq=1,
        outcome="rejected",
        reason="out_of_stock",
    )
    assert not emitted.is_correction


def test_no_emission_while_there_is_nothing_to_say():
    assert next_decision(ORDER, None, None) is None


def test_unchanged_verdict_is_not_emitted_again():
    last = next_decision(ORDER, None, Decision(outcome="confirmed", estimated_days=5))
    again = Decision(outcome="confirmed", warehouse_id="w-2", estimated_days=1)
    assert next_decision(ORDER, last, again) is None


def test_later_shipping_does_not_re_emit_a_confirmation():
    state = fold([payment_processed(at=1), inventory_reserved(at=2), shipping_calculated(at=3)])
    assert (state.decision.seq, state.decision.estimated_days) == (1, 5)
    assert decide(state).estimated_days == 3
    assert decision_holds(state)


def test_later_pending_payment_puts_a_confirmation_on_hold():
    state = fold(
        [
            order_created(at=0),
            inventory_reserved(at=1),
            payment_processed(at=2, event_id="pay-ok", status="successful"),
        ]
    )
    first = state.decision
    assert (first.seq, first.outcome) == (1, "confirmed")

    state = state.apply(payment_processed(at=3, event_id="pay-pending", status="pending"))
    assert state.payment.event_id == "pay-pending"
    assert state.decision == EmittedDecision(
        decision_id=decision_id_for(ORDER, 2),
        order_id=ORDER,
        seq=2,
        outcome="on_hold",
        supersedes=first.decision_id,
    )
    assert state.decision.verdict is None
    assert state.decision.is_correction
    assert state.status == "processing"
    assert decide(state) is None
    assert decision_holds(state)


def test_earlier_pending_payment_arriving_late_changes_nothing():
    state = fold(
        [
            inventory_reserved(at=1),
            payment_processed(at=3, event_id="pay-ok"),
            payment_processed(at=2, event_id="pay-pending", status="pending"),
        ]
    )
    assert state.payment.event_id == "pay-ok"
    assert (state.decision.seq, state.decision.outcome) == (1, "confirmed")


def test_late_order_created_reveals_amount_mismatch_as_a_correction():
    state = fold([inventory_reserved(at=1), payment_processed(at=2, amount="100")])
    confirmation = state.decision
    assert (confirmation.seq, confirmation.outcome) == (1, "confirmed")

    state = state.apply(order_created(at=0, total="90"))
    assert state.decision == EmittedDecision(
        decision_id=decision_id_for(ORDER, 2),
        order_id=ORDER,
        seq=2,
        outcome="rejected",
        reason="amount_mismatch",
        supersedes=confirmation.decision_id,
    )
    assert state.status == "rejected"


def test_rejection_can_be_corrected_to_a_confirmation():
    state = fold(
        [
            inventory_reserved(at=1),
            payment_processed(at=2, event_id="p1", status="failed"),
            payment_processed(at=3, event_id="p2", status="successful"),
        ]
    )
    assert (state.decision.seq, state.decision.outcome) == (2, "confirmed")
    assert state.decision.supersedes == decision_id_for(ORDER, 1)


def test_on_hold_then_the_same_verdict_again_is_a_new_decision():
    state = fold(
        [
            inventory_reserved(at=1),
            payment_processed(at=2, event_id="p1"),
            payment_processed(at=3, event_id="p2", status="pending"),
            payment_processed(at=4, event_id="p3"),
        ]
    )
    assert [state.decision.seq, state.decision.outcome] == [3, "confirmed"]
    assert state.decision.supersedes == decision_id_for(ORDER, 2)


def test_emitted_decision_document_round_trips():
    emitted = EmittedDecision(
        decision_id=decision_id_for(ORDER, 2),
        order_id=ORDER,
        seq=2,
        outcome="confirmed",
        warehouse_id="w-1",
        estimated_days=5,
        supersedes=decision_id_for(ORDER, 1),
    )
    assert emitted.to_document() == {
        "decisionId": decision_id_for(ORDER, 2),
        "seq": 2,
        "outcome": "confirmed",
        "reason": None,
        "warehouseId": "w-1",
        "estimatedDays": 5,
        "supersedes": decision_id_for(ORDER, 1),
    }
    assert EmittedDecision.from_document(ORDER, emitted.to_document()) == emitted
