"""Decisions (docs/design.md §3): the pure `decide` and the emission rule."""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict

if TYPE_CHECKING:
    from orderfleet.models.state import OrderState

DECISION_ID_NAMESPACE = uuid.UUID("2d3f6a4e-8b1c-5e9f-a7d2-4c6b8e0f1a3b")
DEFAULT_ESTIMATED_DAYS = 5

Outcome = Literal["confirmed", "rejected", "on_hold"]


class Decision(BaseModel):
    """What `decide` says about a state: confirmed or rejected, with why."""

    model_config = ConfigDict(frozen=True)

    outcome: Literal["confirmed", "rejected"]
    reason: str | None = None
    warehouse_id: str | None = None
    estimated_days: int | None = None


class EmittedDecision(BaseModel):
    """One entry of an order's numbered decision stream."""

    model_config = ConfigDict(frozen=True)

    decision_id: str
    order_id: str
    seq: int
    outcome: Outcome
    reason: str | None = None
    warehouse_id: str | None = None
    estimated_days: int | None = None
    supersedes: str | None = None

    @property
    def verdict(self) -> tuple[str, str | None] | None:
        """(outcome, reason), with on_hold counted as no decision."""
        return None if self.outcome == "on_hold" else (self.outcome, self.reason)

    @property
    def is_correction(self) -> bool:
        return self.supersedes is not None

    def to_document(self) -> dict[str, Any]:
        return {
            "decisionId": self.decision_id,
            "seq": self.seq,
            "outcome": self.outcome,
            "reason": self.reason,
            "warehouseId": self.warehouse_id,
            "estimatedDays": self.estimated_days,
            "supersedes": self.supersedes,
        }

    @classmethod
    def from_document(cls, order_id: str, doc: dict[str, Any]) -> EmittedDecision:
        return cls(
            decision_id=doc["decisionId"],
            order_id=order_id,
            seq=doc["seq"],
            outcome=doc["outcome"],
            reason=doc.get("reason"),
            warehouse_id=doc.get("warehouseId"),
            estimated_days=doc.get("estimatedDays"),
            supersedes=doc.get("supersedes"),
        )


def decision_payload(decision: EmittedDecision) -> dict[str, Any]:
    """The keyword argument `decision` of the decision tasks (docs/design.md §3)."""
    return {"orderId": decision.order_id, **decision.to_document()}


def decide(state: OrderState) -> Decision | None:
    """The decision rules of docs/design.md §3, top to bottom."""
    payment, inventory, customer = state.payment, state.inventory, state.customer
    if payment is not None and payment.status == "failed":
        return Decision(outcome="rejected", reason="payment_failed")
    if inventory is not None and sum(inventory.reserved_items.values()) == 0:
        return Decision(outcome="rejected", reason="out_of_stock")
    if payment is None or payment.status != "successful" or inventory is None:
        return None
    if customer is not None and payment.amount != customer.total_amount:
        return Decision(outcome="rejected", reason="amount_mismatch")
    days = state.shipping.estimated_days if state.shipping else DEFAULT_ESTIMATED_DAYS
    return Decision(outcome="confirmed", warehouse_id=inventory.warehouse_id, estimated_days=days)


def decision_id_for(order_id: str, seq: int) -> str:
    """Deterministic, so consumers can dedupe re-deliveries."""
    return str(uuid.uuid5(DECISION_ID_NAMESPACE, f"{order_id}\x1f{seq}"))


def verdict_of(decision: Decision | None) -> tuple[str, str | None] | None:
    return None if decision is None else (decision.outcome, decision.reason)


def next_decision(
    order_id: str, last: EmittedDecision | None, current: Decision | None
) -> EmittedDecision | None:
    """The decision to emit after an apply, if (outcome, reason) changed; on_hold if withdrawn."""
    last_verdict = None if last is None else last.verdict
    if verdict_of(current) == last_verdict:
        return None
    seq = 1 if last is None else last.seq + 1
    fields = (
        {"outcome": "on_hold"}
        if current is None
        else current.model_dump(include={"outcome", "reason", "warehouse_id", "estimated_days"})
    )
    return EmittedDecision(
        decision_id=decision_id_for(order_id, seq),
        order_id=order_id,
        seq=seq,
        supersedes=None if last is None else last.decision_id,
        **fields,
    )


def decision_holds(state: OrderState) -> bool:
    """The docs/design.md §3 invariant: the last emitted decision equals decide(state)."""
    last = None if state.decision is None else state.decision.verdict
    return last == verdict_of(decide(state))
