"""What one bench run measures, from the command line; `--quick` shortens everything."""

from __future__ import annotations

import argparse
from dataclasses import dataclass, fields
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
DEFAULT_DATA_DIR = BENCH_DIR / ".data"
RESULTS_DIR = BENCH_DIR / "results"


@dataclass(frozen=True)
class BenchConfig:
    """Every knob of a bench run; the defaults are `make bench`'s."""

    workers: int = 2
    runs: int = 3
    duration: float = 30.0
    warmup: float = 1.0
    rate: float = 300.0
    rate_duration: float = 20.0
    latency_warmup: float = 2.0
    max_load: float = 0.6
    noop_messages: int = 20_000
    pilot_messages: int = 3_000
    pilot_duration: float = 3.0
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
    "rate_duration": 5.0,
    "latency_warmup": 0.5,
    "noop_messages": 3_000,
    "pilot_messages": 1_500,
    "pilot_duration": 2.0,
    "wait_quiet": 0.0,
}

HELP = {
    "workers": "worker processes for every measurement",
    "runs": "runs of each measurement; the table shows medians",
    "duration": "seconds of the orderfleet throughput window (b)",
    "warmup": "seconds between all workers ready and the start of window (b)",
    "rate": "offered load of (c) in events/s (capped at --max-load x measured capacity)",
    "rate_duration": "seconds of publishing at --rate in (c)",
    "latency_warmup": "first seconds of (c) left out of its percentiles",
    "max_load": "largest share of the measured capacity (b) that (c) offers",
    "noop_messages": "pre-enqueued messages drained by the raw no-op workers (a)",
    "pilot_messages": "backlog of the pilot that sizes the first backlog of (b)",
    "pilot_duration": "seconds of the pilot window",
    "producers": "producer processes that enqueue the backlog of (b)",
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
        description="Raw Celery no-op ceiling vs orderfleet end to end, on the same servers.",
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
    return int if text == "int" else float


def _help(name: str) -> str:
    default = getattr(BenchConfig, name)
    quick = f", --quick: {QUICK[name]:g}" if name in QUICK else ""
    return f"{HELP[name]} (default {default}{quick})"


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
    positive = ["workers", "runs", "duration", "rate", "rate_duration", "noop_messages"]
    bad = [name for name in positive if getattr(config, name) <= 0]
    if bad or not 0 < config.max_load <= 1 or config.producers < 1:
        raise SystemExit(f"python -m bench: invalid options: {', '.join(bad) or 'max_load'}")
    if config.workers > config.partitions:
        raise SystemExit("python -m bench: --workers must not exceed --partitions")
