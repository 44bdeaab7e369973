"""A message a blocking BRPOP took survives a Redis that stops before the worker records it.

Regression: the Redis restart chaos test lost one message in about eight runs; the worker's
traceback ended in kombu's unacked record of a message BRPOP had already popped. The fault is
real (the dedicated Redis is stopped); only its moment is chosen, by stopping Redis just
before the worker sends the record.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
import redis
from kombu import Connection, Producer
from kombu.transport import redis as kombu_redis
from orderfleet.models.tables import DeadLetterRow
from orderfleet.worker import transport
from orderfleet.worker.dev import embedded
from sqlalchemy import select

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

QUEUE = "orderfleet.p000"
TASK = "orderfleet.events.order_created"


def send_event(connection: Connection) -> dict:
    """One Celery (protocol 2) event message on QUEUE; the event it carries."""
    event = {"eventType": "OrderCreated", "orderId": "o-restart", "eventId": str(uuid.uuid4())}
    producer = Producer(connection.channel())
    headers = {"task": TASK, "id": str(uuid.uuid4()), "lang": "py"}
    producer.publish([[], {"event": event}, {}], routing_key=QUEUE, headers=headers)
    return event


def stop_redis_before_the_record(
    monkeypatch,
    redis_dir: Path,
    restart_redis: Callable[[float], object] | None,
    back_after: float | None,
) -> None:
    """Stop Redis right after BRPOP answered, before kombu's record; start it again or not."""
    record = kombu_redis.QoS.append
    stopped: list[bool] = []

    def stop_then_record(qos, message, delivery_tag):
        if not stopped:
            stopped.append(embedded.stop_redis(redis_dir))
            if restart_redis is not None and back_after is not None:
                restart_redis(back_after)
        return record(qos, message, delivery_tag)

    monkeypatch.setattr(kombu_redis.QoS, "append", stop_then_record)


def consume_blocking(connection: Connection, taken: list) -> None:
    """Consume QUEUE with the blocking BRPOP (its queues found empty before) until one arrives."""
    channel = connection.default_channel
    channel._drained = True  # the state in which the worker blocks in BRPOP
    channel.basic_consume(QUEUE, False, taken.append, "test")
    connection.drain_events(timeout=30)


def test_a_popped_message_is_recorded_once_redis_is_back(
    worker_connection, redis_dir, restart_redis, monkeypatch
):
    connection = worker_connection
    send_event(connection)
    stop_redis_before_the_record(monkeypatch, redis_dir, restart_redis, back_after=1.0)
    taken: list = []
    consume_blocking(connection, taken)
    client = redis.Redis.from_url(embedded.redis_url(redis_dir))
    assert len(taken) == 1
    assert client.hexists("unacked", taken[0].delivery_tag)  # restored if this worker dies
    assert client.llen(QUEUE) == 0
    client.close()


def test_a_popped_message_goes_to_the_dead_letters_when_redis_stays_away(
    worker_connection, redis_dir, monkeypatch, runtime, sessions
):
    connection = worker_connection
    event = send_event(connection)
    monkeypatch.setattr(transport, "RECORD_PATIENCE", 0.5)
    stop_redis_before_the_record(monkeypatch, redis_dir, None, back_after=None)
    taken: list = []
    with pytest.raises(transport.BROKER_DOWN):
        consume_blocking(connection, taken)
    assert taken == []  # not delivered: it is in the dead letters, not applied
    with sessions() as s:
        letters = s.execute(select(DeadLetterRow.reason, DeadLetterRow.event_id)).all()
    assert letters == [("broker_unreachable", event["eventId"])]
