"""A Celery consumer that dead-letters what Celery itself would only log and drop.

Undecodable bodies, disallowed content types, unknown task names and messages that are not
Celery tasks at all reach these hooks before any task runs; each one is recorded with a
reason before the message is acknowledged, so nothing received is silently lost.
"""

from __future__ import annotations

import logging
from typing import Any

from celery import signals
from celery.worker.consumer import Consumer
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
    sender: Any = None, args: Any = None, kwargs: Any = None, exception: Any = None, **_: Any
) -> None:
    """Celery failed outside the task body (e.g. kwargs not a mapping): record the message."""
    from orderfleet.worker.pipeline import dead_letter

    name = getattr(sender, "name", None)
    error = f"malformed task message: {type(exception).__name__}: {exception}"
    dead_letter(get_runtime(), "invalid_task", error, [args, kwargs], name)


def _record(message: Any, reason: str, error: str) -> bool:
    """Write the dead letter; on failure put the message back for a later try."""
    from orderfleet.worker.pipeline import dead_letter

    try:
        dead_letter(get_runtime(), reason, error, _raw_body(message), _task_name(message))
    except Exception:
        log.exception("could not dead-letter a %s message; re-queued", reason)
        message.reject(requeue=True)
        return False
    return True


def _task_name(message: Any) -> str | None:
    headers = getattr(message, "headers", None) or {}
    name = headers.get("task")
    return name if isinstance(name, str) else None


def _raw_body(message: Any) -> str:
    """The body as text (the dead letter store caps its size)."""
    body = message.body
    return body if isinstance(body, str) else bytes(body).decode("utf-8", errors="replace")
