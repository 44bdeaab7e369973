"""Celery's task request, changed where its defaults would acknowledge an unfinished message.

The rule (README, Guarantees): a message is acknowledged only after its outcome — applied,
duplicate or dead letter — is committed. Celery acknowledges a late-ack task that raised, and
acknowledges (drops) an expired or revoked one. Here a task that raised is put back on its queue,
and an expired or revoked one is acknowledged only once its dead letter is written.
"""

from __future__ import annotations

import logging
from typing import Any

from billiard.einfo import ExceptionWithTraceback
from billiard.exceptions import WorkerLostError
from celery.exceptions import Ignore, Reject, Retry, Terminated
from celery.worker.request import Request
from celery.worker.state import task_ready
from orderfleet.worker.pipeline import dead_letter, queue_of
from orderfleet.worker.runtime import get_runtime

log = logging.getLogger(__name__)

# Outcomes Celery handles without acknowledging an unfinished message, or that are ours.
_PASSED_THROUGH = (Reject, Ignore, Retry, Terminated, WorkerLostError, MemoryError)
_ended_by_signal: set[str] = set()


def ended_outside_the_task(task_id: str) -> None:
    """A failure Celery reports outside the task body was dead-lettered: ack that message."""
    _ended_by_signal.add(task_id)


class DurableRequest(Request):
    """A request whose message stays on the broker until its outcome is committed."""

    def on_failure(self, exc_info: Any, send_failed_event: bool = True, return_ok: bool = False):
        exc = exc_info.exception
        if isinstance(exc, ExceptionWithTraceback):
            exc = exc.exc
        if self.id in _ended_by_signal:
            _ended_by_signal.discard(self.id)
        elif not isinstance(exc, _PASSED_THROUGH):
            log.error(
                "task %s[%s] raised %r: message put back, not acknowledged", self.name, self.id, exc
            )
            exc_info.exception = Reject(exc, requeue=True)
        return super().on_failure(exc_info, send_failed_event, return_ok)

    def _announce_revoked(self, reason: str, terminated: bool, signum: Any, expired: bool) -> None:
        if terminated or _dead_letter_unrun(self, expired):
            super()._announce_revoked(reason, terminated, signum, expired)
            return
        task_ready(self)
        self.reject(requeue=True)
        self._already_revoked = True


def _dead_letter_unrun(request: Request, expired: bool) -> bool:
    """Record an expired or revoked message as a dead letter; whether that was committed."""
    if expired:
        reason, error = "expired", f"expired at {request.expires} before it ran"
    else:
        reason, error = "revoked", "revoked (a control command, e.g. from Flower) before it ran"
    try:
        kwargs = request.kwargs if isinstance(request.kwargs, dict) else {}
        message = kwargs.get("event", kwargs.get("decision", [request.args, request.kwargs]))
        dead_letter(get_runtime(), reason, error, message, request.name, queue_of(request))
    except Exception:
        log.exception(
            "could not dead-letter the %s task %s; put back on its queue", reason, request.id
        )
        return False
    return True
