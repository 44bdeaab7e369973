"""Events on the wire (docs/design.md §1): parsing, normalisation, validation messages."""

import json
import uuid
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal

import orderfleet.models as models
import pytest
from orderfleet.models import InvalidEvent, parse_event
from orderfleet.models.wire import MAX_EVENT_BYTES, dumps, format_decimal, loads

from tests.unit.factories import wire

TYPES = (
    "OrderCreated, InventoryReserved, PaymentProcessed, ShippingCalculated, LoyaltyPointsUpdated"
)


def payment(**overrides):
    data = wire(
        "PaymentProcessed", transactionId="t-1", amount="10", status="successful", event_id="e-1"
    )
    data.update(overrides)
    return {k: v for k, v in data.items() if v is not None}


def created(**overrides):
    data = wire(
        "OrderCreated",
        customerId="c-9",
        totalAmount="99.99",
        currency="USD",
        items=[{"sku": "sku-1", "quantity": 1}],
    )
    data.update(overrides)
    return {k: v for k, v in data.items() if v is not None}


def problems(obj):
    with pytest.raises(InvalidEvent) as caught:
        parse_event(obj)
    assert str(caught.value) == "; ".join(caught.value.problems)
    return caught.value.problems


# ---------------------------------------------------------------- money


def test_json_number_money_is_the_exact_decimal():
    event = parse_event(json.dumps(created(totalAmount=None))[:-1] + ', "totalAmount": 99.99}')
    assert type(event.total_amount) is Decimal
    assert event.total_amount == Decimal("99.99")
    assert str(event.total_amount) == "99.99"


def test_parse_stored_gives_the_text_the_event_log_stores():
    obj = loads(
        json.dumps(created(totalAmount=None, promo={"code": "X"}))[:-1]
        + ', "totalAmount": 12345678901234567.89}'
    )
    event, text = models.parse_stored(obj)
    assert event == parse_event(obj)
    assert text == dumps(obj)
    assert '"totalAmount":"12345678901234567.89"' in text
    assert models.parse_stored(json.dumps(payment()))[1] is None


def test_python_float_money_is_the_decimal_of_its_repr():
    event = parse_event(payment(amount=99.99))
    assert event.amount == Decimal("99.99")
    assert str(event.amount) == "99.99"


def test_money_keeps_more_digits_than_a_float():
    text = "123456789012345678.00000001"
    event = parse_event(payment(amount=text))
    assert str(event.amount) == text
    assert format_decimal(event.amount) == text


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (Decimal("100"), "100"),
        (Decimal("1E+2"), "100"),
        (Decimal("99.90"), "99.9"),
        (Decimal("0.000"), "0"),
        (Decimal("-0.0"), "0"),
        (Decimal("1E-7"), "0.0000001"),
        (Decimal("12345678901234567890123456789"), "12345678901234567890123456789"),
    ],
)
def test_format_decimal_is_plain_and_exact(value, text):
    assert format_decimal(value) == text


@pytest.mark.parametrize(
    ("amount", "rule"),
    [
        ("1e999999999", "must have at most 18 digits before the decimal point"),
        ("1000000000000000000", "must have at most 18 digits before the decimal point"),
        ("1e-70000", "must have at most 8 digits after the decimal point"),
        ("0.000000001", "must have at most 8 digits after the decimal point"),
    ],
)
def test_money_beyond_its_bounds_is_rejected(amount, rule):
    assert problems(payment(amount=amount)) == [f"PaymentProcessed.amount: {rule}"]


@pytest.mark.parametrize(
    "amount", ["999999999999999999.99999999", "0.10000000000000", "0E-900", "1.000000000", "1E+17"]
)
def test_money_at_its_bounds_is_accepted(amount):
    assert parse_event(payment(amount=amount)).amount == Decimal(amount)


def test_huge_exponent_in_an_unknown_field_of_json_text_is_rejected():
    text = json.dumps(payment())[:-1] + ', "note": 1e999999999}'
    rule = f"must have at most {MAX_EVENT_BYTES} digits when written out in full"
    assert problems(text) == [f"event: {rule}"]


