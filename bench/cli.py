"""`python -m bench`: parse options, run, print the table, write the JSON; clean up always."""

from __future__ import annotations

import signal
import sys
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Annotated

import typer
from rich.console import Console

from bench.config import (
    AMQP_URL_ENV,
    DEFAULT_AMQP_URL,
    DEFAULT_DATA_DIR,
    RESULTS_DIR,
    BenchConfig,
    Knob,
    check,
)

WIDTH = 120

cli = typer.Typer(add_completion=False, pretty_exceptions_enable=False)


@cli.command(
    help="Raw Celery no-op ceiling vs orderfleet (per-event unbatched and batched, bulk, "
    "latency, producer), on the same servers; on Redis and on RabbitMQ."
)
def bench(
    ctx: typer.Context,
    workers: Annotated[int, Knob("worker processes for every measurement")] = 2,
    runs: Annotated[int, Knob("runs of each measurement; the table shows medians", quick=1)] = 3,
    duration: Annotated[
        float, Knob("seconds of each per-event drain window (b1, b2, e)", quick=5.0)
    ] = 30.0,
    warmup: Annotated[
        float, Knob("seconds between all workers ready and the start of a drain window", quick=0.5)
    ] = 1.0,
    bulk_duration: Annotated[
        float, Knob("seconds of the bulk-message drain window (b3)", quick=3.0)
    ] = 10.0,
    load: Annotated[
        float,
        Knob("offered load of (c), as a share of the same run's batched per-event rate (b2)"),
    ] = 0.5,
    rate_duration: Annotated[
        float, Knob("seconds of publishing at the offered load in (c)", quick=5.0)
    ] = 20.0,
    latency_warmup: Annotated[
        float, Knob("first seconds of (c) left out of its percentiles", quick=0.5)
    ] = 2.0,
    noop_messages: Annotated[
        int, Knob("pre-enqueued messages drained by the raw no-op workers (a)", quick=3_000)
    ] = 20_000,
    producer_events: Annotated[
        int, Knob("events published from one process by each producer row (d)", quick=10_000)
    ] = 100_000,
    orders_in_store: Annotated[
        int | None,
        Knob("also measure (e): the batched drain with 10,000 and with N orders pre-filled by SQL"),
    ] = None,
    producers: Annotated[int, Knob("producer processes that enqueue the backlogs of (b)")] = 2,
    partitions: Annotated[
        int, Knob("orderfleet partitions (ORDERFLEET_PARTITIONS of the fleet)")
    ] = 16,
    seed: Annotated[int, Knob("seed of the generated traffic")] = 7,
    wait_quiet: Annotated[
        float, Knob("seconds to wait before each measurement for the CPU to be quiet", quick=0.0)
    ] = 60.0,
    brokers: Annotated[
        str | None,
        Knob(
            "brokers to measure, comma-separated: redis (a-d), rabbitmq (a, b2, b3 in a virtual "
            "host of the run's own); default both, the RabbitMQ columns skipped with the reason "
            "when it is unreachable (a broker named here must be reachable)"
        ),
    ] = None,
    amqp_url: Annotated[
        str | None,
        Knob(
            f"RabbitMQ of the RabbitMQ columns, loopback only (default ${AMQP_URL_ENV}, else "
            f"{DEFAULT_AMQP_URL})"
        ),
    ] = None,
    quick: Annotated[
        bool,
        typer.Option(
            "--quick",
            is_eager=True,
            help="short smoke run: 1 run, seconds-long windows, small backlogs",
        ),
    ] = False,
    data_dir: Annotated[
        Path, Knob("data dir of the embedded servers (used when no ORDERFLEET_* URL is set)")
    ] = DEFAULT_DATA_DIR,
    output: Annotated[
        Path | None, Knob("JSON file to write (default bench/results/<timestamp>.json)")
    ] = None,
) -> None:
    """Run the benchmarks; exit 1 when a measurement failed, 130 when interrupted."""
    config = BenchConfig(**ctx.params)
    check(config)
    raise typer.Exit(measure(config, sys.argv[1:]))


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def output_path(config: BenchConfig) -> Path:
    """Where the JSON goes: --output, else bench/results/<UTC timestamp>.json."""
    if config.output is not None:
        return config.output
    return RESULTS_DIR / f"{datetime.now(UTC):%Y%m%dT%H%M%SZ}.json"


def measure(config: BenchConfig, argv: list[str]) -> int:
    """Run, print and write the result; 0 on success, 1 when a measurement failed, 130 on ^C."""
    console = Console(width=None if sys.stdout.isatty() else WIDTH)
    signal.signal(signal.SIGTERM, _interrupt)
    from bench.report import print_report, write_json
    from bench.runner import run
    from bench.servers import BenchError

    try:
        result = run(config, argv, console)
    except KeyboardInterrupt:
        console.print("bench: interrupted; processes and servers stopped", style="red")
        return 130
    except (BenchError, RuntimeError) as exc:
        console.print(f"bench: {exc}", style="red", highlight=False)
        return 1
    path = write_json(result, output_path(config))
    print_report(result, path, console)
    return 0


def main() -> None:
    """The `python -m bench` command line; exits with the run's code."""
    cli(prog_name="python -m bench")
