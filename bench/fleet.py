"""(b) orderfleet draining backlogs (per-event unbatched/batched, bulk), (c) latency at a load."""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from orderfleet.models.tables import DeadLetterRow, EventRow
from orderfleet.worker.dev.percentiles import latency_summary
from orderfleet.worker.dev.processes import READY_TIMEOUT, FleetProcess
from orderfleet.worker.metrics import retries_by_cause
from sqlalchemy import func, select

from bench.context import Context
from bench.procs import Snapshot, free_port, module_command, usage, wait_quiet
from bench.servers import BenchError

POLL = 0.25
START_POLL = 0.05
SIZING_MARGIN = 1.3
STARTUP_ALLOWANCE = 3.0
MAX_BACKLOG = 400_000
DRAIN_TIMEOUT = 60.0
STATUS_FIELDS = ("applied", "duplicate", "dead_lettered")
BATCHING = {"unbatched": "false", "batched": "true", "bulk": "true"}
BULK_EVENTS_PER_MESSAGE = 100  # a bulk backlog's publish_many calls: this x partitions events


@dataclass(frozen=True)
class Drain:
    """One backlog drain: its kind (unbatched, batched or bulk), size, window and traffic."""

    kind: str
    name: str
    backlog: int
    duration: float
    seed: int
    keep_store: bool = False

    @property
    def bulk(self) -> bool:
        return self.kind == "bulk"


def fleet_workers(ctx: Context, name: str, batching: str = "true") -> list[FleetProcess]:
    """`orderfleet worker --index i --of N` for each of the N workers."""
    n = ctx.config.workers
    return [
        FleetProcess(
            f"{name}-w{i}",
            ["worker", "--index", str(i), "--of", str(n)],
            ctx.fleet_env(ORDERFLEET_BATCHING=batching, ORDERFLEET_METRICS_PORT=str(free_port())),
            ctx.log_dir,
        )
        for i in range(n)
    ]


def backlog_for(rate_estimate: float, duration: float, warmup: float) -> int:
    """Events enough to keep the workers busy through the window, with a margin."""
    seconds = duration + warmup + STARTUP_ALLOWANCE
    return min(MAX_BACKLOG, math.ceil(SIZING_MARGIN * rate_estimate * seconds))


def ended(stats: dict[str, int]) -> int:
    """Messages that reached an end (applied, duplicate or dead-lettered) per the tallies."""
    return sum(stats.get(name, 0) for name in STATUS_FIELDS)


def run_throughput(ctx: Context, drain: Drain) -> dict[str, Any]:
    """Pre-enqueue the drain's backlog, start the workers, count the events ended in a window."""
    ctx.reset(keep_store=drain.keep_store)
    waited = wait_quiet(ctx.config.wait_quiet)
    stamps, published = _publish_backlog(ctx, drain)
    workers = fleet_workers(ctx, drain.name, BATCHING[drain.kind])
    _start_working(ctx, workers)
    try:
        with ctx.monitor(workers) as monitor:
            time.sleep(ctx.config.warmup)
            before, stats_before = monitor.snapshot(), ctx.stats(workers)
            drained = _watch_window(ctx, workers, drain)
            after, stats_after = monitor.snapshot(), ctx.stats(workers)
            peak = monitor.peak_rss_mb()
    finally:
        ctx.supervisor.stop(workers)
    events = ended(stats_after) - ended(stats_before)
    applied = stats_after.get("applied", 0) - stats_before.get("applied", 0)
    seconds = after.at - before.at
    return {
        "events_per_s": round(events / seconds, 1),
        "applied_events_per_s": round(applied / seconds, 1),
        "events": events,
        "seconds": round(seconds, 3),
        "backlog": drain.backlog,
        "events_per_message": round(drain.backlog / max(1, published["messages"]), 1),
        "drained_early": drained,
        "publish_per_s": round(drain.backlog / published["seconds"], 1),
        "latency": _window_latency(ctx, stamps, before, after),
        **_per_event(usage(before, after, events, ctx.config.workers)),
        "worker_peak_rss_mb": round(peak, 1),
        "waited_for_quiet_s": waited,
        "conflicts": sum(retries_by_cause(stats_after).values()),
        "retries_by_cause": retries_by_cause(stats_after),
        "duplicates": _duplicates(ctx),
        "dead_letters": _dead_letters(ctx),
    }


def _per_event(used: dict[str, float]) -> dict[str, float]:
    """usage()'s per-message figures renamed per event (the fleet tallies count events)."""
    return {k.replace("_per_message", "_per_event"): v for k, v in used.items()}


