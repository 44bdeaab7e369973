"""The one retry policy of every orderfleet task that consumes a message: nothing is lost.

A message ends applied, recorded as a duplicate, or in the dead letters; until one of those is
committed it stays on the broker. A failure that is not the message's fault (any database or
Redis error, a lock, a version conflict, a dead letter that could not be written) is retried
with full-jitter backoff; after ORDERFLEET_MAX_RETRIES the message goes to the dead letters
(`retries_exhausted`), and while even that cannot be written it keeps being retried.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from celery import Task
from celery.exceptions import Reject
from orderfleet.worker import metrics
from orderfleet.worker.failures import Retryable, cause_of
from orderfleet.worker.pipeline import dead_letter, queue_of
from orderfleet.worker.retries import backoff_countdown
from orderfleet.worker.runtime import Runtime, get_runtime
from orderfleet.worker.service import Outcome


class DurableTask(Task):
    """A late-acknowledged task whose message is acknowledged only after its outcome commits."""

    acks_late = True
    reject_on_worker_lost = True
    max_retries = None  # bounded by ORDERFLEET_MAX_RETRIES in `retry_or_give_up`
    Request = "orderfleet.worker.request:DurableRequest"

    @property
    def queue(self) -> str | None:
        """The queue the message in hand came from (the message ledger counts by queue)."""
        return queue_of(self.request)

    def end_durably(self, subject: Any, work: Callable[[Runtime], Outcome]) -> Outcome:
        """Run `work`; any failure to commit an outcome becomes a retry, never an ack."""
        runtime = get_runtime()
        try:
            return work(runtime)
        except Exception as exc:
            return self.retry_or_give_up(runtime, cause_of(exc), subject)

    def retry_or_give_up(self, runtime: Runtime, cause: BaseException, subject: Any) -> Outcome:
        """Dead-letter after the last retry; otherwise (or if that fails) retry with backoff."""
        retries = self.request.retries
        if retries >= runtime.settings.max_retries:
            error = f"gave up after {retries} retries: {type(cause).__name__}: {cause}"
            try:
                return dead_letter(
                    runtime, "retries_exhausted", error, subject, self.name, self.queue
                )
            except Exception as unwritten:  # keep the message until its dead letter is written
                cause = cause_of(unwritten)
        metrics.record_retry(type(cause).__name__)
        countdown = backoff_countdown(retries, runtime.settings)
        try:
            raise self.retry(exc=Retryable(cause), countdown=countdown)
        except Reject as unsent:  # Celery could not publish the retry: keep the original
            raise Reject(unsent.reason, requeue=True) from cause
