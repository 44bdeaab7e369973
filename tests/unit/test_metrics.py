"""The fleet-wide tallies are read back from Prometheus' own exposition format."""

from collections import Counter

from orderfleet.worker.metrics import record_batch, retries_by_cause, scrape, serve, tallies
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client import Counter as PromCounter


def exposition(counts: dict[tuple[str, str, str], int]) -> str:
    """What a process with these counter values serves on /metrics."""
    registry = CollectorRegistry()
    made: dict[str, PromCounter] = {}
    for (name, label, value), count in counts.items():
        if name not in made:
            made[name] = PromCounter(name, "help", [label], registry=registry)
        made[name].labels(value).inc(count)
    return generate_latest(registry).decode()


def test_tallies_name_each_counter_by_its_label():
    text = exposition(
        {
            ("orderfleet_events", "outcome", "applied"): 7,
            ("orderfleet_events", "outcome", "duplicate"): 2,
            ("orderfleet_events", "outcome", "dead_lettered"): 1,
            ("orderfleet_dead_letters", "reason", "invalid_event"): 1,
            ("orderfleet_retries", "cause", "LockNotAcquired"): 3,
            ("orderfleet_decisions", "outcome", "confirmed"): 4,
            ("unrelated", "kind", "x"): 9,
        }
    )
    assert tallies(text) == Counter(
        {
            "applied": 7,
            "duplicate": 2,
            "dead_lettered": 1,
            "dead_letter:invalid_event": 1,
            "retry:LockNotAcquired": 3,
            "decision:confirmed": 4,
        }
    )


def test_a_served_batch_is_scraped_and_processes_add_up():
    record_batch(Counter({"applied": 3, "retry:VersionConflict": 1}), seconds=0.01)
    port = serve(0)  # 0: a free port, the one bound is returned
    assert port
    url = f"http://127.0.0.1:{port}/metrics"
    once = scrape([url])
    assert once["applied"] >= 3 and once["retry:VersionConflict"] >= 1
    assert scrape([url, url]) == {name: 2 * count for name, count in once.items()}


def test_retries_by_cause_keeps_only_the_retry_tallies():
    counts = {"applied": 7, "retry:VersionConflict": 2, "retry:LockNotAcquired": 3}
    assert retries_by_cause(counts) == {"LockNotAcquired": 3, "VersionConflict": 2}
