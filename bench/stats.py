"""Medians across runs (percentiles of latencies: orderfleet.worker.dev.percentiles)."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from typing import Any


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
