"""One bench run: (a) to (d) on Redis and (a), b2, b3 on RabbitMQ in turn, `runs` times, on the
same servers, then (e); medians, and each drain's ratio to the no-op rate on its broker."""

from __future__ import annotations

import contextlib
import functools
import math
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict
from datetime import UTC, datetime
from typing import Any

import redis
from kombu.utils.url import maybe_sanitize_url
from orderfleet.worker.db import make_engine
from orderfleet.worker.dev.scratch import delete_prefix, fresh_database, unique_id
from rich.console import Console

from bench.baseline import run_baseline
from bench.brokers import RabbitBroker, RedisBroker
from bench.config import (
    BROKERS,
    RABBITMQ,
    REDIS,
    SMALL_STORE,
    BenchConfig,
    amqp_url,
    chosen_brokers,
    rabbitmq_required,
)
from bench.context import Context
from bench.fleet import Drain, backlog_for, run_latency, run_throughput
from bench.procs import log_errors
from bench.publishing import run_producer
from bench.rabbit_server import Skipped, rabbitmq_broker
from bench.report import machine_facts
from bench.servers import Servers, bench_servers, server_versions
from bench.stats import median_of, median_or_zero
from bench.store import prefill

METHOD = {
    "a": "raw no-op Celery task (bench/noop_app.py): N pre-enqueued messages drained by the "
    "workers (solo, -c 1, prefetch 1, acks_late, JSON); messages/s from the moment every "
    "worker is ready until the queue is empty",
    "b": "orderfleet: a backlog pre-enqueued by producer processes (sized from the no-op rate "
    "of run 1 or the previous runs to outlast the window), then `orderfleet worker --index i "
    "--of N`; events ended (applied + duplicate + dead-lettered, summed over the workers' "
    "Prometheus metrics) in a fixed window starting `warmup` s after every worker is ready or "
    "already ending events (on RabbitMQ a worker under a backlog announces ready late). "
    "b1: per-event messages, "
    "ORDERFLEET_BATCHING=false; b2: per-event messages, batching on (default); b3: bulk "
    "messages (publish_many bulk=True, about 100 events per message), batching on. Ratios: "
    "events/s over the raw no-op msg/s of the same run, median of the runs. Latency is "
    "publish (producer wall clock) -> order_events.received_at of events committed in the "
    "window, so it includes the wait in the backlog",
    "c": "orderfleet, batching on: one producer process publishes per-event messages at "
    "`load` x the same run's b2 rate (open loop, what is due once per 2 ms tick) into running "
    "workers; publish -> "
    "order_events.received_at per event, the first `latency_warmup` s left out",
    "d": "one producer process per mode publishes `producer_events` events of the same traffic "
    "into a prefix no worker consumes: publish_many bulk=True in one call, publish_many "
    "bulk=False in one call, and a raw pipelined send_task loop (kombu producer.batch of "
    "1,000) over the same pre-built per-event messages; events/s of the publish only",
    "e": "with --orders-in-store N: the store pre-filled by SQL (generate_series: orders in "
    "progress, 2 events each) with 10,000 and then N orders, and a b2 drain on each",
    "isolation": "before each measurement the tables are emptied, PostgreSQL checkpoints "
    "(what the last one left dirty is written out) and the CPU is let go quiet",
    "traffic": "worker/dev/workload.py bench_traffic: orders of 5 event types (some missing, "
    "some payments corrected), 30% re-delivered, shuffled in windows of 500 messages, "
    "explicit eventIds",
    "rabbitmq": "in the same run, after each run's Redis measurements: (a), b2 and b3 as on "
    "Redis (the same traffic, windows and backlog sizing, from the RabbitMQ no-op rate) on "
    "the machine's RabbitMQ in a virtual host of the run's own (deleted afterwards); "
    "orderfleet on its RabbitMQ configuration (durable quorum queues, single active consumer "
    "on each partition queue, publisher confirms), the no-op on a durable quorum queue with "
    "the same transport; locks and PostgreSQL as on Redis; queue depths from passive "
    "queue_declare (ready messages); ratios to the RabbitMQ no-op msg/s of the same run",
}

