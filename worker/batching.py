"""The event tasks' Celery strategy: a partition worker takes its messages in batches.

Celery hands every received message to its task's strategy. Here the event messages of a
worker are gathered and applied together (worker/batch.py) as soon as the batch holds
ORDERFLEET_BATCH_SIZE events, its queues are found empty for ORDERFLEET_BATCH_LINGER seconds
(Redis: worker/transport.py; RabbitMQ: nothing more to read on the consumer's connection), or
ORDERFLEET_BATCH_INTERVAL seconds have passed since its first message, whichever comes first;
so a lone event is held back a few milliseconds at most.
Each message is then acknowledged, or, for what could not end, re-published as a retry with
backoff and then acknowledged. Nothing is acknowledged before its outcome is committed. The
worker's prefetch covers a batch (`orderfleet worker` sets it); a warm shutdown puts the
gathered, unapplied messages back.
With ORDERFLEET_BATCHING=false every message is its own batch.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections import Counter
from typing import Any

from celery import Celery, bootsteps
from celery.app.trace import LOG_RECEIVED, LOG_RETRY, LOG_SUCCESS
from celery.utils.imports import symbol_by_name
from celery.utils.time import timezone
from celery.worker.request import create_request_cls
from celery.worker.strategy import hybrid_to_proto2, proto1_to_proto2
from kombu.asynchronous.timer import to_timestamp
from orderfleet.worker import metrics, rabbitmq, transport
from orderfleet.worker.batch import MessageEnd, Received, apply_batch
from orderfleet.worker.failures import unreachable
from orderfleet.worker.outbox import mark_sent
from orderfleet.worker.pipeline import dead_letter_all, events_of_message, queue_of
from orderfleet.worker.retries import backoff_countdown
from orderfleet.worker.routing import BATCH_TASK
from orderfleet.worker.runtime import get_runtime

log = logging.getLogger(__name__)
trace_log = logging.getLogger("celery.app.trace")  # where Celery logs each task's end
OUTAGE_PAUSES = (0.1, 0.2, 0.4, 0.8, 1.6)  # seconds; about 3 s in all
SAFETY_SWEEP = 1.0  # seconds: a batch left behind by a quiet Redis connection still flushes
MARK_EVERY = 1.0  # seconds: a quiet worker marks its sent decisions (the relay waits longer)


class Batcher:
    """The gathered requests of one worker process, and when to apply them."""

    def __init__(self, app: Celery) -> None:
        self.app = app
        self.consumer: Any = None
        self.requests: list[Any] = []
        self.events = 0
        self.first_at: float | None = None  # when the first gathered request arrived
        settings = get_runtime().settings
        self.size, self.interval = settings.flush_size, settings.batch_interval
        self.wait = settings.batch_linger if settings.batching else 0.0
        transport.when_idle(self.linger, self.flush)  # queues empty: apply what we have

    def bind(self, consumer: Any) -> None:
        """Use this consumer's timer and event dispatcher (again after a reconnect)."""
        if consumer is self.consumer:
            return
        self.consumer = consumer
        ours = isinstance(getattr(consumer.connection, "transport", None), transport.Transport)
        sweep = SAFETY_SWEEP if ours else self.interval
        consumer.timer.call_repeatedly(sweep, self.flush_if_due, priority=5)
        consumer.timer.call_repeatedly(MARK_EVERY, self.mark_sent, priority=5)
        if rabbitmq.consumes_from_rabbitmq(consumer) and consumer.hub is not None:
            consumer.hub.on_tick.add(self.flush_if_drained)  # each turn of the event loop

    def flush_if_drained(self) -> None:
        """RabbitMQ pushes messages as the prefetch allows: when nothing more waits to be read
        on the consumer's connection, its queues are, for this worker, empty."""
        if self.linger() == 0 and rabbitmq.nothing_to_read(self.consumer.connection):
            self.flush()

    def add(self, request: Any, in_delivery: bool = True) -> None:
        """Gather one request; apply the batch when it is full or its time has come."""
        self.requests.append(request)
        self.events += _event_count(request)
        now = time.monotonic()
        if self.first_at is None:
            self.first_at = now
        full = self.events >= self.size or len(self.requests) >= self.size
        if full or now >= self.first_at + self.interval:
            if in_delivery or not transport.brpop_outstanding():
                self.flush()
            else:
                self.first_at = now - self.interval  # due: flush after the outstanding BRPOP

    def linger(self) -> float | None:
        """None when nothing is gathered; else how long it may still wait for more messages."""
        if self.first_at is None:
            return None
        if self.events >= self.size:
            return 0.0
        return max(0.0, self.first_at + self.wait - time.monotonic())

    def flush_if_due(self) -> None:
        due = self.first_at is not None and time.monotonic() >= self.first_at + self.interval
        if due and not transport.brpop_outstanding():
            self.flush()

    def mark_sent(self) -> None:
        """Quiet: mark the decisions sent lately as published (the next commit would have)."""
        if self.first_at is None:
            _mark_sent()

    def flush(self) -> None:
        """Apply the gathered requests, then acknowledge or retry each one."""
        taken, self.requests, self.events, self.first_at = self.requests, [], 0, None
        if taken:
            Flush(self.app, self.consumer, taken).run()

    def requeue(self) -> None:
        """Put the gathered, unapplied messages back on their queues (warm shutdown)."""
        taken, self.requests, self.events, self.first_at = self.requests, [], 0, None
        for request in taken:  # at once, not on the next loop turn: the loop is ending
            request.message.reject_log_error(log, request.connection_errors, requeue=True)
        if taken:
            log.info("put %d gathered messages back on their queues", len(taken))


