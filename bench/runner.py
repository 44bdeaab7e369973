"""One bench run: (a), (b) and (c) in turn, `runs` times, on the same servers; then medians."""

from __future__ import annotations

import contextlib
import math
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict
from datetime import UTC, datetime
from typing import Any

import redis
from orderfleet.worker.db import make_engine
from rich.console import Console

from bench.baseline import run_baseline
from bench.config import BenchConfig
from bench.context import Context
from bench.fleet import backlog_for, run_latency, run_throughput
from bench.report import machine_facts
from bench.servers import (
    Servers,
    bench_servers,
    delete_prefix,
    fresh_database,
    run_id,
    server_versions,
)
from bench.stats import median_of

METHOD = {
    "a": "raw no-op Celery task (bench/noop_app.py): N pre-enqueued messages drained by the "
    "workers (solo, -c 1, prefetch 1, acks_late, JSON); messages/s from the moment every "
    "worker is ready until the queue is empty",
    "b": "orderfleet: a backlog pre-enqueued by producer processes (sized from a pilot or the "
    "previous run to outlast the window), then `orderfleet worker --index i --of N`; "
    "messages ended (applied + duplicate + dead-lettered, from the fleet tallies) in a fixed "
    "window starting `warmup` s after every worker is ready. Latency is publish (producer "
    "wall clock) -> order_events.received_at of events committed in the window, so it "
    "includes the wait in the backlog",
    "c": "orderfleet: one producer process publishes at a fixed rate (open loop) into running "
    "workers; publish -> order_events.received_at per event, the first `latency_warmup` "
    "s left out",
    "traffic": "bench/traffic.py: orders of 5 event types (some missing, some payments "
    "corrected), 10% re-delivered, shuffled in windows of 500 messages, explicit eventIds",
}

OTHER_WORK_WARN = 10.0
Log = Callable[[str], None]


def run(config: BenchConfig, argv: list[str], console: Console) -> dict[str, Any]:
    """Measure everything and return the result document (not yet written)."""
    started = time.time()
    with bench_servers(config.data_dir) as servers, _context(config, servers) as ctx:
        console.print(f"servers: {servers.source}; logs: {ctx.log_dir}", highlight=False)
        machine = machine_facts(server_versions(ctx.redis, ctx.engine))
        measured = _measure(ctx, lambda line: console.print(line, highlight=False))
        shutil.rmtree(ctx.log_dir, ignore_errors=True)  # kept only when the run failed
    return _document(config, argv, servers, machine, measured, started)


@contextlib.contextmanager
def _context(config: BenchConfig, servers: Servers) -> Iterator[Context]:
    """A fresh database and Redis prefix for this run; processes and keys cleaned up after."""
    rid = run_id()
    prefix = f"orderfleet-bench:{rid}:"
    client = redis.Redis.from_url(servers.redis_url, socket_timeout=30)
    try:
        with fresh_database(servers.admin_database_url, f"orderfleet_bench_{rid}") as url:
            engine = make_engine(url)
            log_dir = config.data_dir.resolve() / "logs" / rid
            ctx = Context(config, servers, url, engine, client, prefix, log_dir)
            try:
                yield ctx
            finally:
                ctx.supervisor.close()
                engine.dispose()
    finally:
        with contextlib.suppress(redis.RedisError):
            delete_prefix(client, prefix)
        client.close()


def _measure(ctx: Context, log: Log) -> dict[str, Any]:
    """Every run of (a), (b), (c) in turn, with the pilot and the choice of rate."""
    out: dict[str, Any] = {"baseline": [], "fleet": [], "latency": [], "pilot": None}
    for run in range(1, ctx.config.runs + 1):
        _one_run(ctx, run, out, log)
    return out


def _one_run(ctx: Context, run: int, out: dict[str, Any], log: Log) -> None:
    """(a), then (b) on a backlog sized from the best rate so far, then (c)."""
    config, of = ctx.config, f"run {run}/{ctx.config.runs}"
    a = run_baseline(ctx, run)
    out["baseline"].append(a)
    log(f"{of} (a) raw no-op Celery: {a['messages_per_s']:,.0f} msg/s")
    if out["pilot"] is None:
        out["pilot"] = _pilot(ctx)
        log(f"pilot (b): {out['pilot']['messages_per_s']:,.0f} msg/s sizes the first backlog")
    estimate = max(r["messages_per_s"] for r in [out["pilot"], *out["fleet"]])
    backlog = backlog_for(estimate, config.duration, config.warmup)
    b = run_throughput(ctx, backlog, config.duration, f"r{run}b", config.seed + run)
    out["fleet"].append(b)
    log(f"{of} (b) orderfleet: {b['messages_per_s']:,.0f} msg/s (backlog {backlog:,})")
    out.setdefault("rate", choose_rate(config, b["messages_per_s"]))
    c = run_latency(ctx, out["rate"]["used"], config.rate_duration, f"r{run}c", config.seed)
    out["latency"].append(c)
    p = c["latency"]
    log(f"{of} (c) at {c['rate_offered']:g}/s: p50 {p['p50_ms']:.0f} ms, p99 {p['p99_ms']:.0f} ms")


