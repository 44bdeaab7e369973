"""Default decision tasks: record each delivery (idempotent by decisionId) and log it.

Another service consumes decisions instead by defining tasks with these names on its own
app and consuming the `orderfleet.decisions` queue (see the README).
"""

from __future__ import annotations

import logging
from typing import Any

from orderfleet.worker.celery_app import app
from orderfleet.worker.runtime import get_runtime

log = logging.getLogger(__name__)


def record_decision(decision: dict[str, Any]) -> str:
    """Store the delivery once per decisionId; re-deliveries only bump a counter."""
    runtime = get_runtime()
    with runtime.unit_of_work() as uow:
        first = uow.deliveries.record(decision, runtime.now())
        uow.commit()
    log.info(
        "decision %s order=%s seq=%s outcome=%s reason=%s%s",
        decision["decisionId"],
        decision["orderId"],
        decision["seq"],
        decision["outcome"],
        decision.get("reason"),
        "" if first else " (re-delivery)",
    )
    return "recorded" if first else "duplicate"


@app.task(name="orderfleet.decisions.order_confirmed", acks_late=True)
def order_confirmed(decision: dict[str, Any]) -> str:
    return record_decision(decision)


@app.task(name="orderfleet.decisions.order_rejected", acks_late=True)
def order_rejected(decision: dict[str, Any]) -> str:
    return record_decision(decision)


@app.task(name="orderfleet.decisions.order_on_hold", acks_late=True)
def order_on_hold(decision: dict[str, Any]) -> str:
    return record_decision(decision)