def _mark_sent() -> None:
    try:
        mark_sent(get_runtime())
    except Exception as exc:  # kept for the next try; the relay sends them again if need be
        log.warning("sent decisions not marked published yet: %s", exc)


def _event_count(request: Any) -> int:
    if request.name != BATCH_TASK:
        return 1
    events = request.kwargs.get("events") if isinstance(request.kwargs, dict) else None
    return len(events) if isinstance(events, list) else 1


class Flush:
    """One batch: applied together, ended one message at a time, shown as one task (one
    task event per batch: received and started would add two broker round trips)."""

    def __init__(self, app: Celery, consumer: Any, requests: list[Any]) -> None:
        self.app, self.consumer, self.requests = app, consumer, requests
        self.id = str(uuid.uuid4())
        self.retried: Counter[str] = Counter()  # tries of the whole batch in place

    def run(self) -> None:
        runtime = get_runtime()
        started = time.perf_counter()
        ends = self._apply(runtime)
        tally: Counter[str] = Counter(self.retried)
        seconds = time.perf_counter() - started
        self._acknowledge([r for r, end in zip(self.requests, ends, strict=True) if end.ended])
        for request, end in zip(self.requests, ends, strict=True):
            tally.update(end.counts)
            if end.ended:
                _log(
                    LOG_SUCCESS,
                    request,
                    runtime=f"{seconds:.6f}",
                    return_value=_summary(end.counts),
                )
            else:
                tally.update(self._retry(request, end))
                _log(LOG_RETRY, request, exc=repr(end.cause))
        seconds = time.perf_counter() - started
        metrics.record_batch(tally, seconds)
        if self._events_on():  # one event: Flower takes name and kwargs from the first it sees
            self._event("task-succeeded", **self._shown(), result=_summary(tally), runtime=seconds)

    def _apply(self, runtime: Any) -> list[MessageEnd]:
        """Apply the batch; while a server is unreachable and nothing could be committed, wait
        and try the same batch again (a few seconds at most) before its messages are retried:
        an outage is not the messages' fault and should not use up their retries."""
        messages = [_received(r) for r in self.requests]
        for pause in (*OUTAGE_PAUSES, None):
            try:
                ends = apply_batch(self.app, runtime, messages)
            except Exception as exc:  # a bug of ours: nothing was committed, retry every message
                log.exception("applying a batch failed; its messages are retried")
                return [MessageEnd(whole=True, cause=exc) for _ in self.requests]
            if pause is None or not all(end.whole and unreachable(end.cause) for end in ends):
                return ends
            self.retried[f"retry:{type(ends[0].cause).__name__}"] += len(ends)
            log.warning(
                "a server is unreachable (%s): batch tried again in %g s", ends[0].cause, pause
            )
            time.sleep(pause)
        return ends

    def _acknowledge(self, requests: list[Any]) -> None:
        """Acknowledge ended messages together (after a reconnect, as Celery does, one by one:
        its acks restore the prefetch count it lowered)."""
        consumer = self.consumer
        restoring = consumer is not None and consumer.restart_count > 0
        if restoring and not consumer._maximum_prefetch_restored:
            for request in requests:
                request.acknowledge()
            return
        try:
            transport.ack_all([r.message for r in requests])
        except Exception as exc:  # the messages come back after the visibility timeout
            log.critical("could not acknowledge %d messages: %r", len(requests), exc)
        for request in requests:
            request.acknowledged = True

    def _retry(self, request: Any, end: MessageEnd) -> Counter[str]:
        """Re-publish what could not end (with backoff), or dead-letter it after the last try."""
        runtime = get_runtime()
        settings = runtime.settings
        retries = int(request.request_dict.get("retries") or 0)
        cause = end.cause or RuntimeError("unknown")
        if retries >= settings.max_retries:
            error = f"gave up after {retries} retries: {type(cause).__name__}: {cause}"
            try:
                raws = _subjects(request, end)
                queue = queue_of(request)
                dead_letter_all(runtime, "retries_exhausted", error, raws, request.name, queue)
            except Exception as exc:  # keep the message until its dead letter is written
                log.warning("retries exhausted but not dead-lettered (%s): retried again", exc)
            else:
                request.acknowledge()
                return Counter({"dead_letter:retries_exhausted": len(raws)})
        partial = request.name == BATCH_TASK and not end.whole
        kwargs = {"events": end.retry} if partial else request.kwargs
        queue = queue_of(request)
        try:
            self.app.send_task(
                request.name,
                args=request.args,
                kwargs=kwargs,
                task_id=request.id,
                retries=retries + 1,
                countdown=backoff_countdown(retries, settings),
                expires=request.expires,
                queue=queue,
                routing_key=queue,
                retry=False,
            )
        except Exception as exc:  # not re-published: the original goes back instead
            log.warning("retry of %s not published (%s): message put back", request.id, exc)
            request.reject(requeue=True)
        else:
            request.acknowledge()
        return Counter({f"retry:{type(cause).__name__}": 1})

    def _shown(self) -> dict[str, Any]:
        """What Flower shows of the batch: how many messages and events, which orders."""
        orders = sorted({o for r in self.requests for o in _orders_of(r)})
        shown: dict[str, Any] = {
            "messages": len(self.requests),
            "events": sum(_event_count(r) for r in self.requests),
            "orders": orders[:20],
        }
        if len(orders) > 20:
            shown["more_orders"] = len(orders) - 20
        return {"name": BATCH_TASK, "args": "()", "kwargs": repr(shown), "retries": 0}

    def _events_on(self) -> bool:
        eventer = getattr(self.consumer, "event_dispatcher", None)
        return eventer is not None and eventer.enabled

    def _event(self, kind: str, **fields: Any) -> None:
        if self._events_on():
            self.consumer.event_dispatcher.send(kind, uuid=self.id, **fields)