@pytest.mark.parametrize("value", [True, False])
def test_boolean_is_not_a_decimal(value):
    assert problems(payment(amount=value)) == [
        "PaymentProcessed.amount: must be a decimal number, not a boolean"
    ]


@pytest.mark.parametrize("value", [float("nan"), float("inf"), "NaN", "-Infinity", "sNaN"])
def test_non_finite_money_is_rejected(value):
    assert problems(payment(amount=value)) == [
        "PaymentProcessed.amount: must be a finite decimal number"
    ]


@pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity"])
def test_non_finite_json_constants_are_rejected(constant):
    text = json.dumps(payment(amount=None))[:-1] + f', "amount": {constant}}}'
    assert problems(text) == [
        f"event: JSON constant {constant} is not allowed (numbers must be finite)"
    ]


def test_negative_amount_is_rejected():
    assert problems(payment(amount="-0.01")) == ["PaymentProcessed.amount: must be >= 0"]


def test_non_numeric_money_is_rejected():
    assert problems(payment(amount="ten")) == ["PaymentProcessed.amount: must be a decimal number"]


# ---------------------------------------------------------------- timestamps


def test_naive_timestamp_text_is_rejected():
    assert problems(payment(timestamp="2026-01-01T10:00:00")) == [
        "PaymentProcessed.timestamp: must carry a UTC offset such as Z or +02:00 "
        "(naive times are rejected)"
    ]


def test_naive_datetime_is_rejected():
    assert problems(payment(timestamp=datetime(2026, 1, 1, 10))) == [
        "PaymentProcessed.timestamp: must carry a UTC offset (naive times are rejected)"
    ]


@pytest.mark.parametrize(
    ("value", "rule"),
    [
        ("yesterday", "must be an RFC 3339 timestamp with an offset, e.g. 2026-01-01T10:00:00Z"),
        (1767261600, "must be an RFC 3339 timestamp string"),
        ("2026-02-30T10:00:00Z", "is not a valid date/time (day is out of range for month)"),
        ("2026-01-01T10:00:00+24:00", "has an invalid UTC offset"),
        ("0001-01-01T00:00:00+01:00", "is out of range once converted to UTC"),
        ("9999-12-31T23:59:59-01:00", "is out of range once converted to UTC"),
        (
            "\uff12\uff10\uff12\uff16-01-01T10:00:00Z",  # fullwidth digits
            "must be an RFC 3339 timestamp with an offset, e.g. 2026-01-01T10:00:00Z",
        ),
    ],
)
def test_invalid_timestamps_are_rejected(value, rule):
    assert problems(payment(timestamp=value)) == [f"PaymentProcessed.timestamp: {rule}"]


def test_timestamp_is_normalised_to_utc():
    event = parse_event(payment(timestamp="2026-01-01T12:30:00+02:30"))
    assert event.timestamp == datetime(2026, 1, 1, 10, 0, tzinfo=UTC)
    assert event.timestamp.utcoffset() == timedelta(0)
    assert event.to_wire()["timestamp"] == "2026-01-01T10:00:00Z"


@pytest.mark.parametrize("offset", ["Z", "z", "+00:00", "-00:00"])
def test_zero_offsets_are_utc(offset):
    event = parse_event(payment(timestamp=f"2026-01-01T10:00:00.25{offset}"))
    assert event.timestamp == datetime(2026, 1, 1, 10, 0, 0, 250000, tzinfo=UTC)
    assert event.timestamp.tzinfo is UTC
    assert event.to_wire()["timestamp"] == "2026-01-01T10:00:00.250000Z"


def test_aware_datetime_is_normalised_to_utc():
    local = datetime(2026, 1, 1, 5, 0, tzinfo=timezone(timedelta(hours=-5)))
    event = parse_event(payment(timestamp=local))
    assert event.timestamp == datetime(2026, 1, 1, 10, 0, tzinfo=UTC)
    assert event.timestamp.tzinfo is UTC


