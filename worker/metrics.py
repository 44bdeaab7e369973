"""Metrics in one place: Prometheus counters per process; fleet-wide figures are their sum.

Each fleet process serves its own /metrics (ORDERFLEET_METRICS_PORT; 0 picks a free port). The
fleet-wide tallies a test, the bench or the demo reads are the sum over its processes' /metrics
(`scrape`); a process that died takes its counts with it, as Prometheus' own `rate()` expects.
Fleet-wide figures that must survive crashes come from the database (`orderfleet ledger`).
"""

from __future__ import annotations

import logging
import urllib.request
from collections import Counter as CounterOf
from collections.abc import Iterable

from prometheus_client import Counter, Histogram, start_http_server
from prometheus_client.parser import text_string_to_metric_families

log = logging.getLogger(__name__)

EVENTS = Counter("orderfleet_events_total", "Event messages handled, by outcome", ["outcome"])
RETRIES = Counter("orderfleet_retries_total", "Event retries scheduled, by cause", ["cause"])
DEAD_LETTERS = Counter("orderfleet_dead_letters_total", "Dead letters written", ["reason"])
DECISIONS = Counter("orderfleet_decisions_total", "Decisions emitted, by outcome", ["outcome"])
APPLY_SECONDS = Histogram(
    "orderfleet_apply_seconds",
    "Seconds a batch of event messages took to end (lock, transaction, publish, acks)",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
# Counter -> (label, tally name prefix) of `scrape`'s figures.
_TALLIED = {
    "orderfleet_events_total": ("outcome", ""),
    "orderfleet_dead_letters_total": ("reason", "dead_letter:"),
    "orderfleet_retries_total": ("cause", "retry:"),
    "orderfleet_decisions_total": ("outcome", "decision:"),
}


def serve(port: int | None) -> int | None:
    """Expose /metrics on `port` (0: a free one) when one is configured; the port bound."""
    if port is None:
        return None
    server, _ = start_http_server(port)
    bound = int(server.server_port)
    log.info("Prometheus metrics on :%d/metrics", bound)
    return bound


def record_batch(tally: CounterOf[str], seconds: float) -> None:
    """Count a batch's ends: applied, duplicate, dead_letter:<reason>, retry:<cause>,
    decision:<outcome>."""
    for name, count in tally.items():
        kind, _, detail = name.partition(":")
        if kind in ("applied", "duplicate"):
            EVENTS.labels(kind).inc(count)
        elif kind == "dead_letter":
            EVENTS.labels("dead_lettered").inc(count)
            DEAD_LETTERS.labels(detail).inc(count)
        elif kind == "retry":
            RETRIES.labels(detail).inc(count)
        elif kind == "decision":
            DECISIONS.labels(detail).inc(count)
    APPLY_SECONDS.observe(seconds)


def record_retry(cause: str) -> None:
    RETRIES.labels(cause).inc()


def scrape(urls: Iterable[str], timeout: float = 5.0) -> dict[str, int]:
    """The fleet's tallies summed over these /metrics URLs: applied, duplicate, dead_lettered,
    dead_letter:<reason>, retry:<cause>, decision:<outcome>."""
    total: CounterOf[str] = CounterOf()
    for url in urls:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            total.update(tallies(response.read().decode()))
    return dict(total)


def retries_by_cause(counts: dict[str, int]) -> dict[str, int]:
    """The retry:<cause> tallies (version conflicts, lock timeouts, ...), by cause."""
    retry = "retry:"
    return {k.removeprefix(retry): n for k, n in sorted(counts.items()) if k.startswith(retry)}


def tallies(exposition: str) -> CounterOf[str]:
    """The tallies in one process's /metrics text."""
    found: CounterOf[str] = CounterOf()
    for family in text_string_to_metric_families(exposition):
        for sample in family.samples:
            label, prefix = _TALLIED.get(sample.name, (None, ""))
            if label is not None and sample.value:
                found[prefix + sample.labels[label]] += int(sample.value)
    return found
