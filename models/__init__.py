"""The pure domain of orderfleet: events, the convergent state, decisions. No I/O here."""

from orderfleet.models.decisions import (
    Decision,
    EmittedDecision,
    decide,
    decision_holds,
    decision_id_for,
    decision_payload,
    next_decision,
)
from orderfleet.models.events import (
    EVENT_TYPES,
    SECTIONS,
    CarrierOption,
    Envelope,
    Event,
    InventoryReserved,
    Item,
    LoyaltyPointsUpdated,
    OrderCreated,
    PaymentProcessed,
    ShippingCalculated,
    content_hash,
    content_of,
)
from orderfleet.models.parsing import InvalidEvent, parse_event, raw_text, storable_text
from orderfleet.models.state import OrderState, converged_view, project

__all__ = [
    "EVENT_TYPES",
    "SECTIONS",
    "CarrierOption",
    "Decision",
    "EmittedDecision",
    "Envelope",
    "Event",
    "InvalidEvent",
    "InventoryReserved",
    "Item",
    "LoyaltyPointsUpdated",
    "OrderCreated",
    "OrderState",
    "PaymentProcessed",
    "ShippingCalculated",
    "content_hash",
    "content_of",
    "converged_view",
    "decide",
    "decision_holds",
    "decision_id_for",
    "decision_payload",
    "next_decision",
    "parse_event",
    "project",
    "raw_text",
    "storable_text",
]
