"""Machine facts, the printed table and the JSON file of a bench run."""

from __future__ import annotations

import json
import platform
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import psutil
from rich.console import Console
from rich.table import Table

PACKAGES = {
    "celery": "celery",
    "kombu": "kombu",
    "redis_py": "redis",
    "sqlalchemy": "SQLAlchemy",
    "psycopg2": "psycopg2-binary",
}

Getter = Callable[[dict[str, Any]], Any]


def machine_facts(server_versions: dict[str, str]) -> dict[str, Any]:
    """Cores, RAM, CPU model, OS, Python and the versions of the stack and servers."""
    facts: dict[str, Any] = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "cores_logical": psutil.cpu_count(),
        "cores_physical": psutil.cpu_count(logical=False),
        "cpu_model": _cpu_model(),
        "ram_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "os": platform.platform(),
        "python": platform.python_version(),
    }
    facts.update({key: _version(dist) for key, dist in PACKAGES.items()})
    facts.update({"postgresql": server_versions["postgresql"], "redis": server_versions["redis"]})
    return facts


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "not installed"


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def write_json(result: dict[str, Any], path: Path) -> Path:
    """Write the result as indented JSON, creating the directory."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2, sort_keys=False) + "\n", encoding="utf-8")
    return path


def _latency(name: str) -> Getter:
    return lambda run: run["latency"][name]


def _either(*keys: str) -> Getter:
    """The first of these keys a run has (the no-op counts messages, the fleet events)."""
    return lambda run: next((run[k] for k in keys if k in run), None)


DRAIN_COLUMNS = {
    "baseline": "(a) no-op",
    "unbatched": "(b1) unbatched",
    "batched": "(b2) batched",
    "bulk": "(b3) bulk",
}
RATE = _either("messages_per_s", "events_per_s")
SERVER_CPU = "server CPU per message / event"
DRAIN_ROWS: list[tuple[str, str, Getter, str]] = [
    ("drain rate", "msg|ev/s", RATE, ",.0f"),
    ("distinct events applied", "events/s", lambda r: r.get("applied_events_per_s"), ",.0f"),
    ("events per message", "events", lambda r: r.get("events_per_message"), ",.1f"),
    ("window (a: until empty)", "s", lambda r: r["seconds"], ".1f"),
    (
        "worker CPU per message / event",
        "ms",
        _either("worker_cpu_ms_per_message", "worker_cpu_ms_per_event"),
        ".3f",
    ),
    (
        SERVER_CPU,
        "ms",
        _either("server_cpu_ms_per_message", "server_cpu_ms_per_event"),
        ".3f",
    ),
    ("peak RSS of a worker", "MiB", lambda r: r["worker_peak_rss_mb"], ".0f"),
    ("machine CPU busy", "%", lambda r: r["machine_cpu_busy_pct"], ".0f"),
    ("CPU used by other work", "%", lambda r: r.get("other_cpu_pct"), ".0f"),
    ("publish->commit p50, backlog wait", "ms", lambda r: _p(r, "p50_ms"), ",.0f"),
    ("publish->commit p99, backlog wait", "ms", lambda r: _p(r, "p99_ms"), ",.0f"),
    ("conflicts (retry:*)", "count", lambda r: r.get("conflicts"), ",.0f"),
    ("duplicates (deliveries - events)", "count", lambda r: r.get("duplicates"), ",.0f"),
    ("dead letters", "count", lambda r: r.get("dead_letters"), ",.0f"),
]


def _p(run: dict[str, Any], name: str) -> Any:
    return run["latency"][name] if "latency" in run else None


def _producer(mode: str, key: str = "events_per_s") -> Getter:
    return lambda run: run[mode][key]


def _per_message(run: dict[str, Any]) -> float:
    return run["bulk"]["events"] / max(1, run["bulk"]["messages"])


Row = tuple[str, str, str, Getter, str, str]
ROWS: list[Row] = [
    ("latency", "(c) b2 capacity of the same run", "events/s", lambda r: r["capacity"], ",.0f", ""),
    ("latency", "(c) offered load", "events/s", lambda r: r["rate_offered"], ",.0f", ""),
    ("latency", "(c) achieved load", "events/s", lambda r: r["rate_achieved"], ",.0f", ""),
    ("latency", "(c) publish->commit p50", "ms", _latency("p50_ms"), ",.1f", ""),
    ("latency", "(c) publish->commit p95", "ms", _latency("p95_ms"), ",.1f", ""),
    ("latency", "(c) publish->commit p99", "ms", _latency("p99_ms"), ",.1f", "<= 100"),
    (
        "latency",
        "(c) worker CPU per event",
        "ms",
        lambda r: r["worker_cpu_ms_per_event"],
        ".3f",
        "",
    ),
    ("latency", "(c) peak RSS of a worker", "MiB", lambda r: r["worker_peak_rss_mb"], ".0f", ""),
    ("latency", "(c) conflicts (retry:*)", "count", lambda r: r["conflicts"], ",.0f", ""),
    ("latency", "(c) CPU used by other work", "%", lambda r: r.get("other_cpu_pct"), ".0f", ""),
    ("producer", "(d) publish_many, bulk", "events/s", _producer("bulk"), ",.0f", ">= 20,000"),
    ("producer", "(d) bulk: events per message", "events", _per_message, ",.0f", ""),
    ("producer", "(d) publish_many, per event", "events/s", _producer("per_event"), ",.0f", ""),
    ("producer", "(d) raw pipelined send_task loop", "msg/s", _producer("raw"), ",.0f", ""),
    ("producer", "(d) per event / raw", "x", lambda r: r["per_event_to_raw"], ".3f", ">= 0.7"),
]
STORE_ROWS: list[tuple[str, str, Getter, str]] = [
    ("batched per-event drain", "events/s", lambda r: r["events_per_s"], ",.0f"),
    ("worker CPU per event", "ms", lambda r: r["worker_cpu_ms_per_event"], ".3f"),
    ("peak RSS of a worker", "MiB", lambda r: r["worker_peak_rss_mb"], ".0f"),
]


RABBITMQ_COLUMNS = {"baseline": "(a) no-op", "batched": "(b2) batched", "bulk": "(b3) bulk"}
SHOWN = {"redis": "Redis", "rabbitmq": "RabbitMQ"}


@dataclass(frozen=True)
class Drains:
    """One broker's drain columns: their blocks (runs, median), ratios and whose CPU is shown."""

    broker: str  # "redis" or "rabbitmq"
    blocks: dict[str, Any]
    columns: dict[str, str]
    server_cpu_of: list[str]
    to_redis: dict[str, float]  # a column's median rate over Redis's (RabbitMQ, with both)


