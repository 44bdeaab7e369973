"""What every message path shares: dead letters, and the queue and events of a message.

Every message ends applied, recorded as a duplicate, or in the dead letters with a reason;
a dead letter that meets a transient failure raises `Retryable` (worker/failures.py).
"""

from __future__ import annotations

import logging
from typing import Any

from kombu.utils.encoding import bytes_to_str
from orderfleet.models import raw_text
from orderfleet.worker.failures import transient_as_retryable
from orderfleet.worker.routing import BATCH_TASK, event_order_id
from orderfleet.worker.runtime import Runtime
from orderfleet.worker.service import Outcome
from orderfleet.worker.store import DeadLetter

log = logging.getLogger(__name__)


def queue_of(carrier: Any) -> str | None:
    """The queue a message (or a task request) came from: its delivery_info routing key."""
    info = getattr(carrier, "delivery_info", None)
    return info.get("routing_key") if isinstance(info, dict) else None


def dead_letter(
    runtime: Runtime,
    reason: str,
    error: str,
    message: Any,
    task_name: str | None,
    queue: str | None = None,
) -> Outcome:
    """Record a message that will not be applied, with why; it stays replayable.

    Raises Retryable when the database connection is lost, so the message is tried again
    instead of being misfiled or dropped.
    """
    letter = letter_for(reason, error, message, task_name)
    with transient_as_retryable(), runtime.unit_of_work() as uow:
        uow.dead_letters.add(letter, runtime.now())
        uow.ledger.count_ends([queue])
        uow.commit()
    log.warning("dead letter (%s) from %s: %s", reason, task_name, error[:500])
    return Outcome("dead_lettered", reason)


def dead_letter_all(
    runtime: Runtime,
    reason: str,
    error: str,
    raws: list[Any],
    task_name: str | None,
    queue: str | None,
) -> None:
    """Dead-letter every event of one message, and end the message, in one transaction."""
    with transient_as_retryable(), runtime.unit_of_work() as uow:
        for raw in raws:
            uow.dead_letters.add(letter_for(reason, error, raw, task_name), runtime.now())
        uow.ledger.count_ends([queue])
        uow.commit()
    log.warning("%d dead letters (%s) from %s: %s", len(raws), reason, task_name, error[:500])


def subjects_of(message: Any) -> tuple[str | None, list[Any]]:
    """The task name and the events of a kombu task message (each its own dead letter), else
    its body as text."""
    headers = message.headers if isinstance(message.headers, dict) else {}
    name = headers.get("task")
    try:
        args, kwargs, _ = message.decode()
    except Exception:
        return name, [bytes_to_str(message.body)]
    return name, events_of_message(name, args, kwargs)


def events_of_message(task_name: str | None, args: Any, kwargs: Any) -> list[Any]:
    """The events a task message carries (each its own dead letter), else the message as it came."""
    named = kwargs if isinstance(kwargs, dict) else {}
    if task_name == BATCH_TASK and isinstance(named.get("events"), list) and named["events"]:
        return list(named["events"])
    if set(named) == {"event"} and not args:
        return [named["event"]]
    return [[args, kwargs]]


def letter_for(reason: str, error: str, message: Any, task_name: str | None) -> DeadLetter:
    """The dead letter of a message (or one event of it), with the ids it names if any."""
    return DeadLetter(
        reason=reason,
        error=error,
        raw=raw_text(message),
        task_name=task_name,
        order_id=event_order_id(message),
        event_id=_event_id_of(message),
    )


def _event_id_of(message: Any) -> str | None:
    value = message.get("eventId", message.get("event_id")) if isinstance(message, dict) else None
    return value if isinstance(value, str) else None
