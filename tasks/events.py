"""The five event tasks: thin wrappers over the apply pipeline; retries and metrics here only."""

from __future__ import annotations

import logging
import time
import traceback
from typing import Any

from celery import Task
from orderfleet.worker import metrics
from orderfleet.worker.celery_app import app
from orderfleet.worker.pipeline import Handled, Retryable, dead_letter, handle_event_message
from orderfleet.worker.retries import backoff_countdown
from orderfleet.worker.runtime import Runtime, get_runtime

log = logging.getLogger(__name__)
_NO_EVENT = object()


class EventTask(Task):
    """Applies the `event` keyword argument; every message ends somewhere, none is lost."""

    acks_late = True
    reject_on_worker_lost = True
    max_retries = None  # bounded by ORDERFLEET_MAX_RETRIES in `_retry_or_give_up`

    def apply_message(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
        """Parse, apply, map the outcome: applied, duplicate or dead_lettered."""
        runtime = get_runtime()
        started = time.perf_counter()
        handled = self._handle(runtime, args, kwargs)
        elapsed = time.perf_counter() - started
        stats_key = runtime.settings.stats_key
        metrics.record_end(runtime.redis, stats_key, handled.status, handled.reason, elapsed)
        if handled.outcome is not None and handled.outcome.decision is not None:
            metrics.record_decision(handled.outcome.decision.outcome)
        return handled.status

    def _handle(self, runtime: Runtime, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Handled:
        message = kwargs.pop("event", args[0] if len(args) == 1 else _NO_EVENT)
        try:
            return self._end(runtime, message, args, kwargs)
        except Retryable as exc:  # also when a dead letter could not be written yet
            subject = [args, kwargs] if message is _NO_EVENT else message
            return self._retry_or_give_up(runtime, exc, subject)

    def _end(
        self, runtime: Runtime, message: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Handled:
        """Apply the message or dead-letter it; Retryable when a transient failure stopped both."""
        if message is _NO_EVENT or kwargs or len(args) > 1:
            error = "task arguments: expected exactly one keyword argument `event`"
            return dead_letter(runtime, "invalid_message", error, [args, kwargs], self.name)
        try:
            return handle_event_message(app, runtime, self.name, message)
        except Retryable:
            raise
        except Exception as exc:
            log.exception("unexpected failure applying an event")
            error = "".join(traceback.format_exception_only(exc)).strip()
            return dead_letter(runtime, "internal_error", error, message, self.name)

    def _retry_or_give_up(self, runtime: Runtime, exc: Retryable, message: Any) -> Handled:
        if self.request.retries >= runtime.settings.max_retries:
            error = f"gave up after {self.request.retries} retries: {exc}"
            try:
                return dead_letter(runtime, "retries_exhausted", error, message, self.name)
            except Retryable as unwritten:  # keep the message until its dead letter is written
                exc = unwritten
        metrics.record_retry(runtime.redis, runtime.settings.stats_key, type(exc.cause).__name__)
        countdown = backoff_countdown(self.request.retries, runtime.settings)
        raise self.retry(exc=exc, countdown=countdown)


@app.task(bind=True, base=EventTask, name="orderfleet.events.order_created")
def order_created(self: EventTask, *args: Any, **kwargs: Any) -> str:
    return self.apply_message(args, kwargs)


@app.task(bind=True, base=EventTask, name="orderfleet.events.inventory_reserved")
def inventory_reserved(self: EventTask, *args: Any, **kwargs: Any) -> str:
    return self.apply_message(args, kwargs)


@app.task(bind=True, base=EventTask, name="orderfleet.events.payment_processed")
def payment_processed(self: EventTask, *args: Any, **kwargs: Any) -> str:
    return self.apply_message(args, kwargs)


@app.task(bind=True, base=EventTask, name="orderfleet.events.shipping_calculated")
def shipping_calculated(self: EventTask, *args: Any, **kwargs: Any) -> str:
    return self.apply_message(args, kwargs)


@app.task(bind=True, base=EventTask, name="orderfleet.events.loyalty_points_updated")
def loyalty_points_updated(self: EventTask, *args: Any, **kwargs: Any) -> str:
    return self.apply_message(args, kwargs)
