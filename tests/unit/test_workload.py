"""The traffic generator (worker/dev/workload.py): its demo/simulate, bench and tests profiles."""

from collections import Counter, defaultdict
from random import Random

import pytest
from orderfleet.models import EVENT_TYPES, InvalidEvent, decide, parse_event, project
from orderfleet.models.decisions import verdict_of
from orderfleet.worker.dev.workload import (
    bench_traffic,
    compact_order,
    deliveries_of,
    generate,
    order_traffic,
)


@pytest.fixture(scope="module")
def workload():
    return generate(400, seed=11, duplicate_rate=0.3, invalid_rate=0.01, prefix="t-")


def parsed_ids(events):
    return [parse_event(e).event_id for e in events]


def test_same_seed_same_workload_other_seed_other_workload():
    assert generate(60, seed=3) == generate(60, seed=3)
    assert generate(60, seed=3).deliveries != generate(60, seed=4).deliveries


def test_every_order_is_there_with_its_prefix(workload):
    assert workload.order_ids == [f"t-{n:06d}" for n in range(400)]
    assert {e["orderId"] for e in workload.distinct} == set(workload.order_ids)


def test_distinct_events_are_valid_and_distinct(workload):
    ids = parsed_ids(workload.distinct)
    assert len(set(ids)) == len(ids) == len(workload.distinct)


def test_duplicate_rate_is_respected_and_duplicates_are_exact_copies(workload):
    valid = [e for e in workload.deliveries if e not in workload.invalid]
    assert workload.duplicates == round(0.3 * len(workload.distinct))
    assert len(valid) == len(workload.distinct) + workload.duplicates
    distinct_by_id = dict(zip(parsed_ids(workload.distinct), workload.distinct, strict=True))
    for event_id, wire in zip(parsed_ids(valid), valid, strict=True):
        assert distinct_by_id[event_id] == wire


def test_invalid_rate_is_respected_and_only_invalid_events_fail(workload):
    assert len(workload.invalid) == round(0.01 * len(workload.distinct))
    for wire in workload.invalid:
        with pytest.raises(InvalidEvent):
            parse_event(wire)
        assert wire in workload.deliveries
    sent_invalid = [e for e in workload.deliveries if e in workload.invalid]
    assert len(sent_invalid) == len(workload.invalid)


def test_zero_rates_send_each_distinct_event_once():
    plain = generate(50, seed=5, duplicate_rate=0, invalid_rate=0)
    assert plain.invalid == [] and plain.duplicates == 0
    assert sorted(parsed_ids(plain.deliveries)) == sorted(parsed_ids(plain.distinct))


def test_all_five_event_types_and_the_twists_are_present(workload):
    events = [parse_event(e) for e in workload.distinct]
    assert set(Counter(e.event_type for e in events)) == set(EVENT_TYPES)
    by_order = defaultdict(list)
    for event in events:
        by_order[event.order_id].append(event)
    payments = [[e for e in evs if e.event_type == "PaymentProcessed"] for evs in by_order.values()]
    statuses = {tuple(p.status for p in sorted(ps, key=lambda e: e.key)) for ps in payments}
    assert ("failed", "successful") in statuses
    assert ("pending", "successful") in statuses
    zero_stock = [e for e in events if e.event_type == "InventoryReserved"]
    assert any(sum(e.reserved_items.values()) == 0 for e in zero_stock)
    verdicts = Counter(verdict_of(decide(project(o, evs))) for o, evs in by_order.items())
    for verdict in [
        ("confirmed", None),
        ("rejected", "payment_failed"),
        ("rejected", "out_of_stock"),
        ("rejected", "amount_mismatch"),
    ]:
        assert verdicts[verdict] > 0, verdicts


