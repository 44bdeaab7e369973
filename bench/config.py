"""What one bench run measures, from the command line; `--quick` shortens everything."""

from __future__ import annotations

import argparse
from dataclasses import dataclass, fields
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
DEFAULT_DATA_DIR = BENCH_DIR / ".data"
RESULTS_DIR = BENCH_DIR / "results"
SMALL_STORE = 10_000  # orders in the store of (e)'s first measurement


@dataclass(frozen=True)
class BenchConfig:
    """Every knob of a bench run; the defaults are `make bench`'s."""

    workers: int = 2
    runs: int = 3
    duration: float = 30.0
    warmup: float = 1.0
    bulk_duration: float = 10.0
    load: float = 0.5
    rate_duration: float = 20.0
    latency_warmup: float = 2.0
    noop_messages: int = 20_000
    producer_events: int = 100_000
    orders_in_store: int | None = None
    producers: int = 2
    partitions: int = 16
    seed: int = 7
    wait_quiet: float = 60.0
    quick: bool = False
    data_dir: Path = DEFAULT_DATA_DIR
    output: Path | None = None


QUICK = {
    "runs": 1,
    "duration": 5.0,
    "warmup": 0.5,
    "bulk_duration": 3.0,
    "rate_duration": 5.0,
    "latency_warmup": 0.5,
    "noop_messages": 3_000,
    "producer_events": 10_000,
    "wait_quiet": 0.0,
}

HELP = {
    "workers": "worker processes for every measurement",
    "runs": "runs of each measurement; the table shows medians",
    "duration": "seconds of each per-event drain window (b1, b2, e)",
    "warmup": "seconds between all workers ready and the start of a drain window",
    "bulk_duration": "seconds of the bulk-message drain window (b3)",
    "load": "offered load of (c), as a share of the same run's batched per-event rate (b2)",
    "rate_duration": "seconds of publishing at the offered load in (c)",
    "latency_warmup": "first seconds of (c) left out of its percentiles",
    "noop_messages": "pre-enqueued messages drained by the raw no-op workers (a)",
    "producer_events": "events published from one process by each producer row (d)",
    "orders_in_store": "also measure (e): the batched drain with 10,000 and with N orders "
    "pre-filled by SQL",
    "producers": "producer processes that enqueue the backlogs of (b)",
    "partitions": "orderfleet partitions (ORDERFLEET_PARTITIONS of the fleet)",
    "seed": "seed of the generated traffic",
    "wait_quiet": "seconds to wait before each measurement for the CPU to be quiet",
    "quick": "short smoke run: 1 run, seconds-long windows, small backlogs",
    "data_dir": "data dir of the embedded servers (used when no ORDERFLEET_* URL is set)",
    "output": "JSON file to write (default bench/results/<timestamp>.json)",
}


def parser() -> argparse.ArgumentParser:
    """The `python -m bench` argument parser; unset options keep None until resolved."""
    parse = argparse.ArgumentParser(
        prog="python -m bench",
        description="Raw Celery no-op ceiling vs orderfleet (per-event unbatched and batched, "
        "bulk, latency, producer), on the same servers.",
    )
    for field in fields(BenchConfig):
        flag = "--" + field.name.replace("_", "-")
        if field.name == "quick":
            parse.add_argument(flag, action="store_true", help=HELP[field.name])
            continue
        kind = _kind(field.type)
        parse.add_argument(flag, type=kind, default=None, help=_help(field.name))
    return parse


def _kind(annotation: object) -> type:
    text = str(annotation)
    if "Path" in text:
        return Path
    return int if text.startswith("int") else float


def _help(name: str) -> str:
    default = getattr(BenchConfig, name)
    quick = f", --quick: {QUICK[name]:g}" if name in QUICK else ""
    shown = "off" if default is None else default
    return f"{HELP[name]} (default {shown}{quick})"


def load_config(argv: list[str] | None = None) -> BenchConfig:
    """The config from argv: explicit options, else --quick's, else the defaults."""
    args = vars(parser().parse_args(argv))
    values = {**(QUICK if args["quick"] else {}), "quick": args["quick"]}
    values.update({k: v for k, v in args.items() if v is not None and k != "quick"})
    config = BenchConfig(**values)
    _check(config)
    return config


def _check(config: BenchConfig) -> None:
    """Refuse values that cannot give a measurement."""
    positive = ["workers", "runs", "duration", "bulk_duration", "rate_duration"]
    positive += ["noop_messages", "producer_events", "producers"]
    bad = [name for name in positive if getattr(config, name) <= 0]
    if not 0 < config.load <= 1:
        bad.append("load")
    if config.orders_in_store is not None and config.orders_in_store < SMALL_STORE:
        bad.append(f"orders_in_store (at least {SMALL_STORE:,})")
    if bad:
        raise SystemExit(f"python -m bench: invalid options: {', '.join(bad)}")
    if config.workers > config.partitions:
        raise SystemExit("python -m bench: --workers must not exceed --partitions")