@pytest.mark.parametrize(
    ("text", "micros"),
    [
        ("2026-01-01T10:00:00.123456789Z", 123456),
        ("2026-01-01T10:00:00.9999999Z", 999999),
        ("2026-01-01T10:00:00.5Z", 500000),
        ("2026-01-01T10:00:00Z", 0),
    ],
)
def test_fractional_seconds_are_truncated_to_microseconds(text, micros):
    event = parse_event(payment(timestamp=text))
    assert event.timestamp == datetime(2026, 1, 1, 10, 0, 0, micros, tzinfo=UTC)


def test_nanosecond_timestamps_format_at_microseconds():
    event = parse_event(payment(timestamp="2026-01-01T10:00:00.123456789Z"))
    assert event.to_wire()["timestamp"] == "2026-01-01T10:00:00.123456Z"


# ---------------------------------------------------------------- envelope


@pytest.mark.parametrize(
    "order_id", ["o 1", "o\t1", "o-1\n", "\u00a0o", "o\u3000", "o\x1f1", "o\u2028"]
)
def test_order_id_with_whitespace_is_rejected(order_id):
    assert problems(payment(orderId=order_id)) == [
        "PaymentProcessed.orderId: must not contain whitespace"
    ]


def test_empty_order_id_is_rejected():
    assert problems(payment(orderId="")) == ["PaymentProcessed.orderId: must not be empty"]


def test_order_id_longer_than_128_is_rejected():
    assert parse_event(payment(orderId="x" * 128)).order_id == "x" * 128
    assert problems(payment(orderId="x" * 129)) == [
        "PaymentProcessed.orderId: must be at most 128 characters"
    ]


def test_event_id_longer_than_128_is_rejected():
    assert parse_event(payment(eventId="e" * 128)).event_id == "e" * 128
    assert problems(payment(eventId="e" * 129)) == [
        "PaymentProcessed.eventId: must be at most 128 characters"
    ]


def test_empty_event_id_is_rejected():
    assert problems(payment(eventId="")) == ["PaymentProcessed.eventId: must not be empty"]


def test_correlation_id_longer_than_128_is_rejected():
    assert problems(payment(correlationId="c" * 129)) == [
        "PaymentProcessed.correlationId: must be at most 128 characters"
    ]


def test_schema_version_defaults_to_1_and_must_be_positive():
    assert parse_event(payment()).schema_version == 1
    assert problems(payment(schemaVersion=0)) == ["PaymentProcessed.schemaVersion: must be >= 1"]


def test_unknown_event_type_is_rejected():
    assert problems(payment(eventType="OrderShipped")) == [f"eventType: must be one of {TYPES}"]


def test_missing_event_type_is_reported_with_envelope_problems():
    data = payment(orderId="o 1")
    del data["eventType"]
    assert problems(data) == [
        f"eventType: is required (one of {TYPES})",
        "event.orderId: must not contain whitespace",
    ]


@pytest.mark.parametrize("field", ["orderId", "timestamp", "transactionId", "amount", "status"])
def test_missing_field_is_required(field):
    data = payment()
    del data[field]
    assert problems(data) == [f"PaymentProcessed.{field}: is required"]


def test_every_problem_is_reported():
    assert problems(created(customerId=None, currency="US", totalAmount="-1")) == [
        "OrderCreated.customerId: is required",
        "OrderCreated.totalAmount: must be >= 0",
        "OrderCreated.currency: must be a 3-letter currency code such as USD",
    ]


# ---------------------------------------------------------------- payloads


@pytest.mark.parametrize("currency", ["US", "USDX", "U1D", "ÜSD", ""])
def test_currency_must_be_three_letters(currency):
    assert problems(created(currency=currency)) == [
        "OrderCreated.currency: must be a 3-letter currency code such as USD"
    ]


def test_currency_is_upper_cased():
    assert parse_event(created(currency="eur")).currency == "EUR"


def test_item_quantity_below_1_is_rejected():
    items = [{"sku": "a", "quantity": 1}, {"sku": "b", "quantity": 0}]
    assert problems(created(items=items)) == ["OrderCreated.items[1].quantity: must be >= 1"]


def test_boolean_quantity_is_not_an_integer():
    assert problems(created(items=[{"sku": "a", "quantity": True}])) == [
        "OrderCreated.items[0].quantity: must be an integer"
    ]


