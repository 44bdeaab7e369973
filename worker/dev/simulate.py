"""`orderfleet simulate`: publish a seeded workload at a bounded rate from K producer processes.

The events come from worker/dev/workload.py (out of order, duplicated, a few invalid). Valid
events go through `tasks.publish_many`, invalid ones through `tasks.send_raw` (unvalidated, as
a careless producer sends them), paced by worker/dev/pacing.py. A share of the messages is held
back when its turn comes and published `late_delay` seconds later. The distinct valid events
published can be written as JSON Lines, so `orderfleet check` can compare the store with them
afterwards.

The workload is a function of the seed and the prefix: the generator is seeded with both, so
two runs with other prefixes never share an eventId (which would be an id conflict).
"""

from __future__ import annotations

import hashlib
import json
import time
from collections import deque
from collections.abc import Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from multiprocessing import get_context
from pathlib import Path
from random import Random
from typing import Any

from orderfleet.worker.dev.pacing import TICK, Pacer
from orderfleet.worker.dev.workload import Workload, generate

Wire = dict[str, Any]

CHUNK = 200  # the most events in one publish_many call
STARTUP_TIMEOUT = 120.0  # seconds producer processes may take to start
PUBLISH_RETRY = {"max_retries": 120, "interval_start": 0.1, "interval_step": 0.2, "interval_max": 1}


@dataclass(frozen=True)
class SimulateOptions:
    """What to simulate: the workload, how fast, from how many producers, how late."""

    orders: int = 1000
    rate: float = 0.0
    producers: int = 1
    duplicate_rate: float = 0.3
    invalid_rate: float = 0.0
    late_rate: float = 0.0
    late_delay: float = 5.0
    seed: int = 0
    prefix: str = "sim-"

    def check(self) -> None:
        """Raise ValueError naming the first option out of range."""
        if self.rate < 0 or self.late_delay < 0 or self.producers < 1:
            raise ValueError("rate and late delay must be >= 0, producers >= 1")
        if not 0 <= self.late_rate <= 1:
            raise ValueError(f"late rate must be between 0 and 1, not {self.late_rate}")
        if not self.prefix or any(c.isspace() for c in self.prefix):
            raise ValueError(f"prefix must be non-empty without whitespace, not {self.prefix!r}")


@dataclass(frozen=True)
class Send:
    """One message to send: an event, whether it is invalid, whether it is held back."""

    wire: Wire
    invalid: bool = False
    late: bool = False


@dataclass
class ProducerReport:
    """What one producer sent, when, and how often it had to re-send after a broker error."""

    sent: int = 0
    valid: int = 0
    invalid: int = 0
    late: int = 0
    publish_retries: int = 0
    started: float = 0.0
    finished: float = 0.0
    event_ids: list[str] = field(default_factory=list)
    error: str | None = None


@dataclass
class SimulationReport:
    """The whole run: the workload's sizes and what every producer sent."""

    orders: int
    distinct: int
    duplicates: int
    invalid_planned: int
    late_planned: int
    producers: int
    sent: int = 0
    valid_sent: int = 0
    invalid_sent: int = 0
    late_sent: int = 0
    publish_retries: int = 0
    seconds: float = 0.0
    published_distinct: int = 0
    errors: list[str] = field(default_factory=list)

    @property
    def rate(self) -> float:
        """Messages per second from the first send to the last."""
        return self.sent / self.seconds if self.seconds > 0 else 0.0

    def to_json(self) -> dict[str, Any]:
        """The report as a JSON object (with the measured rate)."""
        return {**asdict(self), "rate": round(self.rate, 1)}


# --------------------------------------------------------------------------- the plan


def workload_seed(seed: int, prefix: str) -> int:
    """The generator's seed: the user's seed and the prefix together."""
    digest = hashlib.sha256(f"{seed}\x1f{prefix}".encode()).digest()
    return int.from_bytes(digest[:8], "big")


def plan(options: SimulateOptions) -> tuple[Workload, list[Send]]:
    """The workload and its messages in arrival order, round(late_rate x valid) held back."""
    options.check()
    workload = generate(
        options.orders,
        seed=workload_seed(options.seed, options.prefix),
        duplicate_rate=options.duplicate_rate,
        invalid_rate=options.invalid_rate,
        prefix=options.prefix,
    )
    invalid_ids = {wire["eventId"] for wire in workload.invalid}
    sends = [Send(w, invalid=w.get("eventId") in invalid_ids) for w in workload.deliveries]
    valid_at = [n for n, send in enumerate(sends) if not send.invalid]
    rng = Random(workload_seed(options.seed, options.prefix) + 1)
    for n in rng.sample(valid_at, round(options.late_rate * len(valid_at))):
        sends[n] = replace(sends[n], late=True)
    return workload, sends


def shares(sends: Sequence[Send], producers: int) -> list[list[Send]]:
    """Each producer's share, dealt round-robin so every one sees every order."""
    return [list(sends[k::producers]) for k in range(producers)]


# --------------------------------------------------------------------------- the run


def run_simulation(options: SimulateOptions, out: Path | None = None) -> SimulationReport:
    """Plan, publish from every producer, write the distinct valid events published to `out`."""
    workload, sends = plan(options)
    parts = shares(sends, options.producers)
    rate = options.rate / options.producers
    if options.producers == 1:
        reports = [produce(parts[0], rate, options.late_delay)]
    else:
        reports = _in_processes(parts, rate, options.late_delay)
    report = _merge(options, workload, sends, reports)
    published = {eid for r in reports for eid in r.event_ids}
    distinct = _published_distinct(workload.distinct, published)
    report.published_distinct = len(distinct)
    if out is not None:
        write_events(out, distinct)
    return report


