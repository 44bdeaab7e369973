"""Batching under faults: a SIGKILL with a full batch in hand, a warm shutdown with one gathered.

A partition worker holds up to a batch of unacknowledged messages at once; whatever happens to
it, every event ends applied exactly once (duplicates counted), and nothing is dead-lettered.
"""

from __future__ import annotations

import os
import re
import signal
import time

import pytest
import redis
from orderfleet.models import parse_event
from orderfleet.worker.dev.workload import deliveries_of, order_traffic
from orderfleet.worker.routing import queue_name
from orderfleet.worker.service import verify

from tests.fleet import ledger, unacked_of, wait_for

pytestmark = [pytest.mark.chaos, pytest.mark.timeout(240)]

QUEUES = [queue_name(p) for p in range(8)]
VISIBILITY = 10.0  # tests/fleet.py fleet_env


@pytest.fixture
def client(redis_server_url):
    client = redis.Redis.from_url(redis_server_url)
    yield client
    client.close()


def backlog(fleet, orders: int, seed: int) -> tuple[list[dict], list[dict]]:
    """Per-event messages of `orders` orders (30 % re-delivered) on the queues; (events, sent)."""
    events = order_traffic(orders, seed=seed, prefix=f"b{seed}-")
    sent = deliveries_of(events, 0.3, seed=seed)
    assert fleet.publish(sent, f"backlog-{seed}").wait(120) == 0
    return events, sent


def queued(client, prefix: str) -> int:
    return sum(client.llen(f"{prefix}{queue}") for queue in QUEUES)


def assert_applied_once(sessions, events: list[dict], sent: list[dict], extra: int) -> None:
    """Every distinct event logged once, deliveries counted, no divergence, no dead letter."""
    logged, deliveries, letters = ledger(sessions)
    assert (logged, letters) == (len({parse_event(e).event_id for e in events}), 0)
    assert len(sent) <= deliveries <= len(sent) + extra
    assert list(verify(sessions)) == []


def test_sigkill_with_a_full_batch_in_hand_loses_nothing(
    fleets, sessions, client, redis_server_url, key_prefix
):
    fleet = fleets(redis_server_url, ORDERFLEET_BATCH_INTERVAL="1")  # batches fill up
    events, sent = backlog(fleet, 400, seed=21)
    victim = fleet.start("w0", "worker", "--partitions", "0-7", ready=False)
    deadline, held = time.monotonic() + 60, {}
    while time.monotonic() < deadline and len(held) < 90:
        if len(unacked_of(client, key_prefix, QUEUES)) >= 90:
            os.killpg(victim.pid, signal.SIGSTOP)
            held = unacked_of(client, key_prefix, QUEUES)
            if len(held) < 90:
                os.killpg(victim.pid, signal.SIGCONT)
        time.sleep(0.002)
    assert len(held) >= 90, "the worker never held a full batch"
    victim.kill()
    fleet.start("w1", "worker", "--partitions", "0-7")
    distinct = len({parse_event(e).event_id for e in events})
    wait_for(lambda: ledger(sessions)[0] == distinct, VISIBILITY + 90, "every event applied")
    wait_for(lambda: queued(client, key_prefix) == 0, 30, "the queues to drain")
    wait_for(lambda: not unacked_of(client, key_prefix, QUEUES), 30, "no message in hand")
    assert_applied_once(sessions, events, sent, extra=len(held))
    print(f"\nsigkill with {len(held)} messages in hand: {distinct} events applied once")


def test_warm_shutdown_puts_a_gathered_batch_back(
    fleets, sessions, client, redis_server_url, key_prefix
):
    # Batches of up to 1,000 messages that wait a second for more once the queues are empty:
    # the shutdown comes while the whole backlog is gathered (fetched 100 messages at a time).
    fleet = fleets(
        redis_server_url,
        ORDERFLEET_BATCH_SIZE="1000",
        ORDERFLEET_BATCH_INTERVAL="1",
        ORDERFLEET_BATCH_LINGER="1",
        ORDERFLEET_LOG_LEVEL="INFO",
    )
    events, sent = backlog(fleet, 100, seed=22)  # fewer messages than a batch holds
    worker = fleet.start("w0", "worker", "--partitions", "0-7", ready=False)
    wait_for(lambda: len(unacked_of(client, key_prefix, QUEUES)) >= 300, 60, "a batch gathered")
    assert worker.stop(timeout=30) == 0
    handed_back = re.findall(r"put (\d+) gathered messages back", worker.log_text())
    assert handed_back and int(handed_back[0]) >= 300, worker.log_text()[-2000:]
    assert unacked_of(client, key_prefix, QUEUES) == {}
    assert queued(client, key_prefix) >= int(handed_back[0])
    fleet.start("w1", "worker", "--partitions", "0-7")
    distinct = len({parse_event(e).event_id for e in events})
    wait_for(lambda: ledger(sessions)[0] == distinct, 60, "every event applied")
    wait_for(lambda: ledger(sessions)[1] == len(sent), 30, "every delivery counted")
    assert_applied_once(sessions, events, sent, extra=0)
