"""The convergent order state (docs/design.md §2): a pure fold over distinct events."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

from orderfleet.models.decisions import EmittedDecision, decide, next_decision
from orderfleet.models.events import (
    EVENT_TYPES,
    SECTIONS,
    Envelope,
    Event,
    InventoryReserved,
    LoyaltyPointsUpdated,
    OrderCreated,
    PaymentProcessed,
    ShippingCalculated,
)
from orderfleet.models.wire import dumps_built, format_instant, to_instant
from pydantic import BaseModel, ConfigDict


class OrderState(BaseModel):
    """One order: each section holds its winning event; the rest is derived."""

    model_config = ConfigDict(frozen=True)

    order_id: str
    customer: OrderCreated | None = None
    inventory: InventoryReserved | None = None
    payment: PaymentProcessed | None = None
    shipping: ShippingCalculated | None = None
    loyalty: LoyaltyPointsUpdated | None = None
    event_count: int = 0
    first_event_at: datetime | None = None
    last_event_at: datetime | None = None
    decision: EmittedDecision | None = None
    version: int = 0

    def apply(self, event: Event) -> OrderState:
        """Fold one *distinct* event (the event log dedupes) and run the emission rule."""
        if event.order_id != self.order_id:
            raise ValueError(f"event for order {event.order_id!r} applied to {self.order_id!r}")
        folded = self.model_copy(update=self._fold(event))
        emitted = next_decision(self.order_id, self.decision, decide(folded))
        return folded if emitted is None else folded.model_copy(update={"decision": emitted})

    def _fold(self, event: Envelope) -> dict[str, Any]:
        current: Envelope | None = getattr(self, event.section)
        update: dict[str, Any] = {
            "event_count": self.event_count + 1,
            "version": self.version + 1,
            "first_event_at": _earliest(self.first_event_at, event.timestamp),
            "last_event_at": _latest(self.last_event_at, event.timestamp),
        }
        if current is None or event.key > current.key:
            update[event.section] = event
        return update

    @property
    def completeness(self) -> int:
        return 20 * sum(getattr(self, name) is not None for name in SECTIONS)

    @property
    def created_at(self) -> datetime | None:
        return self.customer.timestamp if self.customer else None

    @property
    def status(self) -> str:
        verdict = self.decision.verdict if self.decision else None
        if verdict is not None:
            return verdict[0]
        return "processing" if self.customer is not None else "pending"

    def winners(self) -> list[Envelope]:
        """The winning event of every non-empty section."""
        return [e for e in (getattr(self, name) for name in SECTIONS) if e is not None]

    def to_document(self, sections: bool = True) -> dict[str, Any]:
        """The JSON-ready Order document (docs/design.md §2); without `sections`, all but them."""
        doc: dict[str, Any] = {
            "orderId": self.order_id,
            "status": self.status,
            "completeness": self.completeness,
            "eventCount": self.event_count,
            "createdAt": _instant(self.created_at),
            "firstEventAt": _instant(self.first_event_at),
            "lastEventAt": _instant(self.last_event_at),
        }
        for name in SECTIONS if sections else ():
            doc[name] = _section_document(getattr(self, name))
        doc["decision"] = self.decision.to_document() if self.decision else None
        doc["version"] = self.version
        return doc

    def stored_json(self) -> str:
        """`to_document()` without its version (the row has it), as JSON text.

        Each section is its event's `section_json`, written once per event instead of once per
        write of the order (writing whole documents was a tenth of a bulk worker's time).
        """
        head = self.to_document(sections=False)
        del head["version"]
        sections = "".join(f',"{name}":{_section_json(getattr(self, name))}' for name in SECTIONS)
        return f"{dumps_built(head)[:-1]}{sections}}}"

    @classmethod
    def from_document(cls, doc: dict[str, Any]) -> OrderState:
        """Rebuild the state from its stored document (the inverse of to_document)."""
        order_id = doc["orderId"]
        sections = {
            model.section: _section_event(order_id, name, doc.get(model.section))
            for name, model in EVENT_TYPES.items()
        }
        return cls(
            order_id=order_id,
            event_count=doc["eventCount"],
            first_event_at=_parse_instant(doc.get("firstEventAt")),
            last_event_at=_parse_instant(doc.get("lastEventAt")),
            decision=_decision(order_id, doc.get("decision")),
            version=doc.get("version", 0),
            **sections,
        )


def project(order_id: str, events: Iterable[Event]) -> OrderState:
    """The state of an order from any collection of its events, in any order, with repeats.

    Distinct events (by eventId) are folded in their total order, so the result, including
    the decision stream, is the same for every arrival order.
    """
    distinct: dict[str, Event] = {}
    for event in events:
        distinct.setdefault(event.event_id, event)  # the first one stays (docs/design.md §2)
    state = OrderState(order_id=order_id)
    for event in sorted(distinct.values(), key=lambda e: e.key):
        state = state.apply(event)
    return state


def converged_view(document: dict[str, Any]) -> dict[str, Any]:
    """The part of a document fixed by the set of events alone.

    The decision stream (seq, ids, the warehouse and days at emission) depends on arrival
    order; only its verdict, carried by `status`, must converge.
    """
    return {k: v for k, v in document.items() if k not in ("decision", "version")}


def _section_document(event: Envelope | None) -> dict[str, Any] | None:
    if event is None:
        return None
    return event.section_document()


def _section_json(event: Envelope | None) -> str:
    return "null" if event is None else event.section_json


def _section_event(order_id: str, event_type: str, section: dict[str, Any] | None) -> Any:
    """A section's event from a stored document (trusted: no size or text scan)."""
    if section is None:
        return None
    model = EVENT_TYPES[event_type]
    return model.model_validate({**section, "eventType": event_type, "orderId": order_id})


def _decision(order_id: str, doc: dict[str, Any] | None) -> EmittedDecision | None:
    return None if doc is None else EmittedDecision.from_document(order_id, doc)


def _instant(value: datetime | None) -> str | None:
    return None if value is None else format_instant(value)


def _parse_instant(value: str | None) -> datetime | None:
    return None if value is None else to_instant(value)


def _earliest(a: datetime | None, b: datetime) -> datetime:
    return b if a is None or b < a else a


def _latest(a: datetime | None, b: datetime) -> datetime:
    return b if a is None or b > a else a
