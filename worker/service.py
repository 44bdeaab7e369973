"""The apply pipeline's core (docs/design.md §5 step 4): plain functions over a unit of work."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from orderfleet.models import (
    EmittedDecision,
    Event,
    OrderState,
    content_hash,
    converged_view,
    decide,
    decision_holds,
    next_decision,
    parse_event,
    project,
)
from orderfleet.models.wire import dumps
from orderfleet.worker.store import DeadLetter, EventLog, UnitOfWork, stream_orders
from sqlalchemy.orm import Session, sessionmaker

Status = Literal["applied", "duplicate", "dead_lettered", "recorded"]


@dataclass(frozen=True)
class Outcome:
    """How one event, decision delivery or message ended, as committed.

    applied (with the decision it emitted, if any), duplicate, dead_lettered (with the reason),
    or recorded (a decision delivered to the default decision tasks).
    """

    status: Status
    reason: str | None = None
    decision: EmittedDecision | None = None


@dataclass(frozen=True)
class Incoming:
    """A validated event and the object it came from, stored as received (None: an event not
    received as an object; its wire form is stored), with that object's JSON text when known."""

    event: Event
    raw: dict[str, Any] | None = None
    task_name: str | None = None
    queue: str | None = None  # where the message came from, for the message ledger
    raw_text: str | None = None  # dumps(raw), from parse_stored

    @property
    def raw_object(self) -> dict[str, Any]:
        """What the event log stores for this event (docs/design.md §1, unknown fields kept)."""
        return self.event.to_wire() if self.raw is None else self.raw

    @property
    def stored_text(self) -> str:
        """`raw_object` as the JSON the event log stores."""
        return self.raw_text if self.raw_text is not None else dumps(self.raw_object)


def apply_event(
    uow: UnitOfWork,
    event: Event,
    now: datetime,
    raw: dict[str, Any] | None = None,
    task_name: str | None = None,
    queue: str | None = None,
) -> Outcome:
    """Apply one event: a batch of one."""
    return apply_events(uow, [Incoming(event, raw, task_name, queue)], now)[0]


def apply_events(
    uow: UnitOfWork,
    batch: Sequence[Incoming],
    now: datetime,
    *,
    letters: Sequence[DeadLetter] = (),
    ended: Iterable[str | None] | None = None,
) -> list[Outcome]:
    """Apply many events of many orders in one transaction, with the batch's dead letters.

    `ended` names the queue of every message this commit ends (default: one per event).
    Returns the outcome of every event, in order. Raises VersionConflict, naming the orders
    another writer changed, to retry.
    """
    with uow:
        firsts = _first_occurrences(batch)
        hashes = {eid: content_hash(item.event) for eid, item in firsts.items()}
        new_ids, stored = uow.events.record(
            [i.event for i in firsts.values()],
            [i.stored_text for i in firsts.values()],
            list(hashes.values()),
            now,
        )
        logged = _logged_hashes(uow.events, hashes, new_ids, stored)
        outcomes = [_classify(item, firsts, hashes, new_ids, logged) for item in batch]
        decided = _fold(uow, [firsts[eid] for eid in firsts if eid in new_ids], now)
        _record_rejects(uow, batch, outcomes, now)
        for letter in letters:
            uow.dead_letters.add(letter, now)
        uow.ledger.count_ends([item.queue for item in batch] if ended is None else ended)
        uow.commit()
    return [_with_decision(i, o, decided) for i, o in zip(batch, outcomes, strict=True)]


def _first_occurrences(batch: Sequence[Incoming]) -> dict[str, Incoming]:
    firsts: dict[str, Incoming] = {}
    for item in batch:
        firsts.setdefault(item.event.event_id, item)
    return firsts


def _logged_hashes(
    log: EventLog, hashes: dict[str, str], new_ids: set[str], stored: dict[str, str]
) -> dict[str, str]:
    """The content hash the log holds for every event id of the batch."""
    unseen = [eid for eid in hashes if eid not in new_ids and eid not in stored]
    logged = {**stored, **(log.hashes(unseen) if unseen else {})}
    logged.update({eid: hashes[eid] for eid in new_ids})
    return logged


