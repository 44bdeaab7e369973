"""Bulk messages from the producer: grouped by partition, within 1,000 events and 1 MiB each."""

from __future__ import annotations

import pytest
from orderfleet.models import parse_event
from orderfleet.models.wire import dumps
from orderfleet.tasks.producer import _chunks
from orderfleet.worker.routing import MAX_BATCH_BYTES, MAX_BATCH_EVENTS
from orderfleet.worker.settings import SettingsError, load_settings

from tests.unit.factories import wire


def loyalty(n: int, tier: str = "silver") -> dict:
    return wire(
        "LoyaltyPointsUpdated",
        order_id=f"o-{n % 7}",
        event_id=f"e-{n}",
        pointsEarned=n,
        totalPoints=n,
        tierStatus=tier,
    )


def test_a_partition_of_2500_events_goes_in_three_bulk_messages_in_order():
    events = [parse_event(loyalty(n)) for n in range(2500)]
    chunks = list(_chunks(events))
    assert [len(chunk) for chunk, _ in chunks] == [MAX_BATCH_EVENTS, MAX_BATCH_EVENTS, 500]
    assert [e.event_id for chunk, _ in chunks for e in chunk] == [e.event_id for e in events]
    assert all(len(c) == len(w) for c, w in chunks)


def test_big_events_are_split_before_a_message_passes_1_mib():
    tier = "x" * 40_000  # unknown-length strings are allowed up to the 64 KiB event bound
    events = [parse_event(loyalty(n, tier)) for n in range(60)]
    chunks = list(_chunks(events))
    assert len(chunks) > 1 and sum(len(c) for c, _ in chunks) == 60
    for _, wires in chunks:
        assert len(dumps({"events": wires}).encode()) < MAX_BATCH_BYTES


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"ORDERFLEET_BATCH_SIZE": "0"}, "ORDERFLEET_BATCH_SIZE=0: must be 1 to 1000"),
        ({"ORDERFLEET_BATCH_SIZE": "1001"}, "ORDERFLEET_BATCH_SIZE=1001: must be 1 to 1000"),
        ({"ORDERFLEET_BATCH_INTERVAL": "0"}, "ORDERFLEET_BATCH_INTERVAL=0.0: must be above 0"),
        ({"ORDERFLEET_BATCH_LINGER": "0.1"}, "ORDERFLEET_BATCH_LINGER=0.1: must be 0 to"),
    ],
)
def test_batch_settings_are_bounded(env, message):
    with pytest.raises(SettingsError, match=message):
        load_settings(env)


def test_unbatched_means_batches_of_one():
    assert load_settings({"ORDERFLEET_BATCHING": "false"}).flush_size == 1
    assert load_settings({"ORDERFLEET_BATCH_SIZE": "250"}).flush_size == 250