KINDS = ("unbatched", "batched", "bulk")
RABBITMQ_KINDS = ("batched", "bulk")
FIRST_GUESS = {"unbatched": 0.5, "batched": 1.0, "bulk": 6.0}  # x no-op msg/s: run 1's backlogs
# On RabbitMQ the no-op drains slower, orderfleet about as fast (quick run, 2026-11-28: b2 3.9x).
RABBITMQ_FIRST_GUESS = {**FIRST_GUESS, "batched": 4.0}
# Goals hold for default settings (batching on); unbatched is the reference it is measured against.
TARGETS = {"unbatched": None, "batched": 0.8, "bulk": 5.0}
BLOCKS = ("baseline", *KINDS, "latency", "producer")
RABBITMQ_BLOCKS = ("baseline", *RABBITMQ_KINDS)
BLOCKS_ON = {REDIS: BLOCKS, RABBITMQ: RABBITMQ_BLOCKS}
NAMES_ON = {REDIS: "", RABBITMQ: "mq-"}  # process and log names of each broker's measurements
SHOWN = {REDIS: "Redis", RABBITMQ: "RabbitMQ"}
STORE_BLOCKS = ("store_small", "store_large")
OTHER_WORK_WARN = 10.0
Log = Callable[[str], None]


def run(config: BenchConfig, argv: list[str], console: Console) -> dict[str, Any]:
    """Measure everything and return the result document (not yet written)."""
    started = time.time()
    rid = unique_id()
    with (
        bench_servers(config.data_dir) as servers,
        _rabbitmq(config, rid) as rabbit,
        _context(config, servers, rid) as ctx,  # its processes stop before the vhost goes
    ):
        console.print(f"servers: {servers.source}; logs: {ctx.log_dir}", highlight=False)
        sides = _sides(ctx, rabbit)
        brokers = {name: _status(sides[name]) for name in BROKERS}
        for name, status in brokers.items():
            console.print(f"{SHOWN[name]}: {_shown_status(status)}", highlight=False)
        machine = machine_facts(server_versions(ctx.redis, ctx.engine))
        machine["rabbitmq"] = getattr(rabbit, "version", None)
        log = functools.partial(console.print, highlight=False)
        measured = _measure(config, _measured(sides), log)
        errors = log_errors(ctx.log_dir)
        shutil.rmtree(ctx.log_dir, ignore_errors=True)  # kept only when the run failed
    return _document(config, argv, servers, machine, brokers, measured, errors, started)


def _sides(ctx: Context, rabbit: RabbitBroker | Skipped) -> dict[str, Context | Skipped]:
    """Each broker's context, or why it is not measured."""
    chosen = chosen_brokers(ctx.config)
    redis_side = ctx if REDIS in chosen else Skipped("not selected (--brokers)")
    return {
        REDIS: redis_side,
        RABBITMQ: ctx.on(rabbit) if isinstance(rabbit, RabbitBroker) else rabbit,
    }


def _measured(sides: dict[str, Context | Skipped]) -> dict[str, Context]:
    return {name: side for name, side in sides.items() if isinstance(side, Context)}


def _status(side: Context | Skipped) -> dict[str, Any]:
    """How a broker was measured (its URL, whose CPU counts as the servers'), or why not."""
    if isinstance(side, Skipped):
        return {"status": "skipped", "reason": side.reason}
    return {
        "status": "measured",
        "url": maybe_sanitize_url(side.broker.url),
        "server_cpu_of": side.server_names(),
    }


def _shown_status(status: dict[str, Any]) -> str:
    if status["status"] == "skipped":
        return f"skipped: {status['reason']}"
    return f"measured at {status['url']}"


@contextlib.contextmanager
def _rabbitmq(config: BenchConfig, rid: str) -> Iterator[RabbitBroker | Skipped]:
    """The run's RabbitMQ virtual host, when RabbitMQ is chosen and reachable."""
    if RABBITMQ not in chosen_brokers(config):
        yield Skipped("not selected (--brokers)")
        return
    vhost = f"orderfleet-bench-{rid}"
    with rabbitmq_broker(amqp_url(config), vhost, rabbitmq_required(config)) as broker:
        yield broker


@contextlib.contextmanager
def _context(config: BenchConfig, servers: Servers, rid: str) -> Iterator[Context]:
    """A fresh database and Redis prefix for this run; processes and keys cleaned up after."""
    prefix = f"orderfleet-bench:{rid}:"
    client = redis.Redis.from_url(servers.redis_url, socket_timeout=30)
    try:
        with fresh_database(servers.admin_database_url, f"orderfleet_bench_{rid}") as url:
            engine = make_engine(url)
            log_dir = config.data_dir.resolve() / "logs" / rid
            broker = RedisBroker(servers.broker_url, client, prefix)
            ctx = Context(config, servers, url, engine, client, prefix, log_dir, broker)
            try:
                yield ctx
            finally:
                ctx.supervisor.stop_all()
                engine.dispose()
    finally:
        with contextlib.suppress(redis.RedisError):
            delete_prefix(client, prefix)
        client.close()


