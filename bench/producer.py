"""`python -m bench.producer`: publish bench traffic with orderfleet's producer API, timed.

Two modes, both writing {"published", "distinct", "seconds", "first_publish": {eventId: t}}
as JSON to --out, t being the wall-clock time (time.time()) just before the publish call:

  backlog  every --shard-th of --messages events, as fast as possible in pipelined batches;
  rate     --rate events/s for --duration seconds (open loop: late sends are not skipped).

It reads orderfleet's settings (ORDERFLEET_BROKER_URL, ...) from the environment.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.traffic import traffic

BATCH = 1000
Publish = Callable[[list[dict[str, Any]]], object]


def publish_backlog(events: list[dict[str, Any]], publish: Publish) -> tuple[dict[str, float], int]:
    """Publish all events in pipelined batches; first publish time per eventId, and the count."""
    stamps: dict[str, float] = {}
    for start in range(0, len(events), BATCH):
        batch = events[start : start + BATCH]
        _stamp(stamps, batch, time.time())
        publish(batch)
    return stamps, len(events)


def publish_at_rate(
    events: list[dict[str, Any]], rate: float, publish: Publish, deadline: float
) -> tuple[dict[str, float], int]:
    """Publish event k at start + k/rate (catching up in one batch when late), until deadline."""
    stamps: dict[str, float] = {}
    start = time.monotonic()
    sent = 0
    while sent < len(events) and time.monotonic() - start < deadline:
        due = min(len(events), math.floor((time.monotonic() - start) * rate) + 1)
        if due <= sent:
            time.sleep(min(0.05, max(0.0, start + sent / rate - time.monotonic())))
            continue
        batch = events[sent:due]
        _stamp(stamps, batch, time.time())
        publish(batch)
        sent = due
    return stamps, sent


def _stamp(stamps: dict[str, float], batch: list[dict[str, Any]], now: float) -> None:
    for event in batch:
        stamps.setdefault(event["eventId"], now)


def _arguments(argv: list[str] | None) -> argparse.Namespace:
    parse = argparse.ArgumentParser(prog="python -m bench.producer")
    parse.add_argument("mode", choices=["backlog", "rate"])
    parse.add_argument("--out", type=Path, required=True)
    parse.add_argument("--tag", required=True)
    parse.add_argument("--seed", type=int, default=7)
    parse.add_argument("--messages", type=int, default=0)
    parse.add_argument("--shard", type=int, default=0)
    parse.add_argument("--shards", type=int, default=1)
    parse.add_argument("--rate", type=float, default=0.0)
    parse.add_argument("--duration", type=float, default=0.0)
    return parse.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Generate the traffic, publish it in the chosen mode, write the publish times."""
    from orderfleet.tasks.producer import publish_many

    args = _arguments(argv)
    if args.mode == "backlog":
        events = traffic(args.messages, args.seed, args.tag)[args.shard :: args.shards]
        began = time.perf_counter()
        stamps, published = publish_backlog(events, publish_many)
    else:
        events = traffic(round(args.rate * args.duration), args.seed, args.tag)
        began = time.perf_counter()
        stamps, published = publish_at_rate(
            events, args.rate, publish_many, args.duration * 1.5 + 5
        )
    seconds = time.perf_counter() - began
    summary = {"published": published, "distinct": len(stamps), "seconds": seconds}
    args.out.write_text(json.dumps({**summary, "first_publish": stamps}))
    print(json.dumps(summary), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
