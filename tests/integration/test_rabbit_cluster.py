"""A real 3-node RabbitMQ cluster: clustered, quorum queues on all three nodes, and a leader's
loss loses no confirmed message (needs the `tests.rabbit_cluster` plugin and rabbitmq-server)."""

from __future__ import annotations

import time

import pytest
from kombu import Connection, Queue

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(300)]

QUORUM = {"x-queue-type": "quorum", "x-quorum-initial-group-size": 3}
MESSAGES = 100
ELECTION_TIMEOUT = 30.0  # seconds for the followers to elect a new leader
CONSUME_TIMEOUT = 30.0


def quorum_queue(name: str) -> Queue:
    """A durable quorum queue with a member on each of the three nodes."""
    return Queue(name, durable=True, queue_arguments=QUORUM)


def publish_confirmed(url: str, name: str, count: int) -> None:
    """Declare the queue and publish count numbers; each publish returns once confirmed."""
    with Connection(url, transport_options={"confirm_publish": True}) as conn:
        quorum_queue(name)(conn.default_channel).declare()
        producer = conn.Producer()
        for number in range(count):
            producer.publish({"n": number}, exchange="", routing_key=name, delivery_mode=2)


def consume_all(url: str, name: str, count: int, timeout: float) -> list[int]:
    """Get and ack up to count messages (within timeout s), then check that none is left."""
    numbers: list[int] = []
    deadline = time.monotonic() + timeout
    with Connection(url) as conn:
        queue = quorum_queue(name)(conn.default_channel)
        while len(numbers) < count and time.monotonic() < deadline:
            message = queue.get(no_ack=False)
            if message is None:
                time.sleep(0.1)
                continue
            numbers.append(message.decode()["n"])
            message.ack()
        assert queue.get(no_ack=False) is None, "more messages than were published"
    return numbers


def wait_for_new_leader(cluster, name: str, vhost: str, old: int, timeout: float) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        leader = cluster.leader_of(name, vhost)
        if leader is not None and leader != old:
            return leader
        time.sleep(0.2)
    raise AssertionError(f"no new leader of {name} within {timeout:.0f} s")


def test_three_nodes_run_as_one_cluster(rabbit_cluster):
    assert rabbit_cluster.running_nodes() == set(rabbit_cluster.names)
    assert len(rabbit_cluster.names) == 3
    for url in rabbit_cluster.urls():
        with Connection(url) as conn:
            conn.connect()
            assert conn.connected


def test_a_quorum_queue_has_a_member_on_every_node(rabbit_cluster, rabbit_vhost):
    with Connection(rabbit_cluster.urls(rabbit_vhost)[1]) as conn:
        quorum_queue("members")(conn.default_channel).declare()
    assert rabbit_cluster.members_of("members", rabbit_vhost) == [0, 1, 2]
    assert rabbit_cluster.leader_of("members", rabbit_vhost) in (0, 1, 2)


def test_a_stopped_leader_loses_no_confirmed_message(rabbit_cluster, rabbit_vhost):
    urls = rabbit_cluster.urls(rabbit_vhost)
    publish_confirmed(urls[0], "confirmed", MESSAGES)
    leader = rabbit_cluster.leader_of("confirmed", rabbit_vhost)
    assert leader is not None

    rabbit_cluster.stop_node(leader)
    new_leader = wait_for_new_leader(
        rabbit_cluster, "confirmed", rabbit_vhost, leader, ELECTION_TIMEOUT
    )
    numbers = consume_all(urls[new_leader], "confirmed", MESSAGES, CONSUME_TIMEOUT)
    assert sorted(numbers) == list(range(MESSAGES))

    rabbit_cluster.start_node(leader)
    assert rabbit_cluster.running_nodes() == set(rabbit_cluster.names)
    assert rabbit_cluster.members_of("confirmed", rabbit_vhost) == [0, 1, 2]