def _measure(config: BenchConfig, sides: dict[str, Context], log: Log) -> dict[str, dict[str, Any]]:
    """Every run: (a) to (d) on Redis, then (a), b2, b3 on RabbitMQ; then (e) when asked for."""
    out: dict[str, dict[str, Any]] = {
        name: {block: [] for block in BLOCKS_ON[name]} for name in sides
    }
    for run in range(1, config.runs + 1):
        if REDIS in sides:
            _one_run(sides[REDIS], run, out[REDIS], log)
        if RABBITMQ in sides:
            same_run = {kind: runs[-1:] for kind, runs in out.get(REDIS, {}).items()}
            _drains(sides[RABBITMQ], RABBITMQ, run, out[RABBITMQ], log, same_run)
    if REDIS in sides and config.orders_in_store is not None:
        out[REDIS].update(_store(sides[REDIS], out[REDIS], log))
    return out


def _one_run(ctx: Context, run: int, out: dict[str, Any], log: Log) -> None:
    """(a), the three drains (b1-b3), (c) at a share of b2's rate, then (d)."""
    config, of = ctx.config, f"run {run}/{ctx.config.runs} Redis"
    _drains(ctx, REDIS, run, out, log)
    capacity = out["batched"][-1]["events_per_s"]
    rate = max(1.0, math.floor(config.load * capacity))
    c = run_latency(ctx, rate, config.rate_duration, f"r{run}c", config.seed)
    c["capacity"] = capacity
    out["latency"].append(c)
    p = c["latency"]
    log(f"{of} (c) at {rate:g}/s: p50 {p['p50_ms']:.0f} ms, p99 {p['p99_ms']:.0f} ms")
    d = run_producer(ctx, run)
    out["producer"].append(d)
    log(
        f"{of} (d) producer: bulk {d['bulk']['events_per_s']:,.0f} events/s, per event / raw "
        f"{d['per_event_to_raw']:.2f}"
    )


def _drains(
    ctx: Context,
    broker: str,
    run: int,
    out: dict[str, Any],
    log: Log,
    redis_run: dict[str, list[dict[str, Any]]] | None = None,
) -> None:
    """(a) on this broker, then its drains, each as a ratio to (a). A backlog is sized from
    the best earlier drain of its kind on this broker and in `redis_run` (Redis's drains of
    the same run), else from a guess: the ratios differ between the brokers."""
    config, of = ctx.config, f"run {run}/{ctx.config.runs} {SHOWN[broker]}"
    name = f"{NAMES_ON[broker]}r{run}"
    a = run_baseline(ctx, f"{NAMES_ON[broker]}noop-r{run}")
    out["baseline"].append(a)
    log(f"{of} (a) raw no-op Celery: {a['messages_per_s']:,.0f} msg/s")
    for kind in KINDS if broker == REDIS else RABBITMQ_KINDS:
        guess = (FIRST_GUESS if broker == REDIS else RABBITMQ_FIRST_GUESS)[kind]
        earlier = [*out[kind], *(redis_run or {}).get(kind, [])]
        estimate = _estimate(earlier, guess * a["messages_per_s"])
        b = _drain(ctx, kind, f"{name}{kind[:2]}", estimate, config.seed + run)
        b["to_baseline"] = round(b["events_per_s"] / a["messages_per_s"], 4)
        out[kind].append(b)
        log(f"{of} (b) {kind}: {b['events_per_s']:,.0f} events/s = {b['to_baseline']:.2f}x (a)")


def _estimate(earlier: list[dict[str, Any]], guess: float) -> float:
    """The rate that sizes a backlog: the best earlier run of its kind, else the guess."""
    return max((r["events_per_s"] for r in earlier), default=guess)


def _drain(
    ctx: Context, kind: str, name: str, estimate: float, seed: int, keep_store: bool = False
) -> dict[str, Any]:
    """One drain of `kind` on a backlog sized to outlast its window."""
    config = ctx.config
    duration = config.bulk_duration if kind == "bulk" else config.duration
    backlog = backlog_for(estimate, duration, config.warmup)
    drain = Drain(kind, name, backlog, duration, seed, keep_store)
    return {**run_throughput(ctx, drain), "planned_seconds": duration}


