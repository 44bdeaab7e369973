"""Metrics in one place: Prometheus counters per process, fleet-wide tallies in Redis."""

from __future__ import annotations

import logging
from collections import Counter as CounterOf

import redis
from prometheus_client import Counter, Histogram, start_http_server

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


def serve(port: int | None) -> None:
    """Expose /metrics on `port` when one is configured."""
    if port:
        start_http_server(port)
        log.info("Prometheus metrics on :%d/metrics", port)


def record_end(
    client: redis.Redis, stats_key: str, status: str, reason: str | None, seconds: float
) -> None:
    """Count one message's end, here and in the fleet tally."""
    EVENTS.labels(status).inc()
    APPLY_SECONDS.observe(seconds)
    fields = [status] + ([f"dead_letter:{reason}"] if reason else [])
    if reason:
        DEAD_LETTERS.labels(reason).inc()
    _tally(client, stats_key, fields)


def record_batch(
    client: redis.Redis, stats_key: str, tally: CounterOf[str], seconds: float
) -> None:
    """Count a batch's ends (applied, duplicate, dead_letter:<reason>, retry:<cause>,
    decision:<outcome>) here and in the fleet tally, in one round trip."""
    fields: CounterOf[str] = CounterOf()
    for name, count in tally.items():
        kind, _, detail = name.partition(":")
        if kind in ("applied", "duplicate"):
            EVENTS.labels(kind).inc(count)
        elif kind == "dead_letter":
            EVENTS.labels("dead_lettered").inc(count)
            DEAD_LETTERS.labels(detail).inc(count)
            fields["dead_lettered"] += count
        elif kind == "retry":
            RETRIES.labels(detail).inc(count)
        elif kind == "decision":
            DECISIONS.labels(detail).inc(count)
            continue
        fields[name] += count
    APPLY_SECONDS.observe(seconds)
    _tally_counts(client, stats_key, fields)


def _tally_counts(client: redis.Redis, stats_key: str, fields: CounterOf[str]) -> None:
    if not fields:
        return
    try:
        pipe = client.pipeline(transaction=False)
        for name, count in fields.items():
            pipe.hincrby(stats_key, name, count)
        pipe.execute()
    except redis.RedisError as exc:
        log.warning("fleet tally not updated: %s", exc)


def record_retry(client: redis.Redis, stats_key: str, cause: str) -> None:
    RETRIES.labels(cause).inc()
    _tally(client, stats_key, [f"retry:{cause}"])


def record_decision(outcome: str) -> None:
    DECISIONS.labels(outcome).inc()


def _tally(client: redis.Redis, stats_key: str, fields: list[str]) -> None:
    try:
        pipe = client.pipeline(transaction=False)
        for name in fields:
            pipe.hincrby(stats_key, name, 1)
        pipe.execute()
    except redis.RedisError as exc:
        log.warning("fleet tally not updated: %s", exc)


def fleet_stats(client: redis.Redis, stats_key: str) -> dict[str, int]:
    """The fleet-wide tallies: applied, duplicate, dead_lettered, retry:<cause>, ..."""
    return {k.decode(): int(v) for k, v in client.hgetall(stats_key).items()}
