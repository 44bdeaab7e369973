"""End to end on RabbitMQ alone: single active consumer, the delivery limit, publisher confirms."""

from __future__ import annotations

import time

import pytest
from amqp.exceptions import MessageNacked
from kombu import Connection, Consumer, Queue
from orderfleet.models import parse_event
from orderfleet.worker.dead_letters import dead_letter, list_dead_letters
from orderfleet.worker.dev import scratch
from orderfleet.worker.dev.workload import deliveries_of, order_traffic
from orderfleet.worker.rabbitmq import task_queues
from orderfleet.worker.routing import queue_for, queue_name
from orderfleet.worker.settings import load_settings

from tests.fleet import ledger, rabbitmq_consumers, rabbitmq_queues, vhost_of, wait_for

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.slow,
    pytest.mark.parametrize("broker", ["rabbitmq"], indirect=True),
]
PARTITIONS = [queue_name(p) for p in range(8)]  # the fleet's ORDERFLEET_PARTITIONS


def test_a_second_worker_of_the_same_partitions_is_a_standby_until_the_first_stops(
    fleet, sessions, amqp_url
):
    first = fleet.start("w0", "worker", "--partitions", "0-7")
    fleet.start("w1", "worker", "--partitions", "0-7")
    consumers = rabbitmq_consumers(amqp_url)
    assert {q: sorted(consumers.get(q, [])) for q in PARTITIONS} == {
        q: [False, True] for q in PARTITIONS
    }
    first.stop()
    wait_for(
        lambda: all(rabbitmq_consumers(amqp_url).get(q) == [True] for q in PARTITIONS),
        30,
        "the standby to become the active consumer of every partition",
    )
    events = order_traffic(40, seed=8)
    assert fleet.publish(events, "producer").wait(60) == 0
    wait_for(lambda: ledger(sessions) == (len(events), len(events), 0), 60, "the standby to apply")


def test_a_warm_shutdown_hands_every_message_in_hand_back(fleet, sessions, amqp_url):
    fleet.env["ORDERFLEET_BATCH_SIZE"] = "50"  # smaller batches: a longer drain to stop
    events = order_traffic(1000, seed=11)
    sent = deliveries_of(events, redeliver=0.3, seed=12)
    assert fleet.publish(sent, "producer").wait(120) == 0  # a backlog, then the worker
    worker = fleet.start("w0", "worker", "--partitions", "0-7")
    deadline = time.monotonic() + 60
    while ledger(sessions)[1] == 0 and time.monotonic() < deadline:
        time.sleep(0.005)
    assert worker.stop() == 0  # warm: mid-drain, with messages gathered and prefetched
    ended = ledger(sessions)[1]
    assert 0 < ended < len(sent)
    # Each message ended once, or is back on its queue, none in hand. (The broker's queue
    # statistics lag by up to 5 s: they are waited for.)
    wait_for(lambda: _ready_and_in_hand(amqp_url) == (len(sent) - ended, 0), 30, "the queues")
    print(f"\nstopped with {ended} of {len(sent)} messages ended, the rest back on the queues")
    fleet.start("w0-again", "worker", "--partitions", "0-7")
    wait_for(lambda: ledger(sessions) == (len(events), len(sent), 0), 120, "the rest")


def _ready_and_in_hand(amqp_url: str) -> tuple[int, int]:
    counts = [n for q, n in rabbitmq_queues(amqp_url).items() if q in PARTITIONS]
    return sum(ready for ready, _ in counts), sum(in_hand for _, in_hand in counts)


def _return_every_delivery(amqp_url: str, queue: str, quiet: float = 3.0) -> int:
    """A consumer that hands every message of `queue` back (as a worker that dies on it would)
    until none comes for `quiet` seconds; how many deliveries it saw."""
    seen = 0

    def hand_back(_body, message):
        nonlocal seen
        seen += 1
        message.reject(requeue=True)

    with Connection(amqp_url) as conn, conn.channel() as channel:
        channel.basic_qos(0, 1, False)
        with Consumer(channel, [Queue(queue, no_declare=True)], callbacks=[hand_back]):
            try:
                while True:
                    conn.drain_events(timeout=quiet)
            except TimeoutError:
                return seen


def test_a_message_handed_back_past_the_delivery_limit_ends_in_the_dead_letters(
    fleet, sessions, amqp_url
):
    fleet.env["ORDERFLEET_DELIVERY_LIMIT"] = "2"
    fleet.start("decisions", "worker", "--decisions")  # it consumes the dead-letter queue
    event = order_traffic(1, seed=9)[0]
    assert fleet.publish([event], "producer").wait(60) == 0
    queue = queue_for(event["orderId"], 8)
    deliveries = _return_every_delivery(amqp_url, queue)
    wait_for(lambda: ledger(sessions)[2] == 1, 30, "the dead letter")
    (letter,) = list_dead_letters(sessions)
    assert (letter["reason"], letter["orderId"]) == ("delivery_limit", event["orderId"])
    assert queue in letter["error"]
    raw = dead_letter(sessions, letter["id"])["raw"]
    assert parse_event(raw).event_id == parse_event(event).event_id  # the event, replayable
    assert deliveries == 3  # the first delivery and the two the limit allows again
    assert ledger(sessions)[:2] == (0, 0)  # dead-lettered, not applied


def test_a_publish_the_broker_refuses_fails_the_producer(fleet, amqp_url):
    """With a length limit of 0 (a policy) a quorum queue rejects every publish (overflow
    reject-publish): the broker nacks, and the producer must not report it sent."""
    settings = load_settings({"ORDERFLEET_PARTITIONS": str(len(PARTITIONS))})
    queues = [q for q in task_queues(settings) if q.name in PARTITIONS]
    with Connection(amqp_url) as conn:
        for queue in queues:
            queue(conn.default_channel).declare()
    policy = ["full", r"^orderfleet\.p", '{"max-length": 0}', "--apply-to", "queues"]
    scratch.rabbitmqctl(["set_policy", "-p", vhost_of(amqp_url), *policy])
    _wait_until_refused(amqp_url, PARTITIONS)  # a quorum queue takes a policy asynchronously
    producer = fleet.publish(order_traffic(1, seed=10), "producer")
    assert producer.wait(60) != 0
    log = (fleet.log_dir / "producer.log").read_text()
    assert "MessageNacked" in log
    assert "published" not in log


def _wait_until_refused(amqp_url: str, queues: list[str], timeout: float = 30.0) -> None:
    """Probe each queue with a confirmed publish until the broker nacks it."""
    deadline = time.monotonic() + timeout
    with Connection(amqp_url, transport_options={"confirm_publish": True}) as conn:
        producer = conn.Producer()
        for queue in queues:
            while True:
                try:
                    producer.publish({}, routing_key=queue, exchange="")
                except MessageNacked:
                    break
                assert time.monotonic() < deadline, f"{queue} still takes messages"
                time.sleep(0.1)
