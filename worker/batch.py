"""Applying a batch of received messages at once (docs/design.md §5, per event, batched).

A message is one event (`orderfleet.events.<type>`, keyword argument `event`) or many
(`orderfleet.events.batch`, keyword argument `events`). Every event is validated, locked,
deduplicated and dead-lettered on its own, exactly as if sent alone; the batch shares one lock
round trip, one transaction and one decision publish. An event that cannot end now (its order
is locked elsewhere, another writer changed the order, a server went away) is handed back to
retry, alone, without failing or re-applying the others. A message is ended only when all of
its events are committed (applied, duplicate or dead letter).
"""

from __future__ import annotations

import logging
import traceback
import uuid
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from celery import Celery
from orderfleet.models import InvalidEvent, parse_stored
from orderfleet.worker.failures import Remedy, handed_back, remedy, transient
from orderfleet.worker.locks import LockNotAcquired, OrderLocks
from orderfleet.worker.outbox import publish_after_commit
from orderfleet.worker.pipeline import letter_for
from orderfleet.worker.routing import BATCH_TASK, MAX_BATCH_BYTES, MAX_BATCH_EVENTS, TASK_FOR_TYPE
from orderfleet.worker.runtime import Runtime
from orderfleet.worker.service import Incoming, Outcome, apply_events
from orderfleet.worker.store import DeadLetter

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Received:
    """One message taken from a queue: its task, arguments, queue and body size."""

    task_name: str
    args: Any
    kwargs: Any
    queue: str | None = None
    size: int = 0


@dataclass
class MessageEnd:
    """What became of one message: its events by outcome, and the events left to retry."""

    counts: Counter[str] = field(default_factory=Counter)
    retry: list[Any] = field(default_factory=list)
    whole: bool = False  # retry the message as it came (nothing of it was committed)
    cause: BaseException | None = None
    orders: set[str] = field(default_factory=set)

    @property
    def ended(self) -> bool:
        return not (self.retry or self.whole)


@dataclass
class _Event:
    """A valid event of message `index`, with the raw object it came from."""

    index: int
    incoming: Incoming
    raw: Any

    @property
    def order_id(self) -> str:
        return self.incoming.event.order_id


@dataclass
class _Letter:
    """A dead letter for message `index` (or one event of it), and what it was made from."""

    index: int
    letter: DeadLetter
    raw: Any


@dataclass
class _Unpacked:
    events: list[_Event] = field(default_factory=list)
    letters: list[_Letter] = field(default_factory=list)

    def reject(self, index: int, reason: str, error: str, raw: Any, task: str | None) -> None:
        self.letters.append(_Letter(index, letter_for(reason, error, raw, task), raw))


@dataclass
class _Batch:
    """The messages being applied, what they hold, and what became of each so far."""

    app: Celery
    runtime: Runtime
    messages: Sequence[Received]
    unpacked: _Unpacked
    ends: list[MessageEnd]


def apply_batch(app: Celery, runtime: Runtime, messages: Sequence[Received]) -> list[MessageEnd]:
    """Apply every message's events in one transaction; what could not end comes back to retry."""
    batch = _Batch(app, runtime, messages, _unpack(messages), [MessageEnd() for _ in messages])
    settings = runtime.settings
    locks = OrderLocks(runtime.redis, prefix=settings.lock_prefix, lease=settings.lock_lease)
    token = uuid.uuid4().hex
    wanted = sorted({e.order_id for e in batch.unpacked.events})
    try:
        held = locks.acquire(wanted, token)
    except Exception as exc:
        if not transient(exc):
            raise
        return _all_to_retry(batch, exc)
    try:
        busy = LockNotAcquired(f"orders locked by another worker: {sorted(set(wanted) - held)}")
        _apply(batch, _hand_back(batch.unpacked.events, batch.ends, held, busy))
    finally:
        _release(locks, sorted(held), token)
    return batch.ends