def _in_processes(parts: list[list[Send]], rate: float, late_delay: float) -> list[ProducerReport]:
    """Run one producer process per share; they start sending together."""
    context = get_context("spawn")  # no broker connection crosses a fork
    barrier = context.Barrier(len(parts))
    with ProcessPoolExecutor(
        len(parts), mp_context=context, initializer=_warm_up, initargs=(barrier,)
    ) as pool:
        futures = [pool.submit(produce, part, rate, late_delay) for part in parts]
        return [future.result() for future in futures]


def _warm_up(barrier: Any) -> None:
    """Import the producer API, then wait for the other producers (a fair common start)."""
    import orderfleet.tasks.producer  # noqa: F401

    barrier.wait(timeout=STARTUP_TIMEOUT)


def _merge(
    options: SimulateOptions, workload: Workload, sends: list[Send], reports: list[ProducerReport]
) -> SimulationReport:
    report = SimulationReport(
        orders=options.orders,
        distinct=len(workload.distinct),
        duplicates=workload.duplicates,
        invalid_planned=len(workload.invalid),
        late_planned=sum(1 for s in sends if s.late),
        producers=options.producers,
    )
    for r in reports:
        report.sent += r.sent
        report.valid_sent += r.valid
        report.invalid_sent += r.invalid
        report.late_sent += r.late
        report.publish_retries += r.publish_retries
        report.errors += [r.error] if r.error else []
    active = [r for r in reports if r.sent]
    if active:
        report.seconds = max(r.finished for r in active) - min(r.started for r in active)
    return report


def _published_distinct(distinct: list[Wire], published: set[str]) -> list[Wire]:
    """The distinct events whose (possibly derived) eventId was published."""
    from orderfleet.models import parse_event

    return [wire for wire in distinct if parse_event(wire).event_id in published]


def write_events(path: Path, events: Iterable[Wire]) -> None:
    """Write events as JSON Lines."""
    with path.open("w", encoding="utf-8") as handle:
        for wire in events:
            handle.write(json.dumps(wire, ensure_ascii=False) + "\n")


# --------------------------------------------------------------------------- one producer


class _Queue:
    """A producer's messages: the stream in arrival order and the held-back ones, by due time."""

    def __init__(self, sends: Iterable[Send], late_delay: float) -> None:
        self.stream = deque(sends)
        self.held: deque[tuple[float, Send]] = deque()
        self.late_delay = late_delay

    def __bool__(self) -> bool:
        return bool(self.stream or self.held)

    def available(self, now: float) -> int:
        """An upper bound of the messages that may go now."""
        return len(self.stream) + sum(1 for due, _ in self.held if due <= now)

    def next_due(self) -> float | None:
        return self.held[0][0] if self.held else None

    def take(self, count: int, now: float) -> list[Send]:
        """Up to `count` messages: due held-back ones first; late ones are held on their turn."""
        batch: list[Send] = []
        while len(batch) < count and self.held and self.held[0][0] <= now:
            batch.append(self.held.popleft()[1])
        while len(batch) < count and self.stream:
            send = self.stream.popleft()
            if send.late:
                self.held.append((now + self.late_delay, send))
            else:
                batch.append(send)
        return batch


def produce(sends: list[Send], rate: float, late_delay: float) -> ProducerReport:
    """Send one producer's share at `rate` messages a second (0: as fast as possible)."""
    report = ProducerReport()
    pacer, queue = Pacer(rate), _Queue(sends, late_delay)
    report.started = report.finished = time.monotonic()
    try:
        while queue:
            _step(queue, pacer, report)
    except Exception as exc:  # reported, and the events sent so far still written
        report.error = f"{type(exc).__name__}: {exc}"
    finally:
        _close_broker()
    return report


def _step(queue: _Queue, pacer: Pacer, report: ProducerReport) -> None:
    """Send one batch, or sleep until one may go."""
    now = time.monotonic()
    available = min(queue.available(now), CHUNK)
    if not available:
        time.sleep(max(TICK, (queue.next_due() or now) - now))
        return
    granted = pacer.grant(available)
    if not granted:
        pacer.pause()
        return
    batch = queue.take(granted, now)
    pacer.give_back(granted - len(batch))
    if batch:
        _send_batch(batch, report)
        report.finished = time.monotonic()
        report.sent += len(batch)
        report.late += sum(1 for send in batch if send.late)


def _send_batch(batch: list[Send], report: ProducerReport) -> None:
    """Valid events through publish_many, invalid ones as they are through send_raw."""
    from orderfleet.tasks.producer import publish_many, send_raw

    def retried(exc: Exception, attempt: int) -> None:
        report.publish_retries += 1

    valid = [s.wire for s in batch if not s.invalid]
    if valid:
        # One message per event, as the services it simulates send them.
        receipts = publish_many(valid, bulk=False, retry_policy=PUBLISH_RETRY, on_retry=retried)
        report.event_ids += [r.event_id for r in receipts]
        report.valid += len(valid)
    for send in batch:
        if send.invalid:
            send_raw(send.wire, retry_policy=PUBLISH_RETRY, on_retry=retried)
            report.invalid += 1


def _close_broker() -> None:
    from orderfleet.worker.celery_app import app

    app.close()
