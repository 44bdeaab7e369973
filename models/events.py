"""Order events: frozen pydantic models of the wire format (docs/design.md §1)."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Mapping
from datetime import datetime
from decimal import Decimal
from functools import cache, cached_property
from typing import Annotated, Any, ClassVar, Literal

from orderfleet.models.wire import (
    MAX_INT,
    PLAIN_JSON,
    canonical_json,
    dumps_built,
    format_decimal,
    format_instant,
    to_instant,
    to_money,
)
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictInt,
    StrictStr,
)
from pydantic.alias_generators import to_camel

EVENT_ID_NAMESPACE = uuid.UUID("6f0b8c5e-3c1d-5a57-9a8e-0f2d4b7c9e11")


def _non_negative(value: Decimal) -> Decimal:
    if value < 0:
        raise ValueError("must be >= 0")
    return value


def _no_whitespace(value: str) -> str:
    if value.isprintable() and " " not in value:  # every other whitespace is unprintable
        return value
    if any(ch.isspace() for ch in value):
        raise ValueError("must not contain whitespace")
    return value


def _currency(value: str) -> str:
    if len(value) != 3 or not value.isascii() or not value.isalpha():
        raise ValueError("must be a 3-letter currency code such as USD")
    return value.upper()


Money = Annotated[Decimal, BeforeValidator(to_money), AfterValidator(_non_negative)]
Instant = Annotated[datetime, BeforeValidator(to_instant)]
NonNegativeInt = Annotated[StrictInt, Field(ge=0, le=MAX_INT)]
Count = Annotated[StrictInt, Field(ge=-MAX_INT, le=MAX_INT)]
MAX_ITEMS = 1000  # items of an order, skus of a reservation
MAX_CARRIER_OPTIONS = 100
OrderId = Annotated[StrictStr, Field(min_length=1, max_length=128), AfterValidator(_no_whitespace)]
EventId = Annotated[StrictStr, Field(min_length=1, max_length=128)]
Currency = Annotated[StrictStr, AfterValidator(_currency)]


class WireModel(BaseModel):
    """camelCase on the wire, snake_case accepted from Python producers."""

    model_config = ConfigDict(
        frozen=True, alias_generator=to_camel, populate_by_name=True, extra="ignore"
    )


class Item(WireModel):
    sku: StrictStr
    quantity: Annotated[StrictInt, Field(ge=1, le=MAX_INT)]
    unit_price: Money | None = None


class CarrierOption(WireModel):
    name: StrictStr
    cost: Money
    estimated_days: NonNegativeInt


class Envelope(WireModel):
    """Fields common to every event; unknown fields are kept in `extra`."""

    model_config = ConfigDict(extra="allow")

    event_id: EventId
    event_type: StrictStr
    order_id: OrderId
    timestamp: Instant
    correlation_id: Annotated[StrictStr, Field(max_length=128)] | None = None
    schema_version: Annotated[StrictInt, Field(ge=1)] = 1

    section: ClassVar[str] = ""

    @property
    def key(self) -> tuple[datetime, str]:
        """The total order that picks a section's winning event."""
        return (self.timestamp, self.event_id)

    def payload(self) -> dict[str, Any]:
        """The type-specific fields, JSON-ready, camelCase."""
        names = _payload_fields(type(self))
        payload: dict[str, Any] = _json_ready(self.model_dump(include=names, by_alias=True))
        return payload

    def section_document(self) -> dict[str, Any]:
        """The event as its order's section: eventId, timestamp and payload."""
        return {
            "eventId": self.event_id,
            "timestamp": format_instant(self.timestamp),
            **self.payload(),
        }

    @cached_property
    def section_json(self) -> str:
        """`section_document()` as JSON, made once per event: an order's whole document is
        written for every batch that touches it, its unchanged sections included (a tenth of a
        bulk worker's time in py-spy). Kept out of equality and hashing (not a field); made
        after any model_copy of the event. Only the text is kept: cached orders hold it."""
        return dumps_built(self.section_document())

    def to_wire(self) -> dict[str, Any]:
        """The whole event as a JSON-ready wire object (unknown fields included)."""
        wire: dict[str, Any] = _json_ready(self.model_dump(by_alias=True, exclude_none=True))
        return wire


