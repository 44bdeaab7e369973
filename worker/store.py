"""The unit of work and repositories over PostgreSQL (cosmicpython style)."""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from orderfleet.models import EmittedDecision, Event, OrderState, content_of
from orderfleet.models.tables import (
    DeadLetterRow,
    DecisionDeliveryRow,
    EventRow,
    LedgerRow,
    OrderRow,
    OutboxRow,
)
from sqlalchemy import func, select, text, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.orm.exc import StaleDataError


class VersionConflict(Exception):
    """Another writer changed the order first; the caller retries."""


@dataclass(frozen=True)
class DeadLetter:
    """A message that cannot be applied, with a reason naming why."""

    reason: str
    error: str
    raw: str
    task_name: str | None = None
    order_id: str | None = None
    event_id: str | None = None


def content_hash(event: Event) -> str:
    return hashlib.sha256(content_of(event).encode("utf-8")).hexdigest()


class EventLog:
    """Records distinct events; tells new ones from re-deliveries and id conflicts."""

    def __init__(self, session: Session) -> None:
        self.session = session

    def record(
        self, events: Sequence[Event], raws: Sequence[Any], hashes: Sequence[str], now: datetime
    ) -> set[str]:
        """Insert the events not yet logged (with their content hashes); returns the new ids."""
        rows = [_event_row(*row, now) for row in zip(events, raws, hashes, strict=True)]
        if not rows:
            return set()
        table = EventRow.__table__
        stmt = insert(table).on_conflict_do_nothing(index_elements=["event_id"])
        # executemany with RETURNING: one cached statement, batched by insertmanyvalues.
        result = self.session.execute(stmt.returning(table.c.event_id), rows)
        return set(result.scalars())

    def hashes(self, event_ids: Iterable[str]) -> dict[str, str]:
        stmt = select(EventRow.event_id, EventRow.content_hash).where(
            EventRow.event_id.in_(list(event_ids))
        )
        return {event_id: digest for event_id, digest in self.session.execute(stmt)}

    def count_redelivery(self, event_ids: Iterable[str]) -> None:
        ids = list(event_ids)
        if ids:
            stmt = update(EventRow).where(EventRow.event_id.in_(ids))
            self.session.execute(stmt.values(deliveries=EventRow.deliveries + 1))

    def raw_events(self, order_id: str) -> list[dict[str, Any]]:
        stmt = select(EventRow.raw).where(EventRow.order_id == order_id)
        return list(self.session.scalars(stmt))

    def raw_events_of(self, order_ids: Sequence[str]) -> dict[str, list[dict[str, Any]]]:
        stmt = select(EventRow.order_id, EventRow.raw).where(EventRow.order_id.in_(order_ids))
        found: dict[str, list[dict[str, Any]]] = {order_id: [] for order_id in order_ids}
        for order_id, raw in self.session.execute(stmt):
            found[order_id].append(raw)
        return found


def _event_row(event: Event, raw: Any, digest: str, now: datetime) -> dict[str, Any]:
    return {
        "event_id": event.event_id,
        "order_id": event.order_id,
        "event_type": event.event_type,
        "event_at": event.timestamp,
        "raw": raw if isinstance(raw, dict) else event.to_wire(),
        "content_hash": digest,
        "received_at": now,
        "applied_at": now,
    }


class OrderRepository:
    """Loads and saves order states; the row's version fences concurrent writers."""

    def __init__(self, session: Session) -> None:
        self.session = session
        self._rows: dict[str, OrderRow] = {}

    def get_many(self, order_ids: Iterable[str]) -> dict[str, OrderState]:
        ids = sorted(set(order_ids) - set(self._rows))
        if ids:
            rows = self.session.scalars(select(OrderRow).where(OrderRow.order_id.in_(ids)))
            self._rows.update({row.order_id: row for row in rows})
        return {oid: _state(self._rows[oid]) for oid in order_ids if oid in self._rows}

    def get(self, order_id: str) -> OrderState | None:
        return self.get_many([order_id]).get(order_id)

    def save(self, state: OrderState, now: datetime) -> None:
        row = self._rows.get(state.order_id)
        if row is None:
            row = OrderRow(order_id=state.order_id, created_at=now)
            self.session.add(row)
            self._rows[state.order_id] = row
        _fill(row, state, now)

    def page(self, after: str | None, limit: int) -> list[OrderState]:
        """Orders in id order after `after` (keyset paging, bounded memory)."""
        stmt = select(OrderRow).order_by(OrderRow.order_id).limit(limit)
        if after is not None:
            stmt = stmt.where(OrderRow.order_id > after)
        return [_state(row) for row in self.session.scalars(stmt)]

    def count(self) -> int:
        return int(self.session.scalar(select(func.count()).select_from(OrderRow)) or 0)


def _state(row: OrderRow) -> OrderState:
    return OrderState.from_document({**row.document, "version": row.version})


def _fill(row: OrderRow, state: OrderState, now: datetime) -> None:
    document = state.to_document()
    document.pop("version")
    row.status = state.status
    row.completeness = state.completeness
    row.event_count = state.event_count
    row.decision_seq = state.decision.seq if state.decision else 0
    row.last_event_at = state.last_event_at
    row.document = document
    row.updated_at = now