def drains_of(result: dict[str, Any]) -> list[Drains]:
    """The drain columns of each broker measured: Redis's at the top level, RabbitMQ's under
    "rabbitmq"."""
    found = []
    servers = {name: status.get("server_cpu_of", []) for name, status in _brokers(result).items()}
    if "ratio" in result:
        found.append(Drains("redis", result, DRAIN_COLUMNS, servers.get("redis", []), {}))
    if "rabbitmq" in result:
        summary = result["summary"]
        to_redis = {
            name: summary[f"rabbitmq_{name}_to_redis"]
            for name in RABBITMQ_COLUMNS
            if f"rabbitmq_{name}_to_redis" in summary
        }
        found.append(
            Drains("rabbitmq", result["rabbitmq"], RABBITMQ_COLUMNS, servers["rabbitmq"], to_redis)
        )
    return found


def _brokers(result: dict[str, Any]) -> dict[str, Any]:
    """Each broker's status; a result from before RabbitMQ had columns measured Redis only."""
    return result.get("brokers") or {"redis": {"status": "measured"}}


def drain_table(result: dict[str, Any], drains: Drains) -> Table:
    """One column per drain on one broker (medians), ratios to the no-op rate on that broker,
    per-run rates and ratios."""
    machine = result["machine"]
    title = (
        f"orderfleet bench on {SHOWN[drains.broker]}{_queues(drains)}: backlog drains, "
        f"{result['config']['workers']} worker processes, {machine['cores_logical']} cores, "
        f"{machine['ram_gib']} GiB, {machine['date']}; medians of {result['config']['runs']} run(s)"
    )
    grid = Table(title=title, title_justify="left")
    for column in ["measurement", "unit", *drains.columns.values()]:
        grid.add_column(column, justify="left" if column in ("measurement", "unit") else "right")
    grid.add_row("drain rate (a: msg/s, b: events/s)", "/s", *_cells(drains, RATE, ",.0f"))
    grid.add_row("  per run", "/s", *_per_run_cells(drains, RATE, ",.0f"))
    grid.add_row("ratio to (a) of the same run", "x", *_ratio_cells(drains, "median"))
    grid.add_row("  per run", "x", *_ratio_cells(drains, "per_run"))
    goals = (
        f">= {_g(r['target'])}" if r["target"] is not None else "-" for r in _kind_ratios(drains)
    )
    grid.add_row("  target", "x", "", *goals)
    if drains.to_redis:
        cells = [_fmt(drains.to_redis.get(name), ".3f") for name in drains.columns]
        grid.add_row("rate over Redis's of the same run", "x", *cells)
    for label, unit, get, fmt in DRAIN_ROWS[1:]:
        grid.add_row(_server_label(label, drains), unit, *_cells(drains, get, fmt))
    return grid


