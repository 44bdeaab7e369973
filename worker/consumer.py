"""A Celery consumer that dead-letters what Celery itself would only log and drop.

Undecodable bodies, disallowed content types, unknown task names and messages that are not
Celery tasks at all reach these hooks before any task runs; each one is recorded with a
reason before the message is acknowledged, so nothing received is silently lost. So is a
message RabbitMQ dead-lettered (its delivery limit reached: worker/rabbitmq.py), whatever
its task.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from typing import Any

from celery import signals
from celery.worker.consumer import Consumer
from orderfleet.worker import rabbitmq
from orderfleet.worker.pipeline import dead_letter, dead_letter_all, queue_of, subjects_of
from orderfleet.worker.request import ended_outside_the_task
from orderfleet.worker.runtime import get_runtime

log = logging.getLogger(__name__)


class DeadLetteringConsumer(Consumer):
    """Celery's consumer, with a dead letter for every message it cannot hand to a task."""

    def on_decode_error(self, message: Any, exc: Exception) -> None:
        error = f"cannot decode the message ({message.content_type}): {type(exc).__name__}: {exc}"
        if _record(message, "undecodable_message", error):
            super().on_decode_error(message, exc)

    def on_unknown_message(self, body: Any, message: Any) -> None:
        if _record(message, "unknown_message", "not a Celery task message (no task header)"):
            super().on_unknown_message(body, message)

    def on_unknown_task(self, body: Any, message: Any, exc: Exception) -> None:
        error = f"unknown task {_task_name(message)!r}: no orderfleet task has that name"
        if _record(message, "unknown_task", error):
            super().on_unknown_task(body, message, exc)

    def create_task_handler(self, *args: Any, **kwargs: Any) -> Any:
        """Celery's handler, guarded: a malformed body must not crash the worker (a poison loop)."""
        handle = super().create_task_handler(*args, **kwargs)

        def on_task_received(message: Any) -> Any:
            refused = _refusal(message)
            if refused is not None:
                if _record(message, *refused):
                    message.ack()
                return None
            death = rabbitmq.death_of(message)
            if death is not None:
                if _record_death(message, *death):
                    message.ack()
                return None
            _bound_eta(message)
            try:
                return handle(message)
            except Exception as exc:
                if message.acknowledged:
                    log.exception("failure after the message was acknowledged")
                    return None
                error = f"malformed task message: {type(exc).__name__}: {exc}"
                if _record(message, "invalid_task", error):
                    message.ack()
                return None

        return on_task_received

    def on_invalid_task(self, body: Any, message: Any, exc: Exception) -> None:
        if _record(message, "invalid_task", f"invalid task message: {exc}"):
            super().on_invalid_task(body, message, exc)


@signals.task_internal_error.connect
def dead_letter_internal_error(
    sender: Any = None,
    task_id: str | None = None,
    args: Any = None,
    kwargs: Any = None,
    request: Any = None,
    exception: Any = None,
    **_: Any,
) -> None:
    """Celery failed outside the task body (e.g. kwargs not a mapping): record the message.

    Only a written dead letter lets the message be acknowledged (worker/request.py).
    """
    name = getattr(sender, "name", None)
    error = f"malformed task message: {type(exception).__name__}: {exception}"
    dead_letter(get_runtime(), "invalid_task", error, [args, kwargs], name, queue_of(request))
    if task_id is not None:
        ended_outside_the_task(task_id)


def _refusal(message: Any) -> tuple[str, str] | None:
    """A reason and error for a message no task may take, or None."""
    headers = getattr(message, "headers", None)
    if headers is not None and not isinstance(headers, dict):
        return "invalid_task", "message headers are not an object"
    compression = (headers or {}).get("compression")
    if compression:
        error = f"compressed ({compression}): orderfleet takes uncompressed messages only"
        return "compressed_message", error
    return None


def _bound_eta(message: Any) -> None:
    """Run now a task whose ETA lies beyond half the visibility timeout.

    The Redis transport re-delivers an unacknowledged message after the visibility timeout,
    so a worker holding one for a far ETA would get copy after copy (kombu#337). Events and
    decisions converge whatever their order, so running them now loses nothing.
    """
    headers = message.headers or {}
    eta = headers.get("eta")
    if not eta:
        return
    bound = get_runtime().settings.visibility_timeout / 2
    try:
        when = datetime.fromisoformat(str(eta))
    except ValueError:
        when = None
    if when is not None and when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    if when is None or when > datetime.now(UTC) + timedelta(seconds=bound):
        log.warning(
            "task %s: ETA %s is beyond %.0f s: running it now", headers.get("id"), eta, bound
        )
        headers["eta"] = None


def _record(message: Any, reason: str, error: str) -> bool:
    """Write the dead letter; on failure put the message back for a later try."""
    try:
        raw, name = _raw_body(message), _task_name(message)
        dead_letter(get_runtime(), reason, error, raw, name, queue_of(message))
    except Exception:
        log.exception("could not dead-letter a %s message; re-queued", reason)
        message.reject(requeue=True)
        return False
    return True


def _record_death(message: Any, why: str, queue: str | None) -> bool:
    """Write every event of a message the broker gave up on; on failure put it back."""
    reason = "delivery_limit" if why == "delivery_limit" else f"broker_{why}"
    limit = get_runtime().settings.delivery_limit
    error = f"dead-lettered by RabbitMQ from {queue} ({why}; delivery limit {limit})"
    name, subjects = subjects_of(message)
    try:
        dead_letter_all(get_runtime(), reason, error, subjects, name, queue)
    except Exception:
        log.exception("could not dead-letter a message the broker gave up on; re-queued")
        message.reject(requeue=True)
        return False
    return True


def _task_name(message: Any) -> str | None:
    headers = getattr(message, "headers", None)
    name = headers.get("task") if isinstance(headers, dict) else None
    return name if isinstance(name, str) else None


def _raw_body(message: Any) -> str:
    """The body as text (the dead letter store caps its size)."""
    body = message.body
    return body if isinstance(body, str) else bytes(body).decode("utf-8", errors="replace")