@cache
def _payload_fields(model: type[Envelope]) -> set[str]:
    """The fields of an event type that are not the envelope's (shared: never modify)."""
    return set(model.model_fields) - set(Envelope.model_fields)


def _json_ready(obj: Any) -> Any:
    kind = type(obj)
    if kind is dict:  # by type first, plain values left as they are: this runs per event sent
        return {k: v if type(v) in PLAIN_JSON else _json_ready(v) for k, v in obj.items()}
    if kind is list:
        return [v if type(v) in PLAIN_JSON else _json_ready(v) for v in obj]
    if isinstance(obj, dict):
        return {k: _json_ready(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_json_ready(v) for v in obj]
    if isinstance(obj, Decimal):
        return format_decimal(obj)
    if isinstance(obj, datetime):
        return format_instant(obj)
    return obj


class OrderCreated(Envelope):
    event_type: Literal["OrderCreated"]
    customer_id: StrictStr
    total_amount: Money
    currency: Currency
    items: list[Item] = Field(default_factory=list, max_length=MAX_ITEMS)
    section: ClassVar[str] = "customer"


class InventoryReserved(Envelope):
    event_type: Literal["InventoryReserved"]
    reserved_items: dict[StrictStr, NonNegativeInt] = Field(max_length=MAX_ITEMS)
    warehouse_id: StrictStr
    section: ClassVar[str] = "inventory"


class PaymentProcessed(Envelope):
    event_type: Literal["PaymentProcessed"]
    transaction_id: StrictStr
    amount: Money
    status: Literal["successful", "failed", "pending"]
    method: StrictStr | None = None
    section: ClassVar[str] = "payment"


class ShippingCalculated(Envelope):
    event_type: Literal["ShippingCalculated"]
    shipping_cost: Money
    estimated_days: NonNegativeInt
    carrier_options: list[CarrierOption] = Field(
        default_factory=list, max_length=MAX_CARRIER_OPTIONS
    )
    section: ClassVar[str] = "shipping"


class LoyaltyPointsUpdated(Envelope):
    event_type: Literal["LoyaltyPointsUpdated"]
    points_earned: Count
    total_points: NonNegativeInt
    tier_status: StrictStr
    section: ClassVar[str] = "loyalty"


Event = (
    OrderCreated | InventoryReserved | PaymentProcessed | ShippingCalculated | LoyaltyPointsUpdated
)

EVENT_TYPES: dict[str, type[Envelope]] = {
    "OrderCreated": OrderCreated,
    "InventoryReserved": InventoryReserved,
    "PaymentProcessed": PaymentProcessed,
    "ShippingCalculated": ShippingCalculated,
    "LoyaltyPointsUpdated": LoyaltyPointsUpdated,
}
SECTIONS: tuple[str, ...] = tuple(model.section for model in EVENT_TYPES.values())


def derive_event_id(wire: Mapping[str, Any]) -> str:
    """UUIDv5 of the canonical JSON of the event without its eventId."""
    return str(uuid.uuid5(EVENT_ID_NAMESPACE, canonical_json(_without_id(wire))))


def content_of(event: Envelope) -> str:
    """Canonical JSON of the event's content (everything but eventId): equal content, equal text."""
    return canonical_json(_without_id(event.to_wire()))


def content_hash(event: Envelope) -> str:
    """SHA-256 of `content_of`: what tells a re-delivery from an eventId conflict (§2)."""
    return hashlib.sha256(content_of(event).encode("utf-8")).hexdigest()


def _without_id(wire: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in wire.items() if k not in ("eventId", "event_id")}