def _queues(drains: Drains) -> str:
    return " (quorum queues)" if drains.broker == "rabbitmq" else ""


def _server_label(label: str, drains: Drains) -> str:
    """The server CPU row names whose CPU it counts (none: servers not started by the bench)."""
    if label != SERVER_CPU:
        return label
    return f"server CPU per event ({' + '.join(drains.server_cpu_of) or 'not measured'})"


def _cells(drains: Drains, get: Getter, fmt: str) -> list[str]:
    return [_fmt(get(drains.blocks[name]["median"]), fmt) for name in drains.columns]


def _per_run_cells(drains: Drains, get: Getter, fmt: str) -> list[str]:
    blocks = drains.blocks
    return [" / ".join(_fmt(get(r), fmt) for r in blocks[n]["runs"]) for n in drains.columns]


def _kind_ratios(drains: Drains) -> list[dict[str, Any]]:
    return [drains.blocks["ratio"][name] for name in drains.columns if name != "baseline"]


def _ratio_cells(drains: Drains, key: str) -> list[str]:
    cells = ["1.000" if key == "median" else ""]
    for ratio in _kind_ratios(drains):
        value = ratio[key]
        cells.append(" / ".join(f"{v:.3f}" for v in value) if key == "per_run" else f"{value:.3f}")
    return cells


def _g(value: float) -> str:
    return format(value, "g")


def table(result: dict[str, Any]) -> Table:
    """Latency (c), producer (d) and, when measured, store size (e): medians and every run."""
    runs = result["config"]["runs"]
    grid = Table(title="latency, producer, store size", title_justify="left")
    columns = ["measurement", "unit", "median", *(f"run {n}" for n in range(1, runs + 1))]
    for column in [*columns, "target"]:
        grid.add_column(column, justify="left" if column in ("measurement", "unit") else "right")
    for section, label, unit, get, fmt, target in [*ROWS, *_store_rows(result)]:
        median, per_run = _values(result, section, get)
        grid.add_row(label, unit, _fmt(median, fmt), *(_fmt(v, fmt) for v in per_run), target)
    return grid


def _store_rows(result: dict[str, Any]) -> list[Row]:
    rows: list[Row] = []
    for block in ("store_small", "store_large"):
        if block in result:
            orders = result[block]["runs"][0]["orders_in_store"]
            for label, unit, get, fmt in STORE_ROWS:
                rows.append((block, f"(e) {orders:,} orders: {label}", unit, get, fmt, ""))
    return rows


