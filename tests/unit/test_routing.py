"""Partition routing: published jump-hash vectors, our order-id vectors, the Celery router."""

from __future__ import annotations

import pytest
from orderfleet.worker.routing import (
    BATCH_TASK,
    DECISIONS_QUEUE,
    MAINTENANCE_QUEUE,
    all_queues,
    covers_exactly_once,
    jump_hash,
    order_key,
    parse_partitions,
    partition_for,
    partitions_of_member,
    queue_for,
    route_for,
)

# The README's table: a producer in any language must reproduce these.
ORDER_VECTORS = [
    ("o-1", 0x5CBDCB742069A582, 0, 40),
    ("o-2", 0x2B6BF4C038758D4A, 10, 57),
    ("order-42", 0x3BF8B157C4238EEF, 2, 63),
    ("ORD-2026-000001", 0xAD13C6F315919DF3, 3, 28),
    ("c0ffee", 0xFB0288872031FC48, 11, 47),
    ("ü-unicode-ÿ", 0x709C420EC791D187, 0, 42),
    ("a", 0xCA978112CA1BBDCA, 1, 50),
    ("9f1c2d3e-0000-4000-8000-000000000001", 0x234F3FA43F813F25, 9, 19),
]


@pytest.mark.parametrize(
    ("key", "buckets", "expected"),
    [
        (1, 1, 0),
        (42, 57, 43),
        (0xDEAD10CC, 1, 0),
        (0xDEAD10CC, 666, 361),
        (256, 1024, 520),
        (1, 128, 55),
        (129, 128, 120),
        (128, 100_000_000, 38_172_097),
        (2**64 - 1, 128, 92),
    ],
)
def test_jump_hash_matches_the_published_vectors(key, buckets, expected):
    assert jump_hash(key, buckets) == expected


@pytest.mark.parametrize(("order_id", "digest", "p16", "p64"), ORDER_VECTORS)
def test_order_id_vectors(order_id, digest, p16, p64):
    assert order_key(order_id) == digest
    assert (partition_for(order_id, 16), partition_for(order_id, 64)) == (p16, p64)
    assert queue_for(order_id, 16) == f"orderfleet.p{p16:03d}"


def test_growing_partitions_moves_only_keys_to_the_new_one():
    ids = [f"o-{n}" for n in range(5000)]
    moved = [i for i in ids if partition_for(i, 16) != partition_for(i, 17)]
    assert all(partition_for(i, 17) == 16 for i in moved)
    assert 200 < len(moved) < 400


@pytest.mark.parametrize(
    ("name", "kwargs", "queue"),
    [
        ("orderfleet.events.order_created", {"event": {"orderId": "o-2"}}, "orderfleet.p010"),
        ("orderfleet.events.payment_processed", {"event": {"order_id": "o-2"}}, "orderfleet.p010"),
        (
            "orderfleet.events.shipping_calculated",
            {"event": '{"orderId": "o-2"}'},
            "orderfleet.p010",
        ),
        ("orderfleet.events.order_created", {"event": "not json"}, "orderfleet.p000"),
        ("orderfleet.events.order_created", {}, "orderfleet.p000"),
        ("orderfleet.decisions.order_confirmed", {"decision": {}}, DECISIONS_QUEUE),
        ("orderfleet.maintenance.relay_outbox", {}, MAINTENANCE_QUEUE),
        ("someone.elses.task", {}, None),
        (BATCH_TASK, {"events": [{"orderId": "o-2"}, {"orderId": "o-1"}]}, "orderfleet.p010"),
        (BATCH_TASK, {"events": []}, "orderfleet.p000"),
        (BATCH_TASK, {"events": "nope"}, "orderfleet.p000"),
    ],
)
def test_router_sends_each_task_name_to_its_queue(name, kwargs, queue):
    assert route_for(name, kwargs, 16) == queue


def test_queue_for_reads_the_partition_count_from_the_settings(monkeypatch):
    monkeypatch.setenv("ORDERFLEET_PARTITIONS", "64")
    assert queue_for("o-2") == "orderfleet.p057"
    monkeypatch.delenv("ORDERFLEET_PARTITIONS")
    assert queue_for("o-2") == "orderfleet.p010"


def test_partition_specs():
    assert parse_partitions("0-3,8,10-11", 16) == [0, 1, 2, 3, 8, 10, 11]
    with pytest.raises(ValueError, match="outside 0-15"):
        parse_partitions("12-16", 16)
    with pytest.raises(ValueError, match="is not N or N-M"):
        parse_partitions("a-b", 16)


def test_equal_members_cover_every_partition_once():
    shares = [partitions_of_member(i, 3, 16) for i in range(3)]
    assert shares == [[0, 1, 2, 3, 4], [5, 6, 7, 8, 9], [10, 11, 12, 13, 14, 15]]
    assert covers_exactly_once(shares, 16)
    assert not covers_exactly_once([[0, 1], [1, 2]], 3)


def test_every_partition_queue_is_declared():
    assert all_queues(4) == [
        "orderfleet.p000",
        "orderfleet.p001",
        "orderfleet.p002",
        "orderfleet.p003",
        DECISIONS_QUEUE,
        MAINTENANCE_QUEUE,
    ]


def test_the_registered_tasks_are_exactly_the_contracts_task_names():
    from orderfleet.tasks import decisions, events
    from orderfleet.worker.celery_app import app
    from orderfleet.worker.routing import BATCH_TASK, DECISION_TASKS, TASK_FOR_TYPE

    ours = {
        name
        for name in app.tasks
        if name.startswith(("orderfleet.events.", "orderfleet.decisions."))
    }
    assert ours == {*TASK_FOR_TYPE.values(), BATCH_TASK, *DECISION_TASKS.values()}
    assert events.order_created.name == TASK_FOR_TYPE["OrderCreated"]  # names for Python callers
    assert decisions.order_on_hold.name == DECISION_TASKS["on_hold"]
