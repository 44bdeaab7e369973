"""Default decision tasks: record each delivery (idempotent by decisionId) and log it.

Another service consumes decisions instead by defining tasks with these names on its own
app and consuming the `orderfleet.decisions` queue (see the README). Here a malformed or
forged decision is dead-lettered, and a delivery that cannot be recorded is retried, never
acknowledged unrecorded (tasks/base.py).
"""

from __future__ import annotations

import logging
from typing import Any

from orderfleet.models import decision_id_for
from orderfleet.tasks.base import DurableTask
from orderfleet.worker.celery_app import app
from orderfleet.worker.pipeline import dead_letter
from orderfleet.worker.routing import DECISION_TASKS
from orderfleet.worker.runtime import Runtime
from orderfleet.worker.service import Outcome

log = logging.getLogger(__name__)
OUTCOME_OF_TASK = {task: outcome for outcome, task in DECISION_TASKS.items()}


class DecisionTask(DurableTask):
    """Records the `decision` keyword argument once per decisionId."""

    def record_message(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
        subject = kwargs.get("decision", [args, kwargs])
        return self.end_durably(subject, lambda rt: self._end(rt, args, kwargs, subject)).status

    def _end(
        self, runtime: Runtime, args: tuple[Any, ...], kwargs: dict[str, Any], subject: Any
    ) -> Outcome:
        problem = decision_problem(OUTCOME_OF_TASK[self.name], args, kwargs)
        if problem is not None:
            return dead_letter(runtime, "invalid_decision", problem, subject, self.name, self.queue)
        return record_decision(runtime, kwargs["decision"], self.name, self.queue)


def decision_problem(outcome: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> str | None:
    """Why this is not a decision orderfleet emitted, or None when it is one."""
    if args or set(kwargs) != {"decision"} or not isinstance(kwargs["decision"], dict):
        return "task arguments: expected exactly one keyword argument `decision`, an object"
    decision = kwargs["decision"]
    order_id, seq = decision.get("orderId"), decision.get("seq")
    if not isinstance(order_id, str) or not order_id:
        return "decision.orderId: must be a non-empty string"
    if not isinstance(seq, int) or isinstance(seq, bool) or seq < 1:
        return "decision.seq: must be an integer >= 1"
    if decision.get("outcome") != outcome:
        return f"decision.outcome: must be {outcome!r} on this task"
    if decision.get("decisionId") != decision_id_for(order_id, seq):
        return "decision.decisionId: does not match orderId and seq (UUIDv5): not ours"
    return None


def record_decision(
    runtime: Runtime, decision: dict[str, Any], task_name: str, queue: str | None
) -> Outcome:
    """Store the delivery once per decisionId; re-deliveries only bump a counter.

    A decision that orderfleet's outbox never held (forged, or from another fleet) is
    dead-lettered instead of being recorded as delivered.
    """
    with runtime.unit_of_work() as uow:
        known = uow.outbox.holds(decision["decisionId"])
        if known:
            first = uow.deliveries.record(decision, runtime.now())
            uow.ledger.count_ends([queue])
            uow.commit()
    if not known:
        error = "decision.decisionId: no such decision in the outbox (forged or foreign)"
        return dead_letter(runtime, "unknown_decision", error, decision, task_name, queue)
    log.info(
        "decision %s order=%s seq=%s outcome=%s reason=%s%s",
        decision["decisionId"],
        decision["orderId"],
        decision["seq"],
        decision["outcome"],
        decision.get("reason"),
        "" if first else " (re-delivery)",
    )
    return Outcome("recorded" if first else "duplicate")


def _decision_task(name: str) -> DecisionTask:
    """The default consumer of one decision task name of the contract (worker/routing.py)."""

    @app.task(bind=True, base=DecisionTask, name=name)
    def record(self: DecisionTask, *args: Any, **kwargs: Any) -> str:
        return self.record_message(args, kwargs)

    return record


DECISION_TASK_FOR = {outcome: _decision_task(name) for outcome, name in DECISION_TASKS.items()}
order_confirmed = DECISION_TASK_FOR["confirmed"]
order_rejected = DECISION_TASK_FOR["rejected"]
order_on_hold = DECISION_TASK_FOR["on_hold"]