def _log(line: str, request: Any, level: int = logging.INFO, **fields: Any) -> None:
    """Celery's own per-task log lines, so logs read (and are searched) as they always were."""
    if trace_log.isEnabledFor(level):
        context = {"name": request.name, "id": request.id, **fields}
        trace_log.log(level, line, context, extra={"data": context})


def _received(request: Any) -> Received:
    size = len(request.body) if isinstance(request.body, bytes | str) else 0
    return Received(request.name, request.args, request.kwargs, queue_of(request), size)


def _subjects(request: Any, end: MessageEnd) -> list[Any]:
    """The events given up on (each its own dead letter), or the message as it came."""
    if not end.whole:
        return list(end.retry)
    return events_of_message(request.name, request.args, request.kwargs)


def _orders_of(request: Any) -> list[str]:
    kwargs = request.kwargs if isinstance(request.kwargs, dict) else {}
    events = kwargs.get("events") if request.name == BATCH_TASK else [kwargs.get("event")]
    found = []
    for event in events if isinstance(events, list) else []:
        order_id = event.get("orderId") if isinstance(event, dict) else None
        if isinstance(order_id, str):
            found.append(order_id)
    return found


def _summary(tally: Counter[str]) -> str:
    return ", ".join(f"{k}={v}" for k, v in sorted(tally.items())) or "empty"


_batcher: Batcher | None = None


def batcher(app: Celery) -> Batcher:
    """The process's batcher (one for every event task)."""
    global _batcher
    if _batcher is None:
        _batcher = Batcher(app)
    return _batcher


def strategy(task: Any, app: Celery, consumer: Any, **_: Any) -> Any:
    """Celery's default strategy, with the batcher where it would run the task now."""
    gatherer = batcher(app)
    gatherer.bind(consumer)
    hostname, eventer = consumer.hostname, consumer.event_dispatcher
    request_class = create_request_cls(
        symbol_by_name(task.Request), task, consumer.pool, hostname, eventer, app=app
    )
    revoked = consumer.controller.state.revoked

    def take_due(request: Any) -> None:
        consumer.qos.decrement_eventually()
        gatherer.add(request, in_delivery=False)

    def on_message(message: Any, body: Any, ack: Any, reject: Any, callbacks: Any) -> None:
        if body is None and "args" not in message.payload:
            body, headers, decoded, utc = message.body, message.headers, False, True
        elif "args" in message.payload:  # protocol 1 and hybrid messages, as Celery takes them
            body, headers, decoded, utc = hybrid_to_proto2(message, message.payload)
        else:
            body, headers, decoded, utc = proto1_to_proto2(message, body)
        request = request_class(
            message,
            on_ack=ack,
            on_reject=reject,
            app=app,
            hostname=hostname,
            eventer=eventer,
            task=task,
            connection_errors=consumer.connection_errors,
            body=body,
            headers=headers,
            decoded=decoded,
            utc=utc,
        )
        if (request.expires or request.id in revoked) and request.revoked():
            return
        _log(LOG_RECEIVED, request, level=logging.DEBUG)  # the end is logged at INFO
        if request.eta:
            consumer.qos.increment_eventually()
            when = to_timestamp(timezone.to_system(request.eta) if request.utc else request.eta)
            consumer.timer.call_at(when, take_due, (request,), priority=6)
            return
        gatherer.add(request)

    return on_message


class RequeueGathered(bootsteps.StartStopStep):
    """On a warm shutdown or a lost connection, gathered messages go back to their queues."""

    requires = ("celery.worker.consumer.tasks:Tasks",)

    def stop(self, consumer: Any) -> None:
        if _batcher is not None:
            _batcher.requeue()
            _mark_sent()

    shutdown = stop