def _store(ctx: Context, out: dict[str, Any], log: Log) -> dict[str, Any]:
    """(e): b2 drains with 10,000 and then N orders pre-filled, `runs` times each."""
    config = ctx.config
    estimate = _estimate(out["batched"], 1.0)
    ctx.reset()
    found: dict[str, Any] = {"store_fill": []}
    for block, orders in zip(STORE_BLOCKS, (SMALL_STORE, config.orders_in_store), strict=True):
        filled = prefill(ctx.engine, orders, start=SMALL_STORE if block == "store_large" else 0)
        found["store_fill"].append(filled)
        log(f"(e) store filled to {orders:,} orders in {filled['fill_seconds']:.0f} s")
        found[block] = []
        for run in range(1, config.runs + 1):
            name = f"r{run}e{'s' if block == 'store_small' else 'l'}"
            e = _drain(ctx, "batched", name, estimate, config.seed + run, keep_store=True)
            e["orders_in_store"] = orders
            found[block].append(e)
            log(
                f"run {run}/{config.runs} (e) {orders:,} orders: {e['events_per_s']:,.0f} "
                f"events/s, {e['worker_cpu_ms_per_event']:.3f} ms CPU/event"
            )
    return found


def _document(
    config: BenchConfig,
    argv: list[str],
    servers: Servers,
    machine: dict[str, Any],
    brokers: dict[str, Any],
    measured: dict[str, dict[str, Any]],
    errors: dict[str, list[str]],
    started: float,
) -> dict[str, Any]:
    """The JSON document: facts, config, method, every run, medians, ratios, warnings. Redis's
    blocks stay at the top level (as before RabbitMQ had columns), RabbitMQ's are under
    "rabbitmq"; "brokers" says which were measured, or why not."""
    found = measured.get(REDIS, {})
    blocks, rabbit = _blocks(found), _blocks(measured.get(RABBITMQ, {}))
    document: dict[str, Any] = {
        "schema_version": 3,
        "command": " ".join(["python -m bench", *map(maybe_sanitize_url, argv)]).strip(),
        "started_at": _iso(started),
        "finished_at": _iso(time.time()),
        "machine": machine,
        "servers": {"source": servers.source, "transport": _transport(servers)},
        "brokers": brokers,
        "config": _config(config),
        "method": METHOD,
        **blocks,
        "store_fill": found.get("store_fill"),
        "log_errors": errors,
    }
    if blocks:
        document["ratio"] = _ratios(blocks, KINDS)
    if rabbit:
        document["rabbitmq"] = {**rabbit, "ratio": _ratios(rabbit, RABBITMQ_KINDS)}
    document["summary"] = _summary(document)
    notes = _warnings(blocks, rabbit, config.wait_quiet)
    document["warnings"] = notes + _log_warnings(errors)
    return document


def _blocks(found: dict[str, Any]) -> dict[str, Any]:
    """Each block's runs and their medians."""
    return {
        name: {"runs": runs, "median": median_of(runs)}
        for name, runs in found.items()
        if name != "store_fill"
    }


def _ratios(blocks: dict[str, Any], kinds: tuple[str, ...]) -> dict[str, Any]:
    """Each drain's events/s over the same run's no-op msg/s: per run, median, target."""
    ratios: dict[str, Any] = {}
    for kind in kinds:
        per_run = [run["to_baseline"] for run in blocks[kind]["runs"]]
        ratios[kind] = {"median": median_or_zero(per_run), "per_run": per_run}
        ratios[kind]["target"] = TARGETS[kind]
    ratios["definition"] = (
        "drain events/s (b) / raw no-op msg/s (a) of the same run on the same broker; median"
    )
    return ratios


def _summary(document: dict[str, Any]) -> dict[str, Any]:
    """The headline medians, flat: Redis's as they always were, RabbitMQ's as rabbitmq_*."""
    summary = _redis_summary(document) if "ratio" in document else {}
    if "rabbitmq" in document:
        summary.update(_rabbitmq_summary(document["rabbitmq"], summary))
    return summary


def _redis_summary(blocks: dict[str, Any]) -> dict[str, Any]:
    median = {name: blocks[name]["median"] for name in [*BLOCKS, *STORE_BLOCKS] if name in blocks}
    ratios = blocks["ratio"]
    summary: dict[str, Any] = {"baseline_messages_per_s": median["baseline"]["messages_per_s"]}
    for kind in KINDS:
        summary[f"{kind}_events_per_s"] = median[kind]["events_per_s"]
        summary[f"{kind}_to_baseline_ratio"] = ratios[kind]["median"]
        summary[f"{kind}_worker_cpu_ms_per_event"] = median[kind]["worker_cpu_ms_per_event"]
        summary[f"{kind}_worker_peak_rss_mb"] = median[kind]["worker_peak_rss_mb"]
    latency = median["latency"]
    summary["latency_rate"] = latency["rate_offered"]
    for p in ("p50", "p95", "p99"):
        summary[f"latency_{p}_ms"] = latency["latency"][f"{p}_ms"]
    producer = median["producer"]
    summary["producer_bulk_events_per_s"] = producer["bulk"]["events_per_s"]
    summary["producer_per_event_events_per_s"] = producer["per_event"]["events_per_s"]
    summary["producer_raw_events_per_s"] = producer["raw"]["events_per_s"]
    summary["producer_per_event_to_raw"] = producer["per_event_to_raw"]
    for block in STORE_BLOCKS:
        if block in median:
            summary[f"{block}_events_per_s"] = median[block]["events_per_s"]
            summary[f"{block}_worker_cpu_ms_per_event"] = median[block]["worker_cpu_ms_per_event"]
    return summary


