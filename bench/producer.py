"""`python -m bench.producer`: publish bench traffic with orderfleet's producer API, timed.

Two modes write {"published", "messages", "distinct", "seconds", "first_publish": {eventId: t}}
as JSON to --out, t being the wall-clock time (time.time()) just before the publish call:

  backlog  every --shard-th of --messages events, as fast as possible, --chunk events per
           publish_many call (bulk messages with --bulk, else one message per event);
  rate     --rate events/s for --duration seconds (open loop: late sends are not skipped),
           what is due published in one call per tick of at least 2 ms.

The traffic is worker/dev/workload.py's bench profile (`bench_traffic`), paced by
worker/dev/pacing.py.

A third, `speed`, publishes --messages events once and writes {"events", "messages",
"seconds"}: with publish_many (bulk or per event), or (--raw) as a pipelined send_task loop over
the same pre-built messages. It reads orderfleet's settings (ORDERFLEET_BROKER_URL, ...) from
the environment.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from orderfleet.worker.dev.pacing import Pacer
from orderfleet.worker.dev.workload import bench_traffic

BATCH = 1000
Publish = Callable[[list[dict[str, Any]]], int]


def publish_backlog(
    events: list[dict[str, Any]], publish: Publish, chunk: int = BATCH
) -> tuple[dict[str, float], int]:
    """Publish all events, `chunk` per call; first publish time per eventId, messages sent."""
    stamps: dict[str, float] = {}
    messages = 0
    for start in range(0, len(events), chunk):
        batch = events[start : start + chunk]
        _stamp(stamps, batch, time.time())
        messages += publish(batch)
    return stamps, messages


def publish_at_rate(
    events: list[dict[str, Any]], rate: float, publish: Publish, deadline: float
) -> tuple[dict[str, float], int, int]:
    """Publish event k at start + k/rate, until deadline: what is due in one call per pause of
    the pacer (worker/dev/pacing.py, at least its TICK). Open loop: no burst bound, so a late
    send is not skipped."""
    stamps: dict[str, float] = {}
    pacer = Pacer(rate, burst=None)
    start = time.monotonic()
    sent = messages = 0
    while sent < len(events) and time.monotonic() - start < deadline:
        batch = events[sent : sent + pacer.grant(len(events) - sent)]
        if batch:
            _stamp(stamps, batch, time.time())
            messages += publish(batch)
            sent += len(batch)
        pacer.pause()
    return stamps, sent, messages


def _stamp(stamps: dict[str, float], batch: list[dict[str, Any]], now: float) -> None:
    for event in batch:
        stamps.setdefault(event["eventId"], now)


def _arguments(argv: list[str] | None) -> argparse.Namespace:
    parse = argparse.ArgumentParser(prog="python -m bench.producer")
    parse.add_argument("mode", choices=["backlog", "rate", "speed"])
    parse.add_argument("--out", type=Path, required=True)
    parse.add_argument("--tag", required=True)
    parse.add_argument("--seed", type=int, default=7)
    parse.add_argument("--messages", type=int, default=0)
    parse.add_argument("--shard", type=int, default=0)
    parse.add_argument("--shards", type=int, default=1)
    parse.add_argument("--rate", type=float, default=0.0)
    parse.add_argument("--duration", type=float, default=0.0)
    parse.add_argument("--chunk", type=int, default=BATCH)
    parse.add_argument("--bulk", action="store_true")
    parse.add_argument("--raw", action="store_true")
    return parse.parse_args(argv)


def publisher(bulk: bool) -> Publish:
    """publish_many in bulk or per-event mode; it returns how many messages it sent."""
    from orderfleet.tasks.producer import publish_many

    def publish(events: list[dict[str, Any]]) -> int:
        return len({receipt.task_id for receipt in publish_many(events, bulk=bulk)})

    return publish


def raw_sends(events: list[dict[str, Any]]) -> list[tuple[str, str, dict[str, Any]]]:
    """(task, queue, kwargs) of each event, exactly as publish_many(bulk=False) sends it."""
    from orderfleet.models import parse_event
    from orderfleet.worker.routing import TASK_FOR_TYPE, partition_for, queue_name
    from orderfleet.worker.settings import load_settings

    partitions = load_settings().partitions
    sends = []
    for raw in events:
        event = parse_event(raw)
        queue = queue_name(partition_for(event.order_id, partitions))
        sends.append((TASK_FOR_TYPE[event.event_type], queue, {"event": event.to_wire()}))
    return sends


def raw_send_loop(sends: list[tuple[str, str, dict[str, Any]]]) -> int:
    """A pipelined send_task loop (kombu producer.batch, as bench/noop_app.enqueue)."""
    from orderfleet.worker.celery_app import app

    with app.producer_or_acquire() as producer:
        for start in range(0, len(sends), BATCH):
            with producer.batch(max_size=BATCH):
                for task, queue, kwargs in sends[start : start + BATCH]:
                    app.send_task(
                        task, kwargs=kwargs, queue=queue, routing_key=queue, producer=producer
                    )
    return len(sends)


def speed(args: argparse.Namespace) -> dict[str, Any]:
    """Publish --messages events in one call (or the raw loop); events, messages, seconds."""
    events = bench_traffic(args.messages, args.seed, args.tag)
    if args.raw:
        sends = raw_sends(events)
        began = time.perf_counter()
        messages = raw_send_loop(sends)
    else:
        publish = publisher(args.bulk)
        began = time.perf_counter()
        messages = publish(events)
    seconds = time.perf_counter() - began
    return {"events": len(events), "messages": messages, "seconds": seconds}


def main(argv: list[str] | None = None) -> int:
    """Generate the traffic, publish it in the chosen mode, write the publish times."""
    args = _arguments(argv)
    if args.mode == "speed":
        summary = speed(args)
        args.out.write_text(json.dumps(summary))
        print(json.dumps(summary), flush=True)
        return 0
    publish = publisher(args.bulk)
    if args.mode == "backlog":
        events = bench_traffic(args.messages, args.seed, args.tag)[args.shard :: args.shards]
        began = time.perf_counter()
        stamps, messages = publish_backlog(events, publish, args.chunk)
        published = len(events)
    else:
        events = bench_traffic(round(args.rate * args.duration), args.seed, args.tag)
        began = time.perf_counter()
        stamps, published, messages = publish_at_rate(
            events, args.rate, publish, args.duration * 1.5 + 5
        )
    seconds = time.perf_counter() - began
    summary = {"published": published, "messages": messages, "distinct": len(stamps)}
    summary["seconds"] = seconds
    args.out.write_text(json.dumps({**summary, "first_publish": stamps}))
    print(json.dumps(summary), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