def test_deliveries_are_out_of_order_within_and_across_orders(workload):
    valid = [parse_event(e) for e in workload.deliveries if e not in workload.invalid]
    stamps = [e.timestamp for e in valid]
    assert stamps != sorted(stamps)
    per_order = defaultdict(list)
    for event in valid:
        per_order[event.order_id].append(event.timestamp)
    shuffled = [o for o, ts in per_order.items() if ts != sorted(ts)]
    assert len(shuffled) > len(per_order) // 4
    first_orders = [e.order_id for e in valid[:50]]
    assert len(set(first_orders)) > 5  # orders interleave


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError):
        generate(-1)
    with pytest.raises(ValueError):
        generate(10, duplicate_rate=1.5)
    with pytest.raises(ValueError):
        generate(10, invalid_rate=-0.1)


# --------------------------------------------------------------------------- the bench profile


def test_bench_traffic_is_exactly_n_messages_with_explicit_ids_and_its_redelivered_share():
    sent = bench_traffic(2600, seed=7, tag="b")
    assert len(sent) == 2600
    distinct = {e["eventId"]: e for e in sent}
    assert sorted(distinct, key=lambda i: int(i.split("-e")[1])) == [
        f"b-e{n}" for n in range(round(2600 / 1.3))
    ]
    assert len(set(parsed_ids(sent))) == len(distinct)  # valid, the ids as given
    assert all(distinct[e["eventId"]] == e for e in sent)  # re-deliveries are exact copies
    assert {e["orderId"].rsplit("-o", 1)[0] for e in sent} == {"b"}


def test_bench_traffic_shuffles_within_windows_and_mixes_every_event_type():
    sent = bench_traffic(3000, seed=1, tag="w", window=500)
    numbers = [int(e["eventId"].split("-e")[1]) for e in sent]
    windows = [n // 500 for n in numbers]
    assert windows == sorted(windows)  # no event leaves its window...
    assert numbers != sorted(numbers)  # ...and within it they are shuffled
    kinds = Counter(e["eventType"] for e in sent)
    assert set(kinds) == set(EVENT_TYPES)
    assert kinds["OrderCreated"] < kinds["PaymentProcessed"]  # some payments corrected


def test_bench_traffic_is_seeded_and_keeps_tiny_runs_whole():
    assert bench_traffic(500, seed=2, tag="s") == bench_traffic(500, seed=2, tag="s")
    assert bench_traffic(500, seed=2, tag="s") != bench_traffic(500, seed=3, tag="s")
    assert bench_traffic(0, seed=1, tag="z") == []
    assert [e["eventId"] for e in bench_traffic(1, seed=1, tag="z")] == ["z-e0"]


def test_compact_orders_open_with_their_creation_and_carry_no_event_id():
    events = compact_order("o-1", Random(11))
    assert events[0]["eventType"] == "OrderCreated"
    assert all("eventId" not in e and e["orderId"] == "o-1" for e in events)


# --------------------------------------------------------------------------- the tests profile


def test_order_traffic_is_whole_orders_with_derived_ids():
    events = order_traffic(50, seed=3, prefix="p")
    orders = list(dict.fromkeys(e["orderId"] for e in events))
    assert orders == [f"p-{n}" for n in range(50)]
    firsts = {}
    for event in events:
        firsts.setdefault(event["orderId"], event["eventType"])
    assert set(firsts.values()) == {"OrderCreated"}
    ids = parsed_ids(events)
    assert len(set(ids)) == len(events) and not any("eventId" in e for e in events)
    assert order_traffic(50, seed=3, prefix="p") == events


def test_deliveries_of_sends_each_event_once_plus_a_share_shuffled_across_orders():
    events = order_traffic(100, seed=4)
    sent = deliveries_of(events, redeliver=0.3, seed=5)
    assert len(sent) == len(events) + int(len(events) * 0.3)
    assert set(parsed_ids(sent)) == set(parsed_ids(events))
    assert all(e in events for e in sent)
    assert [e["orderId"] for e in sent[:20]] != [e["orderId"] for e in events[:20]]
    assert deliveries_of(events, redeliver=0, seed=5) != events  # shuffled even without copies
    assert sorted(map(id, deliveries_of(events, 0, seed=5))) == sorted(map(id, events))