def _rabbitmq_summary(section: dict[str, Any], redis: dict[str, Any]) -> dict[str, Any]:
    """RabbitMQ's medians and ratios; with Redis measured, each rate over Redis's."""
    rate = section["baseline"]["median"]["messages_per_s"]
    summary: dict[str, Any] = {"rabbitmq_baseline_messages_per_s": rate}
    if "baseline_messages_per_s" in redis:
        summary["rabbitmq_baseline_to_redis"] = _over(rate, redis["baseline_messages_per_s"])
    for kind in RABBITMQ_KINDS:
        median = section[kind]["median"]
        summary[f"rabbitmq_{kind}_events_per_s"] = median["events_per_s"]
        summary[f"rabbitmq_{kind}_to_baseline_ratio"] = section["ratio"][kind]["median"]
        summary[f"rabbitmq_{kind}_worker_cpu_ms_per_event"] = median["worker_cpu_ms_per_event"]
        summary[f"rabbitmq_{kind}_worker_peak_rss_mb"] = median["worker_peak_rss_mb"]
        if f"{kind}_events_per_s" in redis:
            redis_rate = redis[f"{kind}_events_per_s"]
            summary[f"rabbitmq_{kind}_to_redis"] = _over(median["events_per_s"], redis_rate)
    return summary


def _over(value: float, reference: float) -> float:
    return round(value / reference, 4) if reference else 0.0


def _warnings(blocks: dict[str, Any], rabbit: dict[str, Any], wait_limit: float) -> list[str]:
    """What makes a number less trustworthy: short windows, backlogs run dry, a busy machine."""
    notes = []
    drains = {kind: blocks[kind] for kind in [*KINDS, *STORE_BLOCKS] if kind in blocks}
    drains.update({f"RabbitMQ {kind}": rabbit[kind] for kind in RABBITMQ_KINDS if kind in rabbit})
    short = [name for name, block in drains.items() if any(map(_cut_short, block["runs"]))]
    if short:
        notes.append(
            f"warning: a backlog ran out in under half its window ({', '.join(short)}): "
            "short windows are noisy"
        )
    if "latency" in blocks and not all(run["all_committed"] for run in blocks["latency"]["runs"]):
        notes.append("warning: in (c) some events were not committed within the drain timeout")
    runs = [run for block in [*blocks.values(), *rabbit.values()] for run in block["runs"]]
    other = [run.get("other_cpu_pct", 0.0) for run in runs]
    if other and max(other) > OTHER_WORK_WARN:
        notes.append(
            f"warning: other work used up to {max(other):.0f}% of the machine's CPU during a "
            "measurement (it competes with the fleet: numbers are low and noisy)"
        )
    waits = [run["waited_for_quiet_s"] for run in runs]
    if wait_limit > 0 and waits and max(waits) >= wait_limit:
        notes.append(f"warning: the machine was still busy after waiting {wait_limit:g} s to start")
    return notes


def _log_warnings(errors: dict[str, list[str]]) -> list[str]:
    """One warning naming the processes whose logs had errors, with the first such line."""
    if not errors:
        return []
    first = next(iter(errors.values()))[0]
    return [f"warning: errors in the logs of {', '.join(sorted(errors))}; first: {first}"]


def _cut_short(run: dict[str, Any]) -> bool:
    return bool(run["drained_early"]) and run["seconds"] < run["planned_seconds"] / 2


def _config(config: BenchConfig) -> dict[str, Any]:
    return {name: _plain(value) for name, value in asdict(config).items()}


def _plain(value: Any) -> Any:
    """A config value for JSON: numbers as they are, anything else as text, without passwords."""
    if value is None or isinstance(value, int | float | bool):
        return value
    return maybe_sanitize_url(str(value))


def _transport(servers: Servers) -> str:
    return "unix sockets" if servers.redis_url.startswith("unix://") else "loopback TCP"


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="seconds")