class Outbox:
    """Decisions waiting to be published (the transactional outbox)."""

    def __init__(self, session: Session) -> None:
        self.session = session

    def add(self, decision: EmittedDecision, now: datetime) -> None:
        self.session.add(
            OutboxRow(
                decision_id=decision.decision_id,
                order_id=decision.order_id,
                seq=decision.seq,
                outcome=decision.outcome,
                reason=decision.reason,
                supersedes=decision.supersedes,
                payload=decision_payload(decision),
                created_at=now,
            )
        )

    def holds(self, decision_id: str) -> bool:
        """Whether this decision was emitted by the fleet (its outbox row exists)."""
        found = select(OutboxRow.decision_id).where(OutboxRow.decision_id == decision_id)
        return self.session.scalar(found) is not None

    def unpublished(self, older_than: datetime, limit: int) -> list[OutboxRow]:
        stmt = (
            select(OutboxRow)
            .where(OutboxRow.published_at.is_(None), OutboxRow.created_at <= older_than)
            .order_by(OutboxRow.created_at)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
        return list(self.session.scalars(stmt))

    def mark_published(self, decision_ids: Iterable[str], now: datetime) -> None:
        ids = list(decision_ids)
        if ids:
            stmt = update(OutboxRow).where(OutboxRow.decision_id.in_(ids))
            self.session.execute(stmt.values(published_at=now))


def decision_payload(decision: EmittedDecision) -> dict[str, Any]:
    """The keyword argument `decision` of the decision tasks."""
    return {"orderId": decision.order_id, **decision.to_document()}


class DeadLetters:
    """Messages that could not be applied."""

    def __init__(self, session: Session) -> None:
        self.session = session

    def add(self, letter: DeadLetter, now: datetime) -> None:
        self.session.add(
            DeadLetterRow(
                received_at=now,
                reason=letter.reason,
                error=storable_text(letter.error[:10_000]),
                raw=storable_text(_capped(letter.raw)),
                task_name=letter.task_name,
                order_id=_key_text(letter.order_id),
                event_id=_key_text(letter.event_id),
            )
        )


MAX_DEAD_LETTER_RAW = 256 * 1024


def storable_text(text: str) -> str:
    """Text PostgreSQL accepts: lone surrogates escaped, NUL characters spelled out."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8").replace("\x00", "\\u0000")


def _capped(text: str) -> str:
    if len(text) <= MAX_DEAD_LETTER_RAW:
        return text
    return f"{text[:MAX_DEAD_LETTER_RAW]}... [truncated, {len(text)} characters]"


def _key_text(value: str | None) -> str | None:
    return storable_text(value)[:128] if value else None


_COUNT_ENDS = text(
    "INSERT INTO message_ledger (queue, ended) VALUES (:queue, :ended) "
    "ON CONFLICT (queue) DO UPDATE SET ended = message_ledger.ended + excluded.ended"
)


class MessageLedger:
    """Outcomes committed per queue, counted in the transaction that commits them."""

    def __init__(self, session: Session) -> None:
        self.session = session

    def count_ends(self, queues: Iterable[str | None]) -> None:
        """One more ended message for each queue named (None: not from a queue, not counted)."""
        counts = Counter(q for q in queues if q)
        if not counts:
            return
        rows = [{"queue": q, "ended": n} for q, n in sorted(counts.items())]
        # Core text on the transaction's connection: no ORM statement building or autoflush
        # (measured: the ORM upsert took 15 % of a worker's time; the version-checked order
        # update still flushes at commit, where a conflict becomes VersionConflict).
        self.session.connection().execute(_COUNT_ENDS, rows)

    def ended(self) -> dict[str, int]:
        rows = self.session.execute(select(LedgerRow.queue, LedgerRow.ended))
        return {queue: ended for queue, ended in rows}


class UnitOfWork:
    """One transaction; `commit` turns concurrent-update failures into VersionConflict."""

    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self._sessions = sessions

    def __enter__(self) -> UnitOfWork:
        self.session = self._sessions()
        self.events = EventLog(self.session)
        self.orders = OrderRepository(self.session)
        self.outbox = Outbox(self.session)
        self.dead_letters = DeadLetters(self.session)
        self.deliveries = DecisionDeliveries(self.session)
        self.ledger = MessageLedger(self.session)
        return self

    def __exit__(self, *exc: object) -> None:
        self.session.rollback()
        self.session.close()

    def commit(self) -> None:
        try:
            self.session.commit()
        except StaleDataError as exc:
            raise VersionConflict(str(exc)) from exc
        except IntegrityError as exc:
            if _is_concurrent_create(exc):
                raise VersionConflict(str(exc.orig)) from exc
            raise

    def rollback(self) -> None:
        self.session.rollback()


_CONCURRENT_CREATE = ("orders_pkey", "decision_outbox_pkey", "uq_decision_outbox_order_id_seq")


def _is_concurrent_create(exc: IntegrityError) -> bool:
    constraint = getattr(getattr(exc.orig, "diag", None), "constraint_name", None)
    return constraint in _CONCURRENT_CREATE


def stream_orders(sessions: sessionmaker[Session], page_size: int = 500) -> Iterator[OrderState]:
    """Every stored order, a page at a time."""
    after: str | None = None
    while True:
        with sessions() as session:
            page = OrderRepository(session).page(after, page_size)
        yield from page
        if len(page) < page_size:
            return
        after = page[-1].order_id


class DecisionDeliveries:
    """Decisions received by the default decision tasks; a re-delivery bumps a counter."""

    def __init__(self, session: Session) -> None:
        self.session = session

    def record(self, payload: dict[str, Any], now: datetime) -> bool:
        """Record one delivery; True when it is the first for its decisionId."""
        stmt = insert(DecisionDeliveryRow).values(
            decision_id=payload["decisionId"],
            order_id=payload["orderId"],
            seq=payload["seq"],
            outcome=payload["outcome"],
            payload=payload,
            received_at=now,
        )
        stmt = stmt.on_conflict_do_update(
            index_elements=["decision_id"],
            set_={"deliveries": DecisionDeliveryRow.deliveries + 1},
        ).returning(DecisionDeliveryRow.deliveries)
        return self.session.scalar(stmt) == 1