def _publish_backlog(ctx: Context, drain: Drain) -> tuple[dict[str, float], dict[str, float]]:
    """Producer processes publish the backlog between them; merged times; messages, seconds."""
    shards = max(1, min(ctx.config.producers, drain.backlog // 1000 or 1))
    producers = [
        FleetProcess(
            f"{drain.name}-producer{shard}",
            _backlog_args(ctx, drain, shard, shards),
            ctx.fleet_env(),
            ctx.log_dir,
            command=module_command("bench.producer"),
        )
        for shard in range(shards)
    ]
    started = time.perf_counter()
    for producer in producers:
        ctx.supervisor.start(producer)
    timeout = 120.0 + drain.backlog / 200
    stamps: dict[str, float] = {}
    messages = 0
    for shard, producer in enumerate(producers):
        _finish(producer, timeout)
        produced = _read_stamps(ctx, drain.name, shard)
        _merge(stamps, produced)
        messages += produced["messages"]
    ctx.supervisor.stop(producers)
    return stamps, {"messages": messages, "seconds": time.perf_counter() - started}


def _backlog_args(ctx: Context, drain: Drain, shard: int, shards: int) -> list[str]:
    chunk = BULK_EVENTS_PER_MESSAGE * ctx.config.partitions if drain.bulk else 1000
    return [
        "backlog",
        f"--out={_stamps_path(ctx, drain.name, shard)}",
        f"--tag={drain.name}",
        f"--seed={drain.seed}",
        f"--messages={drain.backlog}",
        f"--shard={shard}",
        f"--shards={shards}",
        f"--chunk={chunk}",
        *(["--bulk"] if drain.bulk else []),
    ]


def _stamps_path(ctx: Context, name: str, shard: int) -> str:
    return str(ctx.log_dir / f"{name}-publish{shard}.json")


def _read_stamps(ctx: Context, name: str, shard: int) -> dict[str, Any]:
    with open(_stamps_path(ctx, name, shard), encoding="utf-8") as file:
        return json.load(file)


def _merge(stamps: dict[str, float], produced: dict[str, Any]) -> None:
    for event_id, at in produced["first_publish"].items():
        stamps[event_id] = min(at, stamps.get(event_id, at))


def _finish(producer: FleetProcess, timeout: float) -> None:
    """Wait for a producer; raise with its log when it failed."""
    code = producer.wait_exit(timeout)
    if code != 0:
        raise BenchError(f"{producer.name} failed ({code}):\n{producer.log_text()[-3000:]}")


def _watch_window(ctx: Context, workers: list[FleetProcess], drain: Drain) -> bool:
    """Sleep through the window; True when the backlog ran out first (the window is cut short).

    It has run out when the queues hold nothing ready and the workers have ended every event
    of it: a worker's prefetch may hold much of it (on RabbitMQ each of its partition queues
    has a prefetch of a batch, so a bulk backlog is all in the workers' hands at once)."""
    end = time.monotonic() + drain.duration
    while time.monotonic() < end:
        time.sleep(min(POLL, max(0.0, end - time.monotonic())))
        _check_alive(workers)
        if ctx.fleet_depth() == 0 and ended(ctx.stats(workers)) >= drain.backlog:
            return True
    return False


def _start_working(ctx: Context, workers: list[FleetProcess]) -> None:
    """Start the workers; return when each one is ready or already ending events.

    On RabbitMQ a worker under a backlog reports ready late: Celery subscribes to its queues
    one round trip at a time, and applies what each subscription delivers while it waits for
    the next (seen: 5 s and most of a 64,000-event bulk backlog before ready). Its metrics
    (at the port it was given) show it working before that."""
    for worker in workers:
        ctx.supervisor.start(worker)
    deadline = time.monotonic() + READY_TIMEOUT
    waiting = list(workers)
    while waiting:
        if time.monotonic() > deadline:
            raise BenchError(f"{waiting[0].name} neither ready nor working:\n{_tail(waiting[0])}")
        _check_alive(workers)
        time.sleep(START_POLL)
        waiting = [w for w in waiting if not _working(ctx, w)]


def _working(ctx: Context, worker: FleetProcess) -> bool:
    if worker.ready_path.exists():
        return True
    try:
        return ended(ctx.stats([worker])) > 0
    except OSError:  # its metrics are not served yet
        return False


def _tail(worker: FleetProcess) -> str:
    return worker.log_text()[-3000:]


def _check_alive(workers: list[FleetProcess]) -> None:
    dead = [w for w in workers if not w.alive()]
    if dead:
        raise BenchError(f"worker {dead[0].name} exited:\n{dead[0].log_text()[-3000:]}")


def _committed(ctx: Context, since: float, until: float | None = None) -> list[tuple[str, float]]:
    """(eventId, received_at as epoch seconds) of events committed in [since, until]."""
    query = select(EventRow.event_id, EventRow.received_at).where(
        EventRow.received_at >= datetime.fromtimestamp(since, UTC)
    )
    if until is not None:
        query = query.where(EventRow.received_at <= datetime.fromtimestamp(until, UTC))
    with ctx.engine.connect() as conn:
        return [(event_id, at.timestamp()) for event_id, at in conn.execute(query)]


def _latencies(
    committed: list[tuple[str, float]], stamps: dict[str, float], published_after: float = 0.0
) -> list[float]:
    """Publish->commit seconds of committed events first published after `published_after`."""
    return [
        at - stamps[event_id]
        for event_id, at in committed
        if event_id in stamps and stamps[event_id] >= published_after
    ]


def _window_latency(
    ctx: Context, stamps: dict[str, float], before: Snapshot, after: Snapshot
) -> dict[str, float]:
    return latency_summary(_latencies(_committed(ctx, before.at, after.at), stamps))


def _duplicates(ctx: Context) -> int:
    """Re-deliveries recognised as duplicates: sum(deliveries) - count in order_events."""
    query = select(func.coalesce(func.sum(EventRow.deliveries), 0) - func.count())
    with ctx.engine.connect() as conn:
        return int(conn.execute(query).scalar_one())


def _dead_letters(ctx: Context) -> int:
    with ctx.engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(DeadLetterRow)).scalar_one())


