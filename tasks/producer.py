"""The producer API: validate first, route by orderId, send. Needs only the broker URL.

`send_raw` is the one way to send an event object unvalidated, as it is (the simulator's broken
events, replayed dead letters).

Light by design: Celery, kombu and pydantic; never the store, metrics or CLI libraries, and
never an embedded server (no ORDERFLEET_BROKER_URL is a SettingsError naming it).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass
from typing import Any

import redis
from celery import Celery
from kombu.exceptions import BatchPublishError, OperationalError
from kombu.utils.functional import retry_over_time
from orderfleet.models import Envelope, Event, parse_event
from orderfleet.worker.celery_app import app as default_app
from orderfleet.worker.partition_count import check_agreement, recorded_partitions
from orderfleet.worker.routing import (
    BATCH_TASK,
    MAX_BATCH_BYTES,
    MAX_BATCH_EVENTS,
    TASK_FOR_TYPE,
    partition_for,
    queue_name,
    route_for,
)
from orderfleet.worker.servers import BROKER, Embedded, locks_url_of_broker, resolve_servers
from orderfleet.worker.settings import Settings, load_settings

BATCH_SIZE = 1000  # messages per pipelined publish
BULK_HEADROOM = 4096  # bytes of a bulk message's body that are not its events
BROKER_ERRORS = (OperationalError, BatchPublishError)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PublishReceipt:
    """Where an event went: its (possibly derived) id, task, partition and queue."""

    event_id: str
    order_id: str
    event_type: str
    task_name: str
    partition: int
    queue: str
    task_id: str


@dataclass(frozen=True)
class RawReceipt:
    """Where a raw event went: its task, queue and task id."""

    task_name: str
    queue: str
    task_id: str


def publish(
    event: Mapping[str, Any] | str | bytes | Envelope, *, app: Celery | None = None
) -> PublishReceipt:
    """Validate (raises InvalidEvent before anything is sent), route and send one event."""
    return publish_many([event], app=app, bulk=False)[0]


def publish_many(
    events: Iterable[Mapping[str, Any] | str | bytes | Envelope],
    *,
    app: Celery | None = None,
    bulk: bool = True,
    retry_policy: Mapping[str, Any] | None = None,
    on_retry: Callable[[Exception, int], None] | None = None,
) -> list[PublishReceipt]:
    """Validate every event first, then send them pipelined on one connection.

    `bulk` (the default): the events of each partition go in bulk messages
    (`orderfleet.events.batch`, up to 1,000 events and 1 MiB each); otherwise one message per
    event, as `publish` sends.

    A pipelined batch that fails on a broker connection error is re-sent whole (its delivery
    is uncertain; events deduplicate by eventId), under `retry_policy` (kombu's max_retries,
    interval_start, interval_step, interval_max; default the app's task_publish_retry_policy,
    as `apply_async` has). `on_retry(exc, retries)` hears of each re-send.
    """
    settings = load_settings()
    app = _checked_app(settings, app)
    parsed = [parse_event(event) for event in events]
    send = _send_bulk if bulk else _send_all
    what = f"{len(parsed)} events"
    args = (app, parsed, settings.partitions)
    return _retried(app, send, args, what, retry_policy, on_retry)


def send_raw(
    wire: Mapping[str, Any],
    task_name: str | None = None,
    *,
    app: Celery | None = None,
    retry_policy: Mapping[str, Any] | None = None,
    on_retry: Callable[[Exception, int], None] | None = None,
) -> RawReceipt:
    """Send an event object as it is, unvalidated (a broken one on purpose, a replayed one).

    It goes to `task_name`, by default its eventType's task (OrderCreated's for an unknown
    type), on its order's partition, retried as publish_many retries."""
    settings = load_settings()
    app = _checked_app(settings, app)
    name = task_name or _task_for_raw(wire)
    queue = route_for(name, {"event": wire}, settings.partitions) or queue_name(0)
    args = (app, name, queue, dict(wire))
    return _retried(app, _send_raw, args, "a raw event", retry_policy, on_retry)


