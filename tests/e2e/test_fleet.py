"""End to end: real worker processes, real Redis (or RabbitMQ) and PostgreSQL, shuffled
duplicated traffic."""

from __future__ import annotations

from collections import defaultdict

import pytest
import redis
from orderfleet.models import converged_view, decide, parse_event, project
from orderfleet.models.decisions import verdict_of
from orderfleet.models.tables import DecisionDeliveryRow, OutboxRow
from orderfleet.worker.dev.workload import deliveries_of, order_traffic
from orderfleet.worker.routing import queue_name
from orderfleet.worker.store import stream_orders
from sqlalchemy import func, select

from tests.fleet import both_brokers, kill_with_a_message_in_hand, ledger, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def publish_from_two_producers(fleet, sent, *options):
    producers = [fleet.publish(sent[i::2], f"producer-{i}", *options) for i in range(2)]
    assert [p.wait(120) for p in producers] == [0, 0]


def drained(sessions, distinct: int, sent: int):
    return lambda: ledger(sessions)[:2] == (distinct, sent)


def assert_converged(sessions, events):
    """Every stored order equals the projection of its distinct events."""
    by_order = defaultdict(list)
    for wire in events:
        event = parse_event(wire)
        by_order[event.order_id].append(event)
    stored = {state.order_id: state for state in stream_orders(sessions)}
    assert sorted(stored) == sorted(by_order)
    for order_id, order_events in by_order.items():
        expected = project(order_id, order_events)
        assert converged_view(stored[order_id].to_document()) == converged_view(
            expected.to_document()
        ), order_id
        assert stored[order_id].event_count == len(order_events)
    return stored


def assert_last_published_decisions_hold(sessions, stored):
    """Every decision was delivered, and each order's last one equals decide(final state)."""
    with sessions() as s:
        outbox = s.scalar(select(func.count()).select_from(OutboxRow))
        wait_for(lambda: _delivered(sessions) == outbox, 30, f"{outbox} decisions to be delivered")
        rows = s.execute(select(DecisionDeliveryRow.order_id, DecisionDeliveryRow.payload)).all()
    last: dict[str, dict] = {}
    for order_id, payload in rows:
        if order_id not in last or payload["seq"] > last[order_id]["seq"]:
            last[order_id] = payload
    for order_id, state in stored.items():
        delivered = last.get(order_id)
        verdict = None
        if delivered and delivered["outcome"] != "on_hold":
            verdict = (delivered["outcome"], delivered["reason"])
        assert verdict == verdict_of(decide(state)), order_id


def _delivered(sessions) -> int:
    with sessions() as s:
        return s.scalar(select(func.count()).select_from(DecisionDeliveryRow))


@both_brokers
@pytest.mark.parametrize("producer", ["--per-event", "--bulk"])
def test_two_workers_two_producers_300_orders_converge_exactly(fleet, sessions, producer):
    events = order_traffic(300, seed=1)
    sent = deliveries_of(events, redeliver=0.3, seed=2)
    fleet.start("w0", "worker", "--partitions", "0-3")
    fleet.start("w1", "worker", "--partitions", "4-7")
    fleet.start("decisions", "worker", "--decisions")
    publish_from_two_producers(fleet, sent, producer)
    wait_for(drained(sessions, len(events), len(sent)), 120, "the queues to drain")
    logged, deliveries, letters = ledger(sessions)
    assert (logged, deliveries - logged, letters) == (len(events), len(sent) - len(events), 0)
    stored = assert_converged(sessions, events)
    assert_last_published_decisions_hold(sessions, stored)
    # The last decisions sent are marked published by a quiet worker within a second or two
    # (before the relay, which waits ORDERFLEET_OUTBOX_RELAY_AFTER = 5 s, would send them again).
    wait_for(lambda: _unpublished(sessions) == 0, 4, "every decision marked published")


def _unpublished(sessions) -> int:
    with sessions() as s:
        return s.scalar(select(func.count()).where(OutboxRow.published_at.is_(None)))


@both_brokers
def test_two_workers_on_the_same_partitions_still_converge(fleet, sessions):
    events = order_traffic(300, seed=3)
    sent = deliveries_of(events, redeliver=0.3, seed=4)
    fleet.start("w0", "worker", "--partitions", "0-7")
    fleet.start("w1", "worker", "--partitions", "0-7")
    publish_from_two_producers(fleet, sent)
    wait_for(drained(sessions, len(events), len(sent)), 120, "the queues to drain")
    assert ledger(sessions) == (len(events), len(sent), 0)
    assert_converged(sessions, events)
    stats = fleet.tallies()
    retried = {k: v for k, v in stats.items() if k.startswith("retry:")}
    print(f"\nsame-partition workers: {stats}")
    assert stats["applied"] == len(events)
    assert stats["duplicate"] == len(sent) - len(events)
    # The only retries two consumers of one partition may cause: a busy lock or a lost race.
    assert set(retried) <= {"retry:VersionConflict", "retry:LockNotAcquired"}
    ends = {k for k in stats if not k.startswith(("retry:", "decision:"))}
    assert ends == {"applied", "duplicate"}  # nothing dead-lettered


def test_sigkilled_worker_loses_nothing_and_applies_nothing_twice(
    fleet, sessions, redis_server_url
):
    events = order_traffic(300, seed=5)
    sent = deliveries_of(events, redeliver=0.3, seed=6)
    victim = fleet.start("w0", "worker", "--partitions", "0-3")
    fleet.start("w1", "worker", "--partitions", "4-7")
    publish_from_two_producers(fleet, sent)
    wait_for(lambda: ledger(sessions)[0] > len(events) // 5, 60, "a fifth of the events")
    client = redis.Redis.from_url(redis_server_url)
    prefix = fleet.env["ORDERFLEET_BROKER_PREFIX"]
    _, in_hand = kill_with_a_message_in_hand(
        client, prefix, victim, [queue_name(p) for p in range(4)]
    )
    assert len(in_hand) >= 1
    fleet.start("w0-restarted", "worker", "--partitions", "0-3")
    wait_for(lambda: ledger(sessions)[0] == len(events), 120, "every event after the kill")
    wait_for(lambda: ledger(sessions)[1] >= len(sent), 60, "every delivery after the kill")
    logged, deliveries, letters = ledger(sessions)
    assert (logged, letters) == (len(events), 0)
    assert len(sent) <= deliveries <= len(sent) + len(in_hand)  # what was in hand may come back
    assert_converged(sessions, events)
