"""Strings must be storable: lone surrogates and NUL characters are rejected by name."""

from __future__ import annotations

import pytest
from orderfleet.models import InvalidEvent, parse_event
from orderfleet.models.wire import dumps

from tests.unit.factories import wire

CREATED = {"customerId": "c-1", "totalAmount": "1", "currency": "USD"}


@pytest.mark.parametrize(
    ("field", "value"),
    [("orderId", "o-\ud800"), ("orderId", "o-\x00"), ("customerId", "c\x00"), ("note", "\udfff")],
)
def test_unstorable_text_is_rejected_naming_the_field(field, value):
    event = {**wire("OrderCreated", **CREATED), field: value}
    with pytest.raises(InvalidEvent) as rejected:
        parse_event(event)
    assert str(rejected.value) == f"{field}: must be valid UTF-8 text without NUL characters"


def test_escaped_nul_in_json_text_is_rejected():
    text = dumps(wire("OrderCreated", **CREATED)).replace('"c-1"', '"c\\u0000"')
    with pytest.raises(InvalidEvent, match="customerId: must be valid UTF-8 text"):
        parse_event(text)


def test_ordinary_unicode_is_fine():
    event = parse_event(wire("OrderCreated", order_id="заказ-😀-ü", **CREATED))
    assert event.order_id == "заказ-😀-ü"
