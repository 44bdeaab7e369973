"""RabbitMQ as the broker: quorum queues, one active consumer per partition, publisher confirms.

With an amqp:// (or amqps://, pyamqp://) ORDERFLEET_BROKER_URL every orderfleet queue is a
durable quorum queue, replicated on ORDERFLEET_QUORUM_GROUP_SIZE nodes (unset: RabbitMQ's
default). A partition queue has `x-single-active-consumer`: of all the workers subscribed to
it exactly one consumes it at a time; the others are standbys that take over when it goes.

A message the broker has delivered ORDERFLEET_DELIVERY_LIMIT times without an acknowledgement
(a worker that dies on it again and again) is dead-lettered by the broker, at least once, to
the dead-letter queue; the decisions worker consumes that queue and writes each message to the
dead_letters table (worker/consumer.py): a poison message ends there, never dropped. The route
is the default exchange, which always exists: until the dead-letter queue is declared, the
broker keeps such a message and tries again.

Every publish waits for the broker's confirm: a nack raises (amqp.exceptions.MessageNacked; in a
publish batch, whose confirms are awaited together, BatchPublishError: worker/confirms.py).
"""

from __future__ import annotations

import select
import ssl
from typing import Any

from kombu import Queue
from orderfleet.worker.routing import DECISIONS_QUEUE, MAINTENANCE_QUEUE, queue_name
from orderfleet.worker.settings import Settings

SCHEMES = ("amqp", "amqps", "pyamqp")
DEAD_LETTER_QUEUE = "orderfleet.dead"


def is_rabbitmq(broker_url: str | None) -> bool:
    """Whether a broker URL names RabbitMQ (kombu's py-amqp transport)."""
    return (broker_url or "").split("://", 1)[0] in SCHEMES


def consumes_from_rabbitmq(consumer: Any) -> bool:
    """Whether a Celery consumer's connection is to RabbitMQ (py-amqp)."""
    return getattr(getattr(consumer.connection, "transport", None), "driver_type", "") == "amqp"


def nothing_to_read(connection: Any) -> bool:
    """Whether a kombu py-amqp connection has no data waiting (none received, none buffered)."""
    sock = getattr(getattr(connection, "connection", None), "sock", None)
    if sock is None:
        return False
    if isinstance(sock, ssl.SSLSocket) and sock.pending():
        return False
    poller = select.poll()
    poller.register(sock, select.POLLIN)
    return not poller.poll(0)


def transport(broker_url: str) -> str:
    """kombu's py-amqp transport whose publish batches wait for their confirms together
    (worker/confirms.py), for an amqp:// or amqps:// URL."""
    name = "SSLTransport" if broker_url.startswith("amqps://") else "Transport"
    return f"orderfleet.worker.confirms:{name}"


def transport_options() -> dict[str, Any]:
    """py-amqp connection options: every channel in confirm mode (a publish waits for ack)."""
    return {"confirm_publish": True}


def task_queues(settings: Settings) -> list[Queue]:
    """Every orderfleet queue on RabbitMQ, with the arguments each declaration must repeat."""
    partitions = [
        _queue(queue_name(p), {**_dead_lettering(settings), "x-single-active-consumer": True})
        for p in range(settings.partitions)
    ]
    shared = [_queue(q, _dead_lettering(settings)) for q in (DECISIONS_QUEUE, MAINTENANCE_QUEUE)]
    return [*partitions, *shared, dead_letter_queue(settings)]


def dead_letter_queue(settings: Settings) -> Queue:
    """Where the broker puts what it gave up on; no delivery limit: nothing leaves it unrecorded."""
    return _queue(DEAD_LETTER_QUEUE, _quorum(settings))


def _queue(name: str, arguments: dict[str, Any]) -> Queue:
    return Queue(name, routing_key=name, durable=True, queue_arguments=arguments)


def _quorum(settings: Settings) -> dict[str, Any]:
    size = settings.quorum_group_size
    return {"x-queue-type": "quorum", **({"x-quorum-initial-group-size": size} if size else {})}


def _dead_lettering(settings: Settings) -> dict[str, Any]:
    """A delivery limit, and the broker's at-least-once route to the dead-letter queue
    (at-least-once needs `reject-publish` overflow; without a length limit it never rejects)."""
    return {
        **_quorum(settings),
        "x-delivery-limit": settings.delivery_limit,
        "x-dead-letter-exchange": "",
        "x-dead-letter-routing-key": DEAD_LETTER_QUEUE,
        "x-dead-letter-strategy": "at-least-once",
        "x-overflow": "reject-publish",
    }


def death_of(message: Any) -> tuple[str, str | None] | None:
    """Why and from which queue the broker dead-lettered a message of the dead-letter queue
    (RabbitMQ's x-first-death-* headers); None for a message of any other queue."""
    info = getattr(message, "delivery_info", None)
    if not isinstance(info, dict) or info.get("routing_key") != DEAD_LETTER_QUEUE:
        return None
    headers = message.headers if isinstance(message.headers, dict) else {}
    queue = headers.get("x-first-death-queue")
    why = headers.get("x-first-death-reason") or "unknown"
    return str(why), queue if isinstance(queue, str) else None