def _task_for_raw(wire: Mapping[str, Any]) -> str:
    """The task of a raw event's eventType; OrderCreated's for anything else."""
    kind = wire.get("eventType")
    return TASK_FOR_TYPE.get(kind if isinstance(kind, str) else "", TASK_FOR_TYPE["OrderCreated"])


def _checked_app(settings: Settings, app: Celery | None) -> Celery:
    """The given app, or the default one once the broker URL and the fleet's P are checked."""
    if app is not None:
        return app
    servers = resolve_servers(settings, [BROKER], Embedded.NEVER)  # raises, naming it
    _check_partition_count(settings, locks_url_of_broker(servers.broker_url))
    return default_app


def _retried(
    app: Celery,
    send: Callable[..., Any],
    args: tuple[Any, ...],
    what: str,
    retry_policy: Mapping[str, Any] | None,
    on_retry: Callable[[Exception, int], None] | None,
) -> Any:
    """`send(*args)`, re-sent whole on a broker connection error under the retry policy."""
    policy = dict(app.conf.task_publish_retry_policy if retry_policy is None else retry_policy)

    def errback(exc: Exception, intervals: Iterator[float], retries: int) -> float:
        log.warning("publish of %s failed (%s); re-sending", what, exc)
        if on_retry is not None:
            on_retry(exc, retries + 1)
        return next(intervals)

    return retry_over_time(send, BROKER_ERRORS, args=args, errback=errback, **policy)


_agreed: set[tuple[str, str, int]] = set()
_no_fleet_until: dict[tuple[str, str, int], float] = {}  # no count recorded: ask again later
NO_FLEET_RECHECK = 5.0  # seconds (a connection per publish cost a third of a paced producer)


def _check_partition_count(settings: Settings, redis_url: str | None) -> None:
    """Refuse a P other than the fleet's (worker/partition_count.py); once per process."""
    key = (redis_url or "", settings.broker_prefix, settings.partitions)
    if redis_url is None or key in _agreed or time.monotonic() < _no_fleet_until.get(key, 0):
        return
    client = redis.Redis.from_url(redis_url, socket_timeout=5, socket_connect_timeout=5)
    try:
        recorded = recorded_partitions(client, settings.broker_prefix)
    except redis.RedisError as exc:  # the send reports an unreachable broker itself
        log.debug("partition count not checked: %s", exc)
        return
    finally:
        client.close()
    check_agreement(settings, recorded)
    if recorded is None:  # no fleet yet
        _no_fleet_until[key] = time.monotonic() + NO_FLEET_RECHECK
    else:
        _agreed.add(key)


def _send_all(app: Celery, parsed: list[Event], partitions: int) -> list[PublishReceipt]:
    routed = [(event, partition_for(event.order_id, partitions)) for event in parsed]
    with _sending(app, len(routed)) as producer:
        _declare(app, producer, {queue_name(partition) for _, partition in routed})
        return [_send(app, producer, event, partition) for event, partition in routed]


@contextmanager
def _sending(app: Celery, messages: int) -> Iterator[Any]:
    """A producer for one call's messages, pipelined when there are several. A lost connection
    raises OperationalError for the call's retry policy (the one policy: Celery's own
    per-message retry is off)."""
    with app.producer_or_acquire() as producer:
        try:
            with _batch(producer, messages):
                yield producer
        except producer.connection.connection_errors as exc:
            producer.connection.declared_entities.clear()  # a Redis back empty lacks the bindings
            raise OperationalError(str(exc)) from exc
        except BatchPublishError:
            producer.connection.declared_entities.clear()
            raise


def _declare(app: Celery, producer: Any, queues: Iterable[str]) -> None:
    """Declare each queue once per connection, not once per message as send_task
    would: kombu binds a copy of the queue before its per-connection cache answers (a fifth of
    a per-event publish in py-spy), so the cache is asked first."""
    declared = producer.connection.declared_entities  # kombu clears it on a reconnect
    for name in sorted(queues):
        queue = app.amqp.queues[name]
        if hash(queue) not in declared:
            producer.maybe_declare(queue)


