"""Nearest-rank percentiles of latencies, shared by the demo and the bench."""

from orderfleet.worker.dev.percentiles import latency_summary, percentile


def test_percentile_is_the_nearest_rank_of_sorted_values():
    values = [float(n) for n in range(1, 101)]
    assert percentile(values, 50) == 50.0
    assert percentile(values, 99) == 99.0
    assert percentile(values, 100) == 100.0
    assert percentile([3.0], 1) == 3.0
    assert percentile([], 50) == 0.0


def test_latency_summary_is_in_milliseconds_with_a_count():
    summary = latency_summary([0.3, 0.1, 0.2])
    assert summary == {
        "p50_ms": 200.0,
        "p95_ms": 300.0,
        "p99_ms": 300.0,
        "max_ms": 300.0,
        "count": 3,
    }
    assert latency_summary([])["count"] == 0
