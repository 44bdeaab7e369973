"""The five event tasks: thin wrappers over the apply pipeline (retries in tasks/base.py)."""

from __future__ import annotations

import logging
import time
import traceback
from typing import Any

import redis
from orderfleet.tasks.base import DurableTask
from orderfleet.worker import metrics
from orderfleet.worker.celery_app import app
from orderfleet.worker.pipeline import Handled, Retryable, dead_letter, handle_event_message
from orderfleet.worker.runtime import Runtime, get_runtime
from sqlalchemy.exc import DBAPIError

log = logging.getLogger(__name__)
_NO_EVENT = object()
# Failures of the servers, not of the event: retried (a bug in the event's handling is not).
ENVIRONMENTAL = (DBAPIError, redis.RedisError, OSError)


class EventTask(DurableTask):
    """Applies the `event` keyword argument; every message ends somewhere, none is lost."""

    def apply_message(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
        """Parse, apply, map the outcome: applied, duplicate or dead_lettered."""
        started = time.perf_counter()
        message = kwargs.pop("event", args[0] if len(args) == 1 else _NO_EVENT)
        subject = [args, kwargs] if message is _NO_EVENT else message
        handled = self.end_durably(subject, lambda rt: self._end(rt, message, args, kwargs))
        runtime = get_runtime()
        elapsed = time.perf_counter() - started
        stats_key = runtime.settings.stats_key
        metrics.record_end(runtime.redis, stats_key, handled.status, handled.reason, elapsed)
        if handled.outcome is not None and handled.outcome.decision is not None:
            metrics.record_decision(handled.outcome.decision.outcome)
        return handled.status

    def _end(
        self, runtime: Runtime, message: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Handled:
        """Apply the message or dead-letter it; raises when neither could be committed."""
        if message is _NO_EVENT or kwargs or len(args) > 1:
            error = "task arguments: expected exactly one keyword argument `event`"
            return dead_letter(
                runtime, "invalid_message", error, [args, kwargs], self.name, self.queue
            )
        try:
            return handle_event_message(app, runtime, self.name, message, self.queue)
        except (Retryable, *ENVIRONMENTAL):
            raise
        except Exception as exc:
            log.exception("unexpected failure applying an event")
            error = "".join(traceback.format_exception_only(exc)).strip()
            return dead_letter(runtime, "internal_error", error, message, self.name, self.queue)


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