def _event_count(ctx: Context) -> int:
    with ctx.engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(EventRow)).scalar_one())


def run_latency(ctx: Context, rate: float, duration: float, name: str, seed: int) -> dict[str, Any]:
    """Publish at `rate` events/s for `duration` s into running workers; publish->commit."""
    ctx.reset()
    waited = wait_quiet(ctx.config.wait_quiet)
    workers = fleet_workers(ctx, name)
    ctx.supervisor.start_ready(workers)
    try:
        with ctx.monitor(workers) as monitor:
            time.sleep(ctx.config.warmup)
            before = monitor.snapshot()
            produced = _publish_at_rate(ctx, rate, duration, name, seed)
            settled = _wait_committed(ctx, workers, produced["distinct"])
            after, stats = monitor.snapshot(), ctx.stats(workers)
            peak = monitor.peak_rss_mb()
    finally:
        ctx.supervisor.stop(workers)
    stamps = produced["first_publish"]
    start = min(stamps.values(), default=before.at)
    latencies = _latencies(_committed(ctx, before.at), stamps, start + ctx.config.latency_warmup)
    return {
        "rate_offered": rate,
        "rate_achieved": round(produced["published"] / produced["seconds"], 1),
        "published": produced["published"],
        "distinct": produced["distinct"],
        "committed": _event_count(ctx),
        "all_committed": settled,
        "latency": latency_summary(latencies),
        **_per_event(usage(before, after, ended(stats), ctx.config.workers)),
        "worker_peak_rss_mb": round(peak, 1),
        "waited_for_quiet_s": waited,
        "conflicts": sum(retries_by_cause(stats).values()),
        "duplicates": _duplicates(ctx),
        "dead_letters": _dead_letters(ctx),
    }


def _publish_at_rate(
    ctx: Context, rate: float, duration: float, name: str, seed: int
) -> dict[str, Any]:
    """One producer process publishing at a fixed rate; its summary and publish times."""
    producer = FleetProcess(
        f"{name}-producer",
        [
            "rate",
            f"--out={_stamps_path(ctx, name, 0)}",
            f"--tag={name}",
            f"--seed={seed}",
            f"--rate={rate}",
            f"--duration={duration}",
        ],
        ctx.fleet_env(),
        ctx.log_dir,
        command=module_command("bench.producer"),
    )
    ctx.supervisor.start(producer)
    _finish(producer, duration * 1.5 + 60)
    ctx.supervisor.stop([producer])
    return _read_stamps(ctx, name, 0)


def _wait_committed(ctx: Context, workers: list[FleetProcess], distinct: int) -> bool:
    """Wait until every distinct event published is committed; False after DRAIN_TIMEOUT."""
    deadline = time.monotonic() + DRAIN_TIMEOUT
    while time.monotonic() < deadline:
        if _event_count(ctx) + _dead_letters(ctx) >= distinct:
            return True
        _check_alive(workers)
        time.sleep(POLL)
    return False
