"""A bench-only Celery app with one no-op task: the ceiling of broker + Celery on this machine.

Configured like orderfleet's app where it matters for throughput (JSON, acks_late, prefetch 1,
and the broker options orderfleet takes on the same broker: on Redis its transport options, on
RabbitMQ a durable quorum queue, its py-amqp transport with publisher confirms); workers run as
`python -m celery -A bench.noop_app worker -P solo -c 1 --prefetch-multiplier 1 -Q bench.noop`.
The no-op queue has no single active consumer (orderfleet's partition queues have one): every
worker consumes it, each partition queue of orderfleet has one worker anyway.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from celery import Celery, signals
from kombu import Queue
from orderfleet.worker import rabbitmq
from orderfleet.worker.settings import Settings

NOOP_TASK = "bench.noop"
QUEUE = "bench.noop"
BROKER_ENV = "BENCH_NOOP_BROKER_URL"
PREFIX_ENV = "BENCH_NOOP_BROKER_PREFIX"
READY_ENV = "ORDERFLEET_READY_FILE"
VISIBILITY_TIMEOUT = Settings().visibility_timeout  # orderfleet's default, for the same sweeps
QUORUM = {"x-queue-type": "quorum"}


def noop() -> None:
    """Do nothing: what is left is the cost of Celery and the broker."""


def make_app(broker_url: str, prefix: str = "") -> Celery:
    """A Celery app on broker_url (on Redis its keys start with prefix), with the no-op task."""
    app = Celery("bench_noop", set_as_current=False)
    app.conf.update(
        broker_url=broker_url,
        broker_connection_retry_on_startup=True,
        **_broker_conf(broker_url, prefix),
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        task_ignore_result=True,
        task_acks_late=True,
        worker_prefetch_multiplier=1,
        task_default_queue=QUEUE,
    )
    app.task(name=NOOP_TASK, acks_late=True)(noop)
    return app


def _broker_conf(broker_url: str, prefix: str) -> dict[str, Any]:
    return _rabbitmq_conf(broker_url) if rabbitmq.is_rabbitmq(broker_url) else _redis_conf(prefix)


def _redis_conf(prefix: str) -> dict[str, Any]:
    """orderfleet's Redis transport options (the same unacked sweeps), under prefix."""
    options = {
        "visibility_timeout": VISIBILITY_TIMEOUT,
        "unacked_restore_interval": 1,
        "unacked_restore_throttle": 1,
        **({"global_keyprefix": prefix} if prefix else {}),
    }
    return {"broker_transport_options": options}


def _rabbitmq_conf(broker_url: str) -> dict[str, Any]:
    """A durable quorum queue (per-consumer prefetch, as orderfleet's), orderfleet's transport."""
    queue = Queue(QUEUE, routing_key=QUEUE, durable=True, queue_arguments=QUORUM)
    return {
        "broker_transport": rabbitmq.transport(broker_url),
        "broker_transport_options": rabbitmq.transport_options(),
        "task_queues": [queue],
        "task_default_queue_type": "quorum",
        "task_create_missing_queue_type": "quorum",
        "worker_detect_quorum_queues": True,
    }


def enqueue(app: Celery, count: int, queue: str = QUEUE, batch: int = 1000) -> float:
    """Send `count` no-op messages pipelined in batches (on RabbitMQ each batch waits for its
    confirms); the seconds it took."""
    started = time.perf_counter()
    with app.producer_or_acquire() as producer:
        for start in range(0, count, batch):
            with producer.batch(max_size=batch):
                for _ in range(min(batch, count - start)):
                    app.send_task(NOOP_TASK, queue=queue, routing_key=queue, producer=producer)
    return time.perf_counter() - started


@signals.worker_ready.connect
def announce_ready(**_: object) -> None:
    """Touch the ready file a FleetProcess supervisor waits for, as orderfleet's workers do."""
    path = os.environ.get(READY_ENV)
    if path:
        Path(path).write_text(str(os.getpid()))


app = make_app(os.environ.get(BROKER_ENV, "memory://"), os.environ.get(PREFIX_ENV, ""))