def _values(result: dict[str, Any], section: str, get: Getter) -> tuple[Any, list[Any]]:
    block = result[section]
    return get(block["median"]), [get(run) for run in block["runs"]]


def _fmt(value: Any, fmt: str) -> str:
    return "-" if value is None else format(value, fmt)


def targets(result: dict[str, Any]) -> str:
    """One line: each acceptance target, its median and whether it is met."""
    checks = _ratio_checks(result.get("ratio"), "") + _ratio_checks(
        result.get("rabbitmq", {}).get("ratio"), "RabbitMQ "
    )
    summary = result["summary"]
    if "latency_p99_ms" in summary:
        p99 = summary["latency_p99_ms"]
        checks.append((f"p99 {p99:.0f} ms <= 100", p99 <= 100))
        bulk = summary["producer_bulk_events_per_s"]
        checks.append((f"producer bulk {bulk:,.0f}/s >= 20,000", bulk >= 20_000))
        per_event = summary["producer_per_event_to_raw"]
        checks.append((f"producer per event / raw {per_event:.2f} >= 0.7", per_event >= 0.7))
    return "targets: " + "; ".join(f"{text} {'met' if ok else 'NOT MET'}" for text, ok in checks)


def _ratio_checks(ratio: dict[str, Any] | None, broker: str) -> list[tuple[str, bool]]:
    """Each drain ratio that has a target: its text and whether it is met."""
    goals = {kind: r for kind, r in (ratio or {}).items() if isinstance(r, dict) and r["target"]}
    return [
        (f"{broker}{kind} {r['median']:.2f}x >= {_g(r['target'])}", r["median"] >= r["target"])
        for kind, r in goals.items()
    ]


def footnotes(result: dict[str, Any]) -> list[str]:
    """Lines printed under the tables: how it was measured, and what to distrust."""
    machine, config = result["machine"], result["config"]
    notes = [
        f"command: {result['command']}",
        f"servers: {result['servers']['source']} (PostgreSQL {machine['postgresql']}, "
        f"Redis {machine['redis']}){_rabbitmq_server(result)}; Python {machine['python']}, "
        f"Celery {machine['celery']}, kombu {machine['kombu']}, redis-py {machine['redis_py']}, "
        f"SQLAlchemy {machine['sqlalchemy']}",
        *_skipped(result),
    ]
    if "latency" in result:
        notes.append(
            f"(c) offered load: {config['load']:g} x the same run's (b2) events/s; "
            f"(d) {config['producer_events']:,} events per mode, one process each"
        )
    notes.append(targets(result))
    for fill in result.get("store_fill") or []:
        notes.append(
            f"(e) store filled by SQL to {fill['orders']:,} orders / {fill['events']:,} events "
            f"in {fill['fill_seconds']:.0f} s"
        )
    return [*notes, *result["warnings"]]


def _rabbitmq_server(result: dict[str, Any]) -> str:
    status = _brokers(result).get("rabbitmq", {})
    if status.get("status") != "measured":
        return ""
    return f", RabbitMQ {result['machine'].get('rabbitmq')} at {status['url']}"


def _skipped(result: dict[str, Any]) -> list[str]:
    """A line for each broker not measured, with the reason."""
    return [
        f"{SHOWN[name]} columns: skipped: {status['reason']}"
        for name, status in _brokers(result).items()
        if status["status"] != "measured"
    ]


def print_report(result: dict[str, Any], path: Path, console: Console | None = None) -> None:
    """Print the tables (the drains on each broker; latency, producer and store size on Redis),
    their footnotes and where the JSON went."""
    console = console or Console()
    for drains in drains_of(result):
        console.print(drain_table(result, drains))
    if "latency" in result:
        console.print(table(result))
    for line in footnotes(result):
        console.print(line, highlight=False, soft_wrap=True)
    console.print(f"results: {path}", highlight=False)
