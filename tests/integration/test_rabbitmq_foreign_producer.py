"""A service without orderfleet sends to the fleet's RabbitMQ queues (README: "Producing events").

The partition queues are quorum queues declared by the fleet with arguments of their own; a
producer that declares them again with other arguments (Celery does, by default) is refused.
"""

from __future__ import annotations

import contextlib
import json
import socket
from typing import Any

import pytest
from amqp.exceptions import PreconditionFailed
from celery import Celery
from kombu import Connection, Consumer
from orderfleet.worker.rabbitmq import task_queues
from orderfleet.worker.routing import BATCH_TASK, TASK_FOR_TYPE, partition_for, queue_name
from orderfleet.worker.settings import load_settings

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

PARTITIONS = 4
SETTINGS = load_settings({"ORDERFLEET_PARTITIONS": str(PARTITIONS)})
EVENT = {
    "eventId": "foreign-1",
    "orderId": "order-foreign-1",
    "eventType": "PaymentProcessed",
    "timestamp": "2026-11-28T10:00:00Z",
    "transactionId": "t-1",
    "amount": "10.00",
    "status": "successful",
}


@pytest.fixture
def fleet_queues(amqp_url: str) -> str:
    """The vhost with the fleet's queues declared as a worker declares them; the URL."""
    with Connection(amqp_url) as conn:
        for queue in task_queues(SETTINGS):
            queue(conn.default_channel).declare()
    return amqp_url


def bare_app(url: str) -> Celery:
    return Celery("foreign-service", broker=url, set_as_current=False)


def taken(url: str, queue: str) -> list[tuple[str, dict]]:
    """Every message on `queue` (consumed: a single-active-consumer queue has no basic.get):
    its task name and keyword arguments."""
    found: list[tuple[str, dict]] = []

    def take(body: Any, message: Any) -> None:
        _, kwargs, _ = json.loads(message.body)
        found.append((message.headers["task"], kwargs))
        message.ack()

    fleet_queue = next(q for q in task_queues(SETTINGS) if q.name == queue)
    with (
        Connection(url) as conn,
        Consumer(conn, [fleet_queue], callbacks=[take], accept=["json"]),
        contextlib.suppress(socket.timeout),
    ):
        while True:
            conn.drain_events(timeout=1)
    return found


def test_the_documented_send_task_reaches_the_partition_queue(fleet_queues):
    queue = queue_name(partition_for(EVENT["orderId"], PARTITIONS))
    app = bare_app(fleet_queues)
    task = TASK_FOR_TYPE[EVENT["eventType"]]
    app.send_task(task, kwargs={"event": EVENT}, queue=queue, declare=[])
    app.send_task(BATCH_TASK, kwargs={"events": [EVENT]}, queue=queue, declare=[])
    assert taken(fleet_queues, queue) == [
        (task, {"event": EVENT}),
        (BATCH_TASK, {"events": [EVENT]}),
    ]


def test_a_send_task_that_declares_the_queue_is_refused(fleet_queues):
    queue = queue_name(partition_for(EVENT["orderId"], PARTITIONS))
    with pytest.raises(PreconditionFailed, match="PRECONDITION_FAILED - inequivalent arg"):
        bare_app(fleet_queues).send_task(
            TASK_FOR_TYPE[EVENT["eventType"]], kwargs={"event": EVENT}, queue=queue
        )
    assert taken(fleet_queues, queue) == []