def _classify(
    item: Incoming,
    firsts: dict[str, Incoming],
    hashes: dict[str, str],
    new_ids: set[str],
    logged: dict[str, str],
) -> Outcome:
    event = item.event
    first = firsts[event.event_id] is item
    if first and event.event_id in new_ids:
        return Outcome("applied")
    digest = hashes[event.event_id] if first else content_hash(event)
    if logged.get(event.event_id) == digest:
        return Outcome("duplicate")
    return Outcome("dead_lettered", reason="event_id_conflict")


def _fold(uow: UnitOfWork, fresh: list[Incoming], now: datetime) -> dict[str, EmittedDecision]:
    """Fold new events into their orders and save them; returns decisions emitted, by event."""
    states = uow.orders.get_many({item.event.order_id for item in fresh})
    decided: dict[str, EmittedDecision] = {}
    for item in fresh:
        event = item.event
        before = states.get(event.order_id) or OrderState(order_id=event.order_id)
        states[event.order_id] = after = before.apply(event)
        if after.decision is not None and after.decision != before.decision:
            uow.outbox.add(after.decision, now)
            decided[event.event_id] = after.decision
    for state in states.values():
        uow.orders.save(state, now)
    return decided


def _record_rejects(
    uow: UnitOfWork, batch: Sequence[Incoming], outcomes: list[Outcome], now: datetime
) -> None:
    ended = list(zip(batch, outcomes, strict=True))
    uow.events.count_redelivery(i.event.event_id for i, o in ended if o.status == "duplicate")
    for item, outcome in ended:
        if outcome.status == "dead_lettered":
            uow.dead_letters.add(_conflict_letter(item), now)


def _conflict_letter(item: Incoming) -> DeadLetter:
    return DeadLetter(
        reason="event_id_conflict",
        error=f"eventId {item.event.event_id!r} was already applied with different content",
        raw=dumps(item.raw_object),
        task_name=item.task_name,
        order_id=item.event.order_id,
        event_id=item.event.event_id,
    )


def _with_decision(
    item: Incoming, outcome: Outcome, decided: dict[str, EmittedDecision]
) -> Outcome:
    decision = decided.get(item.event.event_id) if outcome.status == "applied" else None
    return outcome if decision is None else Outcome(outcome.status, decision=decision)


def events_from_log(raws: Iterable[dict[str, Any]]) -> list[Event]:
    return [parse_event(raw) for raw in raws]


def rebuild(uow: UnitOfWork, order_id: str, now: datetime) -> OrderState | None:
    """Recompute an order from its log; the decision stream goes on (a correction if needed)."""
    with uow:
        stored = uow.orders.get(order_id)
        if stored is None:
            return None
        rebuilt = project(order_id, events_from_log(uow.events.raw_events(order_id)))
        state = rebuilt.model_copy(update={"decision": stored.decision, "version": stored.version})
        emitted = next_decision(order_id, stored.decision, decide(state))
        if emitted is not None:
            state = state.model_copy(update={"decision": emitted})
            uow.outbox.add(emitted, now)
        uow.orders.save(state, now)
        uow.commit()
    return state


@dataclass(frozen=True)
class Divergence:
    """An order whose stored state is not what its log says."""

    order_id: str
    fields: tuple[str, ...]


def divergence(stored: OrderState, events: Iterable[Event]) -> Divergence | None:
    """Compare a stored order with the projection of its logged events."""
    expected = converged_view(project(stored.order_id, events).to_document())
    actual = converged_view(stored.to_document())
    fields = [k for k in expected if expected[k] != actual.get(k)]
    if not decision_holds(stored):
        fields.append("decision")
    return Divergence(stored.order_id, tuple(fields)) if fields else None


def verify(sessions: sessionmaker[Session], page_size: int = 500) -> Iterator[Divergence]:
    """Every order whose stored state differs from its log (streaming, bounded memory)."""
    page: list[OrderState] = []
    for state in stream_orders(sessions, page_size):
        page.append(state)
        if len(page) == page_size:
            yield from _verify_page(sessions, page)
            page = []
    yield from _verify_page(sessions, page)


def _verify_page(sessions: sessionmaker[Session], page: list[OrderState]) -> Iterator[Divergence]:
    if not page:
        return
    with sessions() as session:
        raws = EventLog(session).raw_events_of([s.order_id for s in page])
    for state in page:
        found = divergence(state, events_from_log(raws[state.order_id]))
        if found is not None:
            yield found