def _pilot(ctx: Context) -> dict[str, Any]:
    """A short (b) whose rate sizes the first real backlog."""
    config = ctx.config
    return run_throughput(ctx, config.pilot_messages, config.pilot_duration, "pilot", config.seed)


def choose_rate(config: BenchConfig, capacity: float) -> dict[str, Any]:
    """The offered load of (c): the requested rate, capped below the measured capacity."""
    cap = max(1.0, math.floor(config.max_load * capacity))
    used = min(config.rate, cap)
    why = (
        f"requested {config.rate:g}"
        if used == config.rate
        else f"requested {config.rate:g}, capped at {config.max_load:.0%} of capacity"
    )
    why += f"; capacity (b) run 1: {capacity:,.0f} msg/s"
    return {"requested": config.rate, "used": used, "capacity": capacity, "why": why}


def _document(
    config: BenchConfig,
    argv: list[str],
    servers: Servers,
    machine: dict[str, Any],
    measured: dict[str, Any],
    started: float,
) -> dict[str, Any]:
    """The JSON document: facts, config, method, every run, medians, ratio, warnings."""
    blocks = {
        k: {"runs": measured[k], "median": median_of(measured[k])}
        for k in ("baseline", "fleet", "latency")
    }
    blocks["latency"]["rate"] = measured["rate"]
    ratio = _ratio(blocks)
    return {
        "schema_version": 1,
        "command": " ".join(["python -m bench", *argv]).strip(),
        "started_at": _iso(started),
        "finished_at": _iso(time.time()),
        "machine": machine,
        "servers": {"source": servers.source, "transport": _transport(servers)},
        "config": _config(config),
        "method": METHOD,
        **blocks,
        "pilot": measured["pilot"],
        "ratio": ratio,
        "summary": _summary(blocks, ratio),
        "warnings": _warnings(blocks, config.wait_quiet),
    }


def _ratio(blocks: dict[str, Any]) -> dict[str, Any]:
    base = blocks["baseline"]["median"]["messages_per_s"]
    fleet = blocks["fleet"]["median"]["messages_per_s"]
    pairs = zip(blocks["baseline"]["runs"], blocks["fleet"]["runs"], strict=True)
    return {
        "fleet_to_baseline": round(fleet / base, 4),
        "per_run": [round(f["messages_per_s"] / b["messages_per_s"], 4) for b, f in pairs],
        "definition": "median orderfleet messages/s (b) / median raw no-op messages/s (a)",
    }


def _summary(blocks: dict[str, Any], ratio: dict[str, Any]) -> dict[str, Any]:
    """The headline medians, flat."""
    a, b, c = (blocks[k]["median"] for k in ("baseline", "fleet", "latency"))
    return {
        "baseline_messages_per_s": a["messages_per_s"],
        "fleet_messages_per_s": b["messages_per_s"],
        "fleet_applied_events_per_s": b["applied_events_per_s"],
        "fleet_to_baseline_ratio": ratio["fleet_to_baseline"],
        "fleet_worker_cpu_ms_per_message": b["worker_cpu_ms_per_message"],
        "fleet_worker_peak_rss_mb": b["worker_peak_rss_mb"],
        "fleet_conflicts": b["conflicts"],
        "fleet_duplicates": b["duplicates"],
        "latency_rate": blocks["latency"]["rate"]["used"],
        "latency_p50_ms": c["latency"]["p50_ms"],
        "latency_p95_ms": c["latency"]["p95_ms"],
        "latency_p99_ms": c["latency"]["p99_ms"],
    }


def _warnings(blocks: dict[str, Any], wait_limit: float) -> list[str]:
    """What makes a number less trustworthy: short windows, backlogs run dry, a busy machine."""
    notes = []
    if any(run["drained_early"] for run in blocks["fleet"]["runs"]):
        notes.append("warning: a (b) backlog ran out before its window ended (window cut short)")
    if not all(run["all_committed"] for run in blocks["latency"]["runs"]):
        notes.append("warning: in (c) some events were not committed within the drain timeout")
    other = [run.get("other_cpu_pct", 0.0) for block in blocks.values() for run in block["runs"]]
    if other and max(other) > OTHER_WORK_WARN:
        notes.append(
            f"warning: other work used up to {max(other):.0f}% of the machine's CPU during a "
            "measurement (it competes with the fleet: numbers are low and noisy)"
        )
    waits = [run["waited_for_quiet_s"] for block in blocks.values() for run in block["runs"]]
    if wait_limit > 0 and waits and max(waits) >= wait_limit:
        notes.append(f"warning: the machine was still busy after waiting {wait_limit:g} s to start")
    return notes


def _config(config: BenchConfig) -> dict[str, Any]:
    return {
        k: (str(v) if v is not None and not isinstance(v, int | float | bool) else v)
        for k, v in asdict(config).items()
    }


def _transport(servers: Servers) -> str:
    return "unix sockets" if servers.redis_url.startswith("unix://") else "loopback TCP"


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="seconds")
