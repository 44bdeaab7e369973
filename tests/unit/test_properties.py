"""Properties of the pure domain under every arrival order (hypothesis)."""

import json
from decimal import Decimal
from itertools import pairwise

import orderfleet.models as models
from hypothesis import given
from hypothesis import strategies as st
from orderfleet.models import (
    OrderState,
    converged_view,
    decide,
    decision_holds,
    decision_id_for,
    project,
)
from orderfleet.models.wire import MAX_EVENT_BYTES, format_decimal

from tests.unit.factories import ORDER, PROPERTY, deliveries, event_sets, fold


def verdict(decision):
    """(outcome, reason) of a Decision or an EmittedDecision, on_hold counted as none."""
    if decision is None or decision.outcome == "on_hold":
        return None
    return (decision.outcome, decision.reason)


@PROPERTY
@given(st.data())
def test_every_arrival_order_with_redeliveries_gives_the_same_document(data):
    events = data.draw(event_sets(min_each=2, max_extra=6))
    arrival = data.draw(deliveries(events))
    expected = project(ORDER, events).to_document()
    assert project(ORDER, arrival).to_document() == expected
    assert expected["eventCount"] == len(events)
    assert expected["completeness"] == 100


@PROPERTY
@given(st.data())
def test_final_decision_holds_for_every_arrival_order(data):
    events = data.draw(event_sets())
    arrival = data.draw(st.permutations(events))
    state = fold(arrival)
    final = project(ORDER, events)
    assert decision_holds(state)
    assert verdict(state.decision) == verdict(decide(final))
    assert decide(state) == decide(final)
    assert state.status == final.status
    assert converged_view(state.to_document()) == converged_view(final.to_document())


@PROPERTY
@given(st.data())
def test_decision_stream_is_numbered_and_each_correction_supersedes_the_last(data):
    events = data.draw(event_sets())
    state, stream = OrderState(order_id=ORDER), []
    for event in data.draw(st.permutations(events)):
        state = state.apply(event)
        assert decision_holds(state)
        if state.decision is not None and (not stream or stream[-1] != state.decision):
            stream.append(state.decision)
    assert [d.seq for d in stream] == list(range(1, len(stream) + 1))
    assert [d.decision_id for d in stream] == [decision_id_for(ORDER, d.seq) for d in stream]
    assert [d.supersedes for d in stream] == [None, *(d.decision_id for d in stream)][: len(stream)]
    assert all(verdict(a) != verdict(b) for a, b in pairwise(stream))


@PROPERTY
@given(st.data())
def test_section_winner_is_the_greatest_timestamp_then_event_id(data):
    events = data.draw(event_sets(min_each=1))
    state = fold(data.draw(st.permutations(events)))
    for section in models.SECTIONS:
        candidates = [e for e in events if e.section == section]
        assert getattr(state, section) == max(candidates, key=lambda e: e.key)
    assert state.first_event_at == min(e.timestamp for e in events)
    assert state.last_event_at == max(e.timestamp for e in events)


@PROPERTY
@given(st.data())
def test_document_round_trips_through_from_document(data):
    events = data.draw(event_sets())
    state = fold(data.draw(st.permutations(events)))
    doc = state.to_document()
    restored = OrderState.from_document(doc)
    assert restored.to_document() == doc
    assert decide(restored) == decide(state)


@PROPERTY
@given(st.data())
def test_stored_json_is_the_document_without_its_version(data):
    state = fold(data.draw(st.permutations(data.draw(event_sets()))))
    expected = {k: v for k, v in state.to_document().items() if k != "version"}
    assert json.loads(state.stored_json()) == expected


@PROPERTY
@given(st.data())
def test_restoring_midway_from_the_document_changes_nothing(data):
    events = data.draw(event_sets())
    arrival = data.draw(st.permutations(events))
    cut = data.draw(st.integers(0, len(arrival)))
    restored = OrderState.from_document(fold(arrival[:cut]).to_document())
    assert fold(arrival[cut:], state=restored).to_document() == fold(arrival).to_document()


@PROPERTY
@given(st.data())
def test_resending_an_event_without_its_id_gives_the_same_id_only_if_it_was_derived(data):
    events = data.draw(event_sets())
    for event in events:
        wire = {k: v for k, v in event.to_wire().items() if k != "eventId"}
        derived = models.parse_event(wire).event_id
        assert derived == models.parse_event(wire).event_id
        assert (derived == event.event_id) == (len(event.event_id) == 36)


@PROPERTY
@given(
    st.decimals(allow_nan=False, allow_infinity=False).filter(
        lambda d: len(d.as_tuple().digits) + abs(d.as_tuple().exponent) <= MAX_EVENT_BYTES
    )
)
def test_format_decimal_is_exact_and_plain(value):
    text = format_decimal(value)
    assert Decimal(text) == value
    assert "e" not in text.lower()
    if "." in text:
        assert not text.endswith(("0", "."))