def _send(app: Celery, producer: Any, event: Event, partition: int) -> PublishReceipt:
    task_name = TASK_FOR_TYPE[event.event_type]
    queue = queue_name(partition)
    shown = {"eventType": event.event_type, "orderId": event.order_id, "eventId": event.event_id}
    kwargs = {"event": event.to_wire()}
    task_id = _message(app, producer, task_name, queue, kwargs, repr({"event": shown}))
    return PublishReceipt(
        event.event_id, event.order_id, event.event_type, task_name, partition, queue, task_id
    )


def _send_raw(app: Celery, name: str, queue: str, wire: dict[str, Any]) -> RawReceipt:
    with _sending(app, 1) as producer:
        _declare(app, producer, [queue])
        task_id = _message(app, producer, name, queue, {"event": wire}, None)
    return RawReceipt(name, queue, task_id)


def _message(
    app: Celery,
    producer: Any,
    task_name: str,
    queue: str,
    kwargs: dict[str, Any],
    shown: str | None,
) -> str:
    """Send one message on a declared queue; its task id. `shown` is what Flower lists of its
    kwargs (Celery's repr is costly; None: that repr)."""
    result = app.send_task(
        task_name,
        kwargs=kwargs,
        queue=queue,
        routing_key=queue,
        producer=producer,
        declare=[],  # declared by the caller
        retry=False,  # retried by the call's policy (_retried)
        argsrepr="()",
        kwargsrepr=shown,
    )
    return str(result.id)


def _send_bulk(app: Celery, parsed: list[Event], partitions: int) -> list[PublishReceipt]:
    """The events grouped by partition into bulk messages, in order within each partition."""
    by_queue: dict[int, list[Event]] = {}
    for event in parsed:
        by_queue.setdefault(partition_for(event.order_id, partitions), []).append(event)
    receipts: dict[str, PublishReceipt] = {}
    with _sending(app, len(parsed)) as producer:
        _declare(app, producer, {queue_name(partition) for partition in by_queue})
        for partition, events in by_queue.items():
            for chunk, wires in _chunks(events):
                _send_chunk(app, producer, partition, chunk, wires, receipts)
    return [receipts[event.event_id] for event in parsed]


def _chunks(events: list[Event]) -> Iterator[tuple[list[Event], list[dict[str, Any]]]]:
    """Runs of at most MAX_BATCH_EVENTS events whose message stays within MAX_BATCH_BYTES."""
    for start in range(0, len(events), MAX_BATCH_EVENTS):
        chunk = events[start : start + MAX_BATCH_EVENTS]
        yield from _within_bytes(chunk, [event.to_wire() for event in chunk])


def _within_bytes(
    chunk: list[Event], wires: list[dict[str, Any]]
) -> Iterator[tuple[list[Event], list[dict[str, Any]]]]:
    """The chunk, halved until each part's body fits (one C-speed encode per part)."""
    size = len(json.dumps(wires)) + BULK_HEADROOM  # ASCII-escaped: a bound on the body's bytes
    if size <= MAX_BATCH_BYTES or len(chunk) == 1:
        yield chunk, wires
        return
    half = len(chunk) // 2
    yield from _within_bytes(chunk[:half], wires[:half])
    yield from _within_bytes(chunk[half:], wires[half:])


def _send_chunk(
    app: Celery,
    producer: Any,
    partition: int,
    chunk: list[Event],
    wires: list[dict[str, Any]],
    receipts: dict[str, PublishReceipt],
) -> None:
    queue = queue_name(partition)
    shown = f"{{'events': {len(wires)}, 'orders': {len({e.order_id for e in chunk})}}}"
    task_id = _message(app, producer, BATCH_TASK, queue, {"events": wires}, shown)
    for event in chunk:
        receipts[event.event_id] = PublishReceipt(
            *_ids(event), BATCH_TASK, partition, queue, task_id
        )


def _ids(event: Event) -> tuple[str, str, str]:
    return event.event_id, event.order_id, event.event_type


def _batch(producer: Any, messages: int) -> AbstractContextManager[Any]:
    """kombu's pipelined publish batch where the transport has one and there is more than one
    message (a batch of one costs a Redis client of its own and pipelines nothing)."""
    batch = getattr(producer, "batch", None)
    return batch(max_size=BATCH_SIZE) if batch is not None and messages > 1 else nullcontext()
