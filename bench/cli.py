"""`python -m bench`: parse options, run, print the table, write the JSON; clean up always."""

from __future__ import annotations

import signal
import sys
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType

from rich.console import Console

from bench.config import RESULTS_DIR, BenchConfig, load_config

WIDTH = 120


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def output_path(config: BenchConfig) -> Path:
    """Where the JSON goes: --output, else bench/results/<UTC timestamp>.json."""
    if config.output is not None:
        return config.output
    return RESULTS_DIR / f"{datetime.now(UTC):%Y%m%dT%H%M%SZ}.json"


def main(argv: list[str] | None = None) -> int:
    """Run the benchmarks; 0 on success, 1 when a measurement failed, 130 when interrupted."""
    argv = sys.argv[1:] if argv is None else argv
    config = load_config(argv)
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
