"""The fetch script takes several messages per round trip, as the prefetch count allows.

Each message taken is recorded as unacknowledged in the same atomic step; a fetch that found
every queue empty says so, so a gathered batch is applied without another round trip.
"""

from __future__ import annotations

import uuid

import pytest
import redis
from kombu import Connection, Producer
from orderfleet.worker import transport
from orderfleet.worker.dev import embedded

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

QUEUE = "orderfleet.p001"


def publish(connection: Connection, count: int) -> None:
    producer = Producer(connection.channel())
    for n in range(count):
        headers = {"task": "orderfleet.events.order_created", "id": str(uuid.uuid4())}
        producer.publish([[], {"event": {"n": n}}, {}], routing_key=QUEUE, headers=headers)


def test_a_fetch_takes_what_the_prefetch_count_allows_and_records_each(
    worker_connection, redis_dir
):
    connection = worker_connection
    publish(connection, 7)
    channel = connection.default_channel
    channel.basic_qos(0, 5, False)
    taken: list = []
    channel.basic_consume(QUEUE, False, taken.append, "test")
    client = redis.Redis.from_url(embedded.redis_url(redis_dir))

    connection.drain_events(timeout=10)  # one round trip
    assert [m.decode()[1]["event"]["n"] for m in taken] == [0, 1, 2, 3, 4]
    assert client.hlen("unacked") == 5 and client.llen(QUEUE) == 2
    assert not channel._drained  # it stopped at the prefetch count, not at an empty queue

    for message in taken:
        message.ack()
    connection.drain_events(timeout=10)
    assert [m.decode()[1]["event"]["n"] for m in taken[5:]] == [5, 6]
    assert client.hlen("unacked") == 2 and client.llen(QUEUE) == 0
    assert channel._drained  # the queues were found empty in the same fetch
    assert int(client.hget(transport.TAKEN_KEY, QUEUE)) == 7
    client.close()
