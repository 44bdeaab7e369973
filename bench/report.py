"""Machine facts, the printed table and the JSON file of a bench run."""

from __future__ import annotations

import json
import platform
from collections.abc import Callable
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


ROWS: list[tuple[str, str, str, Getter, str]] = [
    ("baseline", "(a) raw no-op Celery: drain", "msg/s", lambda r: r["messages_per_s"], ",.0f"),
    (
        "baseline",
        "(a) worker CPU per message",
        "ms",
        lambda r: r["worker_cpu_ms_per_message"],
        ".3f",
    ),
    ("baseline", "(a) CPU used by other work", "%", lambda r: r.get("other_cpu_pct"), ".0f"),
    ("fleet", "(b) orderfleet: backlog drain", "msg/s", lambda r: r["messages_per_s"], ",.0f"),
    (
        "fleet",
        "(b) distinct events applied",
        "events/s",
        lambda r: r["applied_events_per_s"],
        ",.0f",
    ),
    ("ratio", "(b) / (a)", "x", lambda r: r, ".3f"),
    ("fleet", "(b) window", "s", lambda r: r["seconds"], ".1f"),
    ("fleet", "(b) publish->commit p50 (incl. backlog wait)", "ms", _latency("p50_ms"), ",.0f"),
    ("fleet", "(b) publish->commit p95 (incl. backlog wait)", "ms", _latency("p95_ms"), ",.0f"),
    ("fleet", "(b) publish->commit p99 (incl. backlog wait)", "ms", _latency("p99_ms"), ",.0f"),
    ("fleet", "(b) worker CPU per message", "ms", lambda r: r["worker_cpu_ms_per_message"], ".3f"),
    (
        "fleet",
        "(b) worker CPU in window, per worker",
        "s",
        lambda r: r["worker_cpu_s_per_worker"],
        ".1f",
    ),
    (
        "fleet",
        "(b) server CPU per message (PostgreSQL + Redis)",
        "ms",
        lambda r: r.get("server_cpu_ms_per_message"),
        ".3f",
    ),
    ("fleet", "(b) machine CPU busy in window", "%", lambda r: r["machine_cpu_busy_pct"], ".0f"),
    ("fleet", "(b) CPU used by other work", "%", lambda r: r.get("other_cpu_pct"), ".0f"),
    ("fleet", "(b) peak RSS of a worker", "MiB", lambda r: r["worker_peak_rss_mb"], ".0f"),
    ("fleet", "(b) conflicts (retry:*)", "count", lambda r: r["conflicts"], ",.0f"),
    ("fleet", "(b) duplicates (deliveries - events)", "count", lambda r: r["duplicates"], ",.0f"),
    ("fleet", "(b) dead letters", "count", lambda r: r["dead_letters"], ",.0f"),
    ("latency", "(c) offered load", "events/s", lambda r: r["rate_offered"], ",.0f"),
    ("latency", "(c) achieved load", "events/s", lambda r: r["rate_achieved"], ",.0f"),
    ("latency", "(c) publish->commit p50", "ms", _latency("p50_ms"), ",.1f"),
    ("latency", "(c) publish->commit p95", "ms", _latency("p95_ms"), ",.1f"),
    ("latency", "(c) publish->commit p99", "ms", _latency("p99_ms"), ",.1f"),
    (
        "latency",
        "(c) worker CPU per message",
        "ms",
        lambda r: r["worker_cpu_ms_per_message"],
        ".3f",
    ),
    ("latency", "(c) conflicts (retry:*)", "count", lambda r: r["conflicts"], ",.0f"),
    ("latency", "(c) CPU used by other work", "%", lambda r: r.get("other_cpu_pct"), ".0f"),
]


def table(result: dict[str, Any]) -> Table:
    """The medians and per-run values of every headline number."""
    runs = result["config"]["runs"]
    machine = result["machine"]
    title = (
        f"orderfleet bench: {result['config']['workers']} worker processes, "
        f"{machine['cores_logical']} cores, {machine['ram_gib']} GiB, {machine['date']}"
    )
    grid = Table(title=title, title_justify="left")
    for column in ["measurement", "unit", "median", *(f"run {n}" for n in range(1, runs + 1))]:
        grid.add_column(column, justify="left" if column in ("measurement", "unit") else "right")
    for section, label, unit, get, fmt in ROWS:
        median, per_run = _values(result, section, get)
        grid.add_row(label, unit, _fmt(median, fmt), *(_fmt(v, fmt) for v in per_run))
    return grid


def _values(result: dict[str, Any], section: str, get: Getter) -> tuple[Any, list[Any]]:
    if section == "ratio":
        return result["ratio"]["fleet_to_baseline"], result["ratio"]["per_run"]
    block = result[section]
    return get(block["median"]), [get(run) for run in block["runs"]]


def _fmt(value: Any, fmt: str) -> str:
    return "-" if value is None else format(value, fmt)


def footnotes(result: dict[str, Any]) -> list[str]:
    """Lines printed under the table: how it was measured, and what to distrust."""
    machine, rate = result["machine"], result["latency"]["rate"]
    return [
        f"command: {result['command']}",
        f"servers: {result['servers']['source']} (PostgreSQL {machine['postgresql']}, "
        f"Redis {machine['redis']}); Python {machine['python']}, Celery {machine['celery']}, "
        f"kombu {machine['kombu']}, redis-py {machine['redis_py']}, "
        f"SQLAlchemy {machine['sqlalchemy']}",
        f"(c) rate used: {rate['used']:g} events/s ({rate['why']})",
        f"orderfleet throughput = {result['ratio']['fleet_to_baseline']:.1%} of the raw no-op "
        "Celery ceiling (median (b) msg/s / median (a) msg/s)",
        *result["warnings"],
    ]


def print_report(result: dict[str, Any], path: Path, console: Console | None = None) -> None:
    """Print the table, its footnotes and where the JSON went."""
    console = console or Console()
    console.print(table(result))
    for line in footnotes(result):
        console.print(line, highlight=False, soft_wrap=True)
    console.print(f"results: {path}", highlight=False)
