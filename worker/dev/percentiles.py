"""Percentiles of latencies: one definition for the demo and the bench."""

from __future__ import annotations

import math
from collections.abc import Sequence

SUMMARY_PERCENTILES = (50, 95, 99)


def percentile(sorted_values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile p (0-100] of already sorted values; 0.0 when empty."""
    if not sorted_values:
        return 0.0
    rank = max(1, math.ceil(p / 100 * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


def latency_summary(seconds: Sequence[float]) -> dict[str, float]:
    """p50/p95/p99/max in milliseconds, and how many latencies there were."""
    ordered = sorted(seconds)
    summary = {f"p{p}_ms": round(1000 * percentile(ordered, p), 2) for p in SUMMARY_PERCENTILES}
    summary["max_ms"] = round(1000 * ordered[-1], 2) if ordered else 0.0
    summary["count"] = len(ordered)
    return summary