def test_payment_status_must_be_in_the_enum():
    assert problems(payment(status="refunded")) == [
        "PaymentProcessed.status: must be one of 'successful', 'failed' or 'pending'"
    ]


def test_negative_reservation_is_rejected():
    data = wire("InventoryReserved", reservedItems={"sku-1": -1}, warehouseId="w-1")
    assert problems(data) == ["InventoryReserved.reservedItems.sku-1: must be >= 0"]


def test_zero_reservation_is_accepted():
    data = wire("InventoryReserved", reservedItems={"sku-1": 0}, warehouseId="w-1")
    assert parse_event(data).reserved_items == {"sku-1": 0}


def test_shipping_days_and_carrier_cost_are_checked():
    data = wire(
        "ShippingCalculated",
        shippingCost="1",
        estimatedDays=-1,
        carrierOptions=[{"name": "ups", "cost": "-2", "estimatedDays": 1}],
    )
    assert problems(data) == [
        "ShippingCalculated.estimatedDays: must be >= 0",
        "ShippingCalculated.carrierOptions[0].cost: must be >= 0",
    ]


def test_loyalty_total_points_must_be_non_negative_but_earned_may_be_negative():
    data = wire("LoyaltyPointsUpdated", pointsEarned=-5, totalPoints=-1, tierStatus="gold")
    assert problems(data) == ["LoyaltyPointsUpdated.totalPoints: must be >= 0"]


def test_string_fields_are_strict():
    assert problems(payment(transactionId=7)) == [
        "PaymentProcessed.transactionId: must be a string"
    ]


# ---------------------------------------------------------------- raw input


def test_non_json_text_is_rejected():
    assert problems("not json") == [
        "event: must be valid JSON (Expecting value: line 1 column 1 (char 0))"
    ]


def test_json_array_is_rejected():
    assert problems(json.dumps([payment()])) == ["event: must be a JSON object, not list"]


def test_python_list_is_rejected():
    assert problems([payment()]) == ["event: must be a JSON object, not list"]


def test_bytes_input_is_parsed():
    event = parse_event(json.dumps(payment()).encode())
    assert (event.event_id, event.amount) == ("e-1", Decimal("10"))


def _padded(size):
    """JSON text of a valid event of exactly `size` bytes (padded in an unknown field)."""
    base = json.dumps({**payment(), "pad": ""}, separators=(",", ":"))
    return base.replace('"pad":""', '"pad":"' + "x" * (size - len(base)) + '"')


def test_event_of_exactly_64_kib_is_accepted():
    text = _padded(MAX_EVENT_BYTES)
    assert len(text.encode()) == MAX_EVENT_BYTES
    assert parse_event(text).event_id == "e-1"


def test_event_over_64_kib_is_rejected():
    text = _padded(MAX_EVENT_BYTES + 1)
    assert problems(text) == [f"event: must be at most {MAX_EVENT_BYTES} bytes of JSON (got 65537)"]


def test_mapping_over_64_kib_is_rejected():
    data = payment(pad="x" * MAX_EVENT_BYTES)
    size = len(models.wire.dumps(data).encode())
    assert problems(data) == [
        f"event: must be at most {MAX_EVENT_BYTES} bytes of JSON (got {size})"
    ]


def test_parse_event_returns_an_event_unchanged():
    event = parse_event(payment())
    assert parse_event(event) is event


# ---------------------------------------------------------------- names and ids


def test_snake_case_input_is_the_same_event_as_camel_case():
    camel = {
        "eventType": "OrderCreated",
        "orderId": "o-1",
        "timestamp": "2026-01-01T10:00:00Z",
        "customerId": "c-9",
        "totalAmount": "99.99",
        "currency": "USD",
        "items": [{"sku": "sku-1", "quantity": 2, "unitPrice": "5.5"}],
    }
    snake = {
        "event_type": "OrderCreated",
        "order_id": "o-1",
        "timestamp": "2026-01-01T10:00:00Z",
        "customer_id": "c-9",
        "total_amount": "99.99",
        "currency": "USD",
        "items": [{"sku": "sku-1", "quantity": 2, "unit_price": "5.5"}],
    }
    a, b = parse_event(camel), parse_event(snake)
    assert a.event_id == b.event_id
    assert a == b
    assert b.items[0].unit_price == Decimal("5.5")
    assert b.model_extra == {}