def _release(locks: OrderLocks, held: list[str], token: str) -> None:
    try:
        locks.release(held, token)
    except Exception as exc:  # the leases run out on their own; the version fence holds
        log.warning("order locks not released (%s); their leases will run out", exc)


def _unpack(messages: Sequence[Received]) -> _Unpacked:
    """Every valid event, and a dead letter for every invalid message or event."""
    out = _Unpacked()
    for index, message in enumerate(messages):
        raws, problem = _events_of(message)
        if problem is not None:
            raw = [message.args, message.kwargs]
            out.reject(index, "invalid_message", problem, raw, message.task_name)
            continue
        for raw in raws:
            _take(out, index, message, raw)
    return out


def _events_of(message: Received) -> tuple[list[Any], str | None]:
    """The raw events a message carries, or why it carries none we may take."""
    args, kwargs = message.args, message.kwargs
    bulk = message.task_name == BATCH_TASK
    key = "events" if bulk else "event"
    if args or not isinstance(kwargs, dict) or set(kwargs) != {key}:
        what = f"a list of 1 to {MAX_BATCH_EVENTS} events" if bulk else "the event"
        return [], f"task arguments: expected exactly one keyword argument `{key}`, {what}"
    if not bulk:
        return [kwargs["event"]], None
    events = kwargs["events"]
    if not isinstance(events, list) or not 1 <= len(events) <= MAX_BATCH_EVENTS:
        size = len(events) if isinstance(events, list) else type(events).__name__
        return [], f"events: must be a list of 1 to {MAX_BATCH_EVENTS} events, got {size}"
    if message.size > MAX_BATCH_BYTES:
        return [], f"message of {message.size} bytes: a bulk message is at most 1 MiB"
    return events, None


def _take(out: _Unpacked, index: int, message: Received, raw: Any) -> None:
    """Validate one raw event: a valid one joins the batch, an invalid one is dead-lettered."""
    try:
        event, text = parse_stored(raw)
    except InvalidEvent as exc:
        out.reject(index, "invalid_event", str(exc), raw, message.task_name)
        return
    expected = TASK_FOR_TYPE[event.event_type]
    if message.task_name not in (expected, BATCH_TASK):
        error = f"eventType {event.event_type} must be sent to {expected}, not {message.task_name}"
        out.reject(index, "task_mismatch", error, raw, message.task_name)
        return
    stored = raw if isinstance(raw, dict) else None  # text is None unless raw is an object
    incoming = Incoming(event, stored, expected, message.queue, text)
    out.events.append(_Event(index, incoming, raw))


def _hand_back(
    events: list[_Event], ends: list[MessageEnd], keep: set[str], cause: BaseException
) -> list[_Event]:
    """The events of orders in `keep`; the others go back to their messages to retry."""
    kept = []
    for event in events:
        if event.order_id in keep:
            kept.append(event)
        else:
            _to_retry(ends[event.index], event.raw, cause)
    return kept


def _to_retry(end: MessageEnd, raw: Any, cause: BaseException, whole: bool = False) -> None:
    """Hand an event (or, `whole`, the message as it came) back to be retried."""
    if whole:
        end.whole = True
    else:
        end.retry.append(raw)
    end.cause = cause


def _all_to_retry(batch: _Batch, cause: BaseException) -> list[MessageEnd]:
    """Nothing was committed: every message is retried whole."""
    for end in batch.ends:
        end.retry, end.whole, end.cause = [], True, cause
        end.counts.clear()
        end.orders.clear()
    return batch.ends


def _apply(batch: _Batch, ready: list[_Event]) -> None:
    """Commit the batch; a version conflict hands its orders back and the rest is tried again."""
    while True:
        try:
            outcomes = _commit(batch, ready)
        except Exception as exc:
            what = remedy(exc)
            if what is Remedy.HAND_BACK:
                keep = {e.order_id for e in ready} - handed_back(exc)
                ready = _hand_back(ready, batch.ends, keep, exc)
                continue
            if what is Remedy.RETRY_ALL:
                _all_to_retry(batch, exc)
            else:
                log.exception("unexpected failure applying a batch: isolating its events")
                _isolate(batch, ready)
            return
        _count(batch.unpacked.letters, ready, outcomes, batch.ends)
        _publish(batch, outcomes)
        return


