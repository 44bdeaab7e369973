"""publish_many survives a broker restart: a failed pipelined batch is re-sent whole.

Regression: publish_many sends through kombu's pipelined batch, where a lost connection
surfaces as BatchPublishError ("delivery is uncertain") or OperationalError outside Celery's
publish retry, so a Redis restart made every producer call fail at once.
"""

from __future__ import annotations

import base64
import importlib.util
import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from celery import Celery
from kombu.exceptions import BatchPublishError, OperationalError
from kombu.transport import redis as kombu_redis
from orderfleet.tasks.producer import publish_many, send_raw
from orderfleet.worker.dev import embedded
from orderfleet.worker.dev.workload import generate
from orderfleet.worker.routing import TASK_FOR_TYPE, queue_for, queue_name

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

PARTITIONS = 4
POLICY = {"max_retries": 40, "interval_start": 0.1, "interval_step": 0.1, "interval_max": 0.3}


@pytest.fixture
def app(redis_dir: Path, monkeypatch) -> Iterator[Celery]:
    """A Celery app configured by celeryconfig for the dedicated Redis."""
    monkeypatch.setenv("ORDERFLEET_BROKER_URL", embedded.broker_url(redis_dir))
    monkeypatch.setenv("ORDERFLEET_PARTITIONS", str(PARTITIONS))
    monkeypatch.delenv("ORDERFLEET_BROKER_PREFIX", raising=False)
    origin = importlib.util.find_spec("orderfleet.celeryconfig").origin
    spec = importlib.util.spec_from_file_location("orderfleet.celeryconfig", origin)  # its own name
    config = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(config)
    app = Celery("orderfleet", set_as_current=False)
    app.config_from_object(config)
    yield app
    app.close()


def queued(redis_dir: Path) -> int:
    """Events waiting on the partition queues (a bulk message counts its events)."""
    client = redis.Redis.from_url(embedded.redis_url(redis_dir))
    try:
        items = [i for p in range(PARTITIONS) for i in client.lrange(queue_name(p), 0, -1)]
    finally:
        client.close()
    return sum(_events_in(item) for item in items)


def _events_in(item: bytes) -> int:
    kwargs = json.loads(base64.b64decode(json.loads(item)["body"]))[1]
    return len(kwargs["events"]) if "events" in kwargs else 1


@pytest.mark.parametrize(
    ("bulk", "count"), [(True, 10), (False, 10), (False, 1)], ids=["bulk", "per-event", "single"]
)
def test_publish_many_waits_out_a_redis_restart(app, redis_dir, restart_redis, bulk, count):
    """A single event is sent unpipelined: a lost connection is retried under the same policy."""
    events = generate(10, seed=1, duplicate_rate=0, invalid_rate=0).distinct[: count + 1]
    publish_many(events[:1], app=app, bulk=bulk)  # a pooled connection the restart will break
    events = events[1:]
    assert embedded.stop_redis(redis_dir)
    restart = restart_redis(1.5)
    retries: list[int] = []
    began = time.monotonic()
    receipts = publish_many(
        events, app=app, bulk=bulk, retry_policy=POLICY, on_retry=lambda exc, n: retries.append(n)
    )
    restart.join()
    assert time.monotonic() - began >= 1.0
    assert len(receipts) == len(events)
    assert retries and retries == list(range(1, len(retries) + 1))
    assert queued(redis_dir) >= 1 + len(events)


@pytest.mark.parametrize("bulk", [True, False], ids=["bulk", "per-event"])
def test_a_batch_whose_delivery_is_uncertain_is_sent_again_whole(app, redis_dir, monkeypatch, bulk):
    events = generate(10, seed=2, duplicate_rate=0, invalid_rate=0).distinct
    flush = kombu_redis.PublishBatch.flush
    failures = iter([True])

    def flaky_flush(self):
        if next(failures, False):
            self.pipeline.reset()
            self._buffered = 0
            raise BatchPublishError("Redis publish batch failed; delivery is uncertain")
        return flush(self)

    monkeypatch.setattr(kombu_redis.PublishBatch, "flush", flaky_flush)
    retries: list[int] = []
    receipts = publish_many(events, app=app, bulk=bulk, on_retry=lambda e, n: retries.append(n))
    assert retries == [1]
    assert len(receipts) == len(events)
    assert queued(redis_dir) == len(events)


def test_without_a_broker_publish_many_still_fails_after_its_retries(app, redis_dir):
    events = generate(2, seed=3, duplicate_rate=0, invalid_rate=0).distinct
    embedded.stop_redis(redis_dir)
    retries: list[int] = []
    policy = {"max_retries": 2, "interval_start": 0, "interval_step": 0.1, "interval_max": 0.1}
    with pytest.raises(OperationalError) as failed:
        publish_many(events, app=app, retry_policy=policy, on_retry=lambda e, n: retries.append(n))
    assert "redis.sock" in str(failed.value)
    assert retries == [1, 2]


def test_send_raw_sends_a_broken_event_as_it_is_and_waits_out_a_redis_restart(
    app, redis_dir, restart_redis
):
    valid = generate(2, seed=5, duplicate_rate=0, invalid_rate=0).distinct
    send_raw(valid[0], app=app)  # a pooled connection the restart will break
    broken = {**valid[1], "eventType": "OrderTeleported", "totalAmount": ["not", "money"]}
    assert embedded.stop_redis(redis_dir)
    restart = restart_redis(1.5)
    retries: list[int] = []
    receipt = send_raw(
        broken, app=app, retry_policy=POLICY, on_retry=lambda e, n: retries.append(n)
    )
    restart.join()
    assert retries and retries == list(range(1, len(retries) + 1))
    assert receipt.task_name == TASK_FOR_TYPE["OrderCreated"]  # an unknown type: a careless guess
    assert receipt.queue == queue_for(broken["orderId"], PARTITIONS)
    client = redis.Redis.from_url(embedded.redis_url(redis_dir))
    try:
        queued_items = client.lrange(receipt.queue, 0, -1)
    finally:
        client.close()
    bodies = [json.loads(base64.b64decode(json.loads(item)["body"])) for item in queued_items]
    assert {"event": broken} in [kwargs for _args, kwargs, _embed in bodies]
