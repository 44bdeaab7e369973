"""Dead letters for the operator commands: list, show, replay through validation, purge.

Each function takes what it talks to (a session factory, a Runtime, a send function) and returns
JSON-ready dicts or small records, so the CLI only formats.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from orderfleet.models import InvalidEvent, parse_event
from orderfleet.models.tables import DeadLetterRow
from orderfleet.models.wire import format_instant, loads
from orderfleet.worker.routing import TASK_FOR_TYPE
from orderfleet.worker.runtime import Runtime
from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session, sessionmaker


class NotFound(LookupError):
    """The dead letter asked for does not exist."""


@dataclass(frozen=True)
class Replayed:
    """A dead letter sent back through validation: which event, to which task and queue."""

    letter_id: int
    event_id: str
    order_id: str
    task_name: str
    queue: str


@dataclass(frozen=True)
class Refused:
    """A dead letter not replayed because its message is still invalid."""

    letter_id: int
    error: str


def list_dead_letters(
    sessions: sessionmaker[Session], reason: str | None = None, limit: int = 1000
) -> list[dict[str, Any]]:
    """Dead letters in arrival order (without their raw message), optionally of one reason."""
    stmt = select(DeadLetterRow).order_by(DeadLetterRow.id).limit(limit)
    if reason is not None:
        stmt = stmt.where(DeadLetterRow.reason == reason)
    with sessions() as session:
        return [_summary(row) for row in session.scalars(stmt)]


def dead_letter(sessions: sessionmaker[Session], letter_id: int) -> dict[str, Any] | None:
    """One dead letter with its raw message, or None."""
    with sessions() as session:
        row = session.get(DeadLetterRow, letter_id)
        return None if row is None else {**_summary(row), "raw": row.raw}


def _summary(row: DeadLetterRow) -> dict[str, Any]:
    replayed_at = row.replayed_at
    return {
        "id": row.id,
        "receivedAt": format_instant(row.received_at),
        "reason": row.reason,
        "error": row.error,
        "taskName": row.task_name,
        "orderId": row.order_id,
        "eventId": row.event_id,
        "replayedAt": None if replayed_at is None else format_instant(replayed_at),
    }


# How a replay is sent: tasks.producer.send_raw, given by the caller (the runtime does not
# import the tasks package; the entry points above both do).
SendRaw = Callable[[dict[str, Any], str], Any]


def replay_dead_letter(
    send: SendRaw, runtime: Runtime, letter_id: int, fixed_event: str | None = None
) -> Replayed:
    """Re-send a dead letter's message (or a fixed-up one); raises InvalidEvent if invalid."""
    with runtime.sessions() as session:
        row = session.get(DeadLetterRow, letter_id)
        if row is None:
            raise NotFound(f"dead letter {letter_id} not found")
        raw = row.raw
    return _replay(send, runtime, letter_id, raw if fixed_event is None else fixed_event)


def replay_reason(
    send: SendRaw, runtime: Runtime, reason: str, page_size: int = 200
) -> tuple[list[Replayed], list[Refused]]:
    """Re-send every unreplayed dead letter of a reason that exists now; invalid ones are kept."""
    replayed: list[Replayed] = []
    refused: list[Refused] = []
    for letter_id, raw in _unreplayed(runtime.sessions, reason, page_size):
        try:
            replayed.append(_replay(send, runtime, letter_id, raw))
        except InvalidEvent as exc:
            refused.append(Refused(letter_id, str(exc)))
    return replayed, refused


def _unreplayed(
    sessions: sessionmaker[Session], reason: str, page_size: int
) -> Iterator[tuple[int, str]]:
    """(id, raw) of unreplayed letters of a reason up to today's last id, in keyset pages."""
    with sessions() as session:
        last_id = session.scalar(select(func.max(DeadLetterRow.id))) or 0
    after = 0
    while True:
        stmt = (
            select(DeadLetterRow.id, DeadLetterRow.raw)
            .where(DeadLetterRow.reason == reason, DeadLetterRow.replayed_at.is_(None))
            .where(DeadLetterRow.id > after, DeadLetterRow.id <= last_id)
            .order_by(DeadLetterRow.id)
            .limit(page_size)
        )
        with sessions() as session:
            page = [(letter_id, raw) for letter_id, raw in session.execute(stmt)]
        yield from page
        if len(page) < page_size:
            return
        after = page[-1][0]


def _replay(send: SendRaw, runtime: Runtime, letter_id: int, text: str) -> Replayed:
    """Validate locally, send to the event type's task on the order's partition, mark replayed."""
    event = parse_event(text)
    sent = send(loads(text), TASK_FOR_TYPE[event.event_type])
    with runtime.sessions.begin() as session:
        stmt = update(DeadLetterRow).where(DeadLetterRow.id == letter_id)
        session.execute(stmt.values(replayed_at=runtime.now()))
    return Replayed(letter_id, event.event_id, event.order_id, sent.task_name, sent.queue)


def purge_dead_letters(
    sessions: sessionmaker[Session], before: datetime, reason: str | None = None
) -> int:
    """Delete dead letters received before an instant (optionally of one reason); how many."""
    stmt = delete(DeadLetterRow).where(DeadLetterRow.received_at < before)
    if reason is not None:
        stmt = stmt.where(DeadLetterRow.reason == reason)
    with sessions.begin() as session:
        return int(session.execute(stmt).rowcount or 0)
