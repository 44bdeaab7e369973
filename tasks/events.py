"""The five event tasks: thin wrappers over the apply pipeline, retries in one place."""

from __future__ import annotations

import logging
import traceback
from typing import Any

from celery import Task

from worker.app import app
from worker.pipeline import Retryable, dead_letter, handle_event_message
from worker.retries import backoff_countdown
from worker.runtime import get_runtime

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
        message = kwargs.pop("event", args[0] if len(args) == 1 else _NO_EVENT)
        if message is _NO_EVENT or kwargs or len(args) > 1:
            error = "task arguments: expected exactly one keyword argument `event`"
            return dead_letter(runtime, "invalid_message", error, [args, kwargs], self.name).status
        try:
            return handle_event_message(app, runtime, self.name, message).status
        except Retryable as exc:
            return self._retry_or_give_up(exc, message)
        except Exception as exc:
            log.exception("unexpected failure applying an event")
            error = "".join(traceback.format_exception_only(exc)).strip()
            return dead_letter(runtime, "internal_error", error, message, self.name).status

    def _retry_or_give_up(self, exc: Retryable, message: Any) -> str:
        runtime = get_runtime()
        if self.request.retries >= runtime.settings.max_retries:
            error = f"gave up after {self.request.retries} retries: {exc}"
            return dead_letter(runtime, "retries_exhausted", error, message, self.name).status
        raise self.retry(
            exc=exc, countdown=backoff_countdown(self.request.retries, runtime.settings)
        )


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