def _commit(batch: _Batch, ready: list[_Event]) -> list[Outcome]:
    pairs = zip(batch.messages, batch.ends, strict=True)
    runtime = batch.runtime
    return apply_events(
        runtime.unit_of_work(),
        [e.incoming for e in ready],
        runtime.now(),
        letters=[x.letter for x in batch.unpacked.letters],
        ended=[message.queue for message, end in pairs if end.ended],
    )


def _count(
    letters: list[_Letter],
    ready: list[_Event],
    outcomes: list[Outcome],
    ends: list[MessageEnd],
) -> None:
    for x in letters:
        ends[x.index].counts[f"dead_letter:{x.letter.reason}"] += 1
    for event, outcome in zip(ready, outcomes, strict=True):
        _tally(ends[event.index], event, outcome)


def _tally(end: MessageEnd, event: _Event, outcome: Outcome) -> None:
    end.orders.add(event.order_id)
    end.counts[outcome.status if outcome.reason is None else f"dead_letter:{outcome.reason}"] += 1
    if outcome.decision is not None:
        end.counts[f"decision:{outcome.decision.outcome}"] += 1


def _publish(batch: _Batch, outcomes: Iterable[Outcome]) -> None:
    """Publish the decisions just committed; a failure here is the outbox relay's to mend
    (the messages' outcomes are committed: retrying them would apply nothing new)."""
    decisions = [o.decision for o in outcomes if o.decision is not None]
    if not decisions:
        return
    try:
        publish_after_commit(batch.app, batch.runtime, decisions)
    except Exception as exc:
        log.warning("%d decisions left to the outbox relay: %s", len(decisions), exc)


def _isolate(batch: _Batch, ready: list[_Event]) -> None:
    """Apply the events one by one; one that raises unexpectedly is dead-lettered alone.

    A message's end is counted in the transaction of its last event, if all of it ended.
    """
    for index, message in enumerate(batch.messages):
        steps = [
            (x.raw, (), (x.letter,), x.letter.reason == "invalid_message")
            for x in batch.unpacked.letters
            if x.index == index
        ]
        steps += [(e.raw, (e,), (), False) for e in ready if e.index == index]
        end = batch.ends[index]
        for number, (raw, events, letters, whole) in enumerate(steps, 1):
            queue = [message.queue] if number == len(steps) and end.ended else []
            _one(batch, end, raw, events, letters, whole, queue)


def _one(
    batch: _Batch,
    end: MessageEnd,
    raw: Any,
    events: Sequence[_Event] = (),
    letters: Sequence[DeadLetter] = (),
    whole: bool = False,
    ended: Sequence[str | None] = (),
) -> None:
    """One event or dead letter in its own transaction; `raw` goes back to retry if it fails."""
    runtime = batch.runtime
    try:
        outcomes = apply_events(
            runtime.unit_of_work(),
            [e.incoming for e in events],
            runtime.now(),
            letters=letters,
            ended=ended,
        )
    except Exception as exc:
        # Retried alone: a failure of the servers, not the event's, or a dead letter that
        # cannot be written (the event is kept).
        if not events or remedy(exc, alone=True) is not Remedy.DEAD_LETTER:
            _to_retry(end, raw, exc, whole)
            return
        log.exception("unexpected failure applying one event: dead-lettered")
        error = "".join(traceback.format_exception_only(exc)).strip()
        letter = letter_for("internal_error", error, raw, events[0].incoming.task_name)
        _one(batch, end, raw, letters=[letter], ended=ended)
        return
    for letter in letters:
        end.counts[f"dead_letter:{letter.reason}"] += 1
    for event, outcome in zip(events, outcomes, strict=True):
        _tally(end, event, outcome)
    _publish(batch, outcomes)
