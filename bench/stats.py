"""Percentiles of latencies and medians across runs."""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from typing import Any


def percentile(sorted_values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile p (0-100] of already sorted values; 0.0 when empty."""
    if not sorted_values:
        return 0.0
    rank = max(1, math.ceil(p / 100 * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


def latency_summary(seconds: Sequence[float]) -> dict[str, float]:
    """p50/p95/p99/max in milliseconds, and how many latencies there were."""
    ordered = sorted(seconds)
    summary = {f"p{p}_ms": round(1000 * percentile(ordered, p), 2) for p in (50, 95, 99)}
    summary["max_ms"] = round(1000 * ordered[-1], 2) if ordered else 0.0
    summary["count"] = len(ordered)
    return summary


def median_of(runs: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Key by key, the median of numbers, any() of booleans, recursing into dicts."""
    if not runs:
        return {}
    result: dict[str, Any] = {}
    for key, first in runs[0].items():
        values = [run[key] for run in runs if key in run]
        if isinstance(first, bool):
            result[key] = any(values)
        elif isinstance(first, int | float):
            result[key] = _round(statistics.median(values))
        elif isinstance(first, dict) and all(isinstance(v, dict) for v in values):
            result[key] = median_of(values)
    return result


def _round(value: float) -> float:
    return value if isinstance(value, int) else round(value, 4)


def median_or_zero(values: Sequence[float]) -> float:
    """The median of values rounded like median_of, 0.0 when there are none."""
    return _round(statistics.median(values)) if values else 0.0