def test_derived_event_id_is_a_deterministic_uuid5():
    first = parse_event(created())
    again = parse_event(json.dumps(dict(reversed(created().items())), indent=2))
    assert first.event_id == again.event_id
    assert uuid.UUID(first.event_id).version == 5


def test_derived_event_id_ignores_number_spelling():
    assert parse_event(created(totalAmount="99.990")).event_id == (
        parse_event(created(totalAmount=99.99)).event_id
    )


@pytest.mark.parametrize(
    "change",
    [
        {"totalAmount": "99.98"},
        {"timestamp": "2026-01-01T10:00:00.000001Z"},
        {"customerId": "c-8"},
        {"orderId": "o-2"},
        {"items": []},
        {"promoCode": "X"},
    ],
)
def test_derived_event_id_changes_with_content(change):
    assert parse_event(created(**change)).event_id != parse_event(created()).event_id


def test_derived_event_id_keeps_the_26th_significant_digit():
    a = parse_event(payment(eventId=None, amount="123456789012345678.00000001"))
    b = parse_event(payment(eventId=None, amount="123456789012345678.00000002"))
    assert a.event_id != b.event_id


def test_explicit_event_id_is_kept():
    assert parse_event(payment(eventId="evt-42")).event_id == "evt-42"


def test_an_event_id_of_a_dash_is_kept_as_sent():
    assert parse_event(payment(eventId="-")).event_id == "-"


def test_content_of_excludes_the_event_id():
    a = parse_event(payment(eventId="a"))
    b = parse_event(payment(eventId="b"))
    assert models.content_of(a) == models.content_of(b)
    assert "eventId" not in json.loads(models.content_of(a))


# ---------------------------------------------------------------- unknown fields


def test_unknown_fields_are_kept():
    event = parse_event(payment(promoCode="SPRING", nested={"a": [1, 2]}))
    assert event.model_extra == {"promoCode": "SPRING", "nested": {"a": [1, 2]}}
    assert event.to_wire()["promoCode"] == "SPRING"
    assert event.to_wire()["nested"] == {"a": [1, 2]}


def test_unknown_fields_are_not_in_the_payload():
    event = parse_event(payment(promoCode="SPRING"))
    assert event.payload() == {
        "transactionId": "t-1",
        "amount": "10",
        "status": "successful",
        "method": None,
    }


def test_to_wire_is_camel_case_and_json_ready():
    event = parse_event(payment(amount=99.99, correlationId="corr-1"))
    assert event.to_wire() == {
        "eventId": "e-1",
        "eventType": "PaymentProcessed",
        "orderId": "o-1",
        "timestamp": "2026-01-01T10:00:00Z",
        "correlationId": "corr-1",
        "schemaVersion": 1,
        "transactionId": "t-1",
        "amount": "99.99",
        "status": "successful",
    }


def test_events_are_frozen():
    event = parse_event(payment())
    with pytest.raises(ValueError, match="frozen"):
        event.amount = Decimal("1")


def test_sections_follow_the_event_types():
    assert models.SECTIONS == ("customer", "inventory", "payment", "shipping", "loyalty")
    assert {name: m.section for name, m in models.EVENT_TYPES.items()} == {
        "OrderCreated": "customer",
        "InventoryReserved": "inventory",
        "PaymentProcessed": "payment",
        "ShippingCalculated": "shipping",
        "LoyaltyPointsUpdated": "loyalty",
    }


def test_raw_text_never_raises():
    assert models.raw_text(b"\xff{") == "\ufffd{"
    assert models.raw_text("plain") == "plain"
    assert models.raw_text({"amount": Decimal("1.50")}) == '{"amount":"1.5"}'
    assert models.raw_text({"x": object()}).startswith("\"{'x': <object object at")
