"""Operations queries and actions behind the CLI: plain functions that return plain data.

Every function takes what it talks to (a session factory, a Runtime, a Redis client, a Celery
app) and returns JSON-ready dicts and lists, so the CLI only formats.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import redis
from celery import Celery
from kombu.transport.redis import PRIORITY_STEPS, Channel
from orderfleet.models import InvalidEvent, OrderState, parse_event
from orderfleet.models.tables import DeadLetterRow, OrderRow
from orderfleet.models.wire import format_instant, loads
from orderfleet.worker.routing import TASK_FOR_TYPE, all_queues, queue_for
from orderfleet.worker.runtime import Runtime
from orderfleet.worker.servers import locks_url_of_broker
from orderfleet.worker.service import rebuild
from orderfleet.worker.settings import Settings, env_name
from orderfleet.worker.store import MessageLedger, VersionConflict, stream_orders
from orderfleet.worker.transport import TAKEN_KEY
from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session, sessionmaker

ACTIVE_STATUSES = ("pending", "processing")
REBUILD_ATTEMPTS = 3


class NotFound(LookupError):
    """The order or dead letter asked for does not exist."""


# Orders


def order_document(sessions: sessionmaker[Session], order_id: str) -> dict[str, Any] | None:
    """The Order document of one order (docs/design.md §2) with its row version, or None."""
    with sessions() as session:
        row = session.get(OrderRow, order_id)
        return None if row is None else _document(row)


def _document(row: OrderRow) -> dict[str, Any]:
    """The stored document in the contract's key order, row version injected."""
    return OrderState.from_document({**row.document, "version": row.version}).to_document()


def stalled_cutoff(settings: Settings, now: datetime) -> datetime:
    """Orders still active and not updated since this instant are stalled."""
    return now - timedelta(seconds=settings.stalled_after)


def list_orders(
    sessions: sessionmaker[Session],
    status: str | None = None,
    stalled_before: datetime | None = None,
    limit: int = 100,
) -> list[dict[str, Any]]:
    """Order summaries in id order, by status and/or stalled (active, not updated since)."""
    stmt = select(OrderRow).order_by(OrderRow.order_id).limit(limit)
    if status is not None:
        stmt = stmt.where(OrderRow.status == status)
    if stalled_before is not None:
        stmt = stmt.where(
            OrderRow.status.in_(ACTIVE_STATUSES), OrderRow.updated_at < stalled_before
        )
    with sessions() as session:
        return [_summary(row) for row in session.scalars(stmt)]


def _summary(row: OrderRow) -> dict[str, Any]:
    return {
        "orderId": row.order_id,
        "status": row.status,
        "completeness": row.completeness,
        "eventCount": row.event_count,
        "lastEventAt": _instant(row.last_event_at),
        "updatedAt": _instant(row.updated_at),
        "version": row.version,
    }


def export_orders(
    sessions: sessionmaker[Session], page_size: int = 500
) -> Iterator[dict[str, Any]]:
    """Every Order document in id order, read in keyset pages (bounded memory)."""
    for state in stream_orders(sessions, page_size):
        yield state.to_document()


def order_ids(sessions: sessionmaker[Session], page_size: int = 1000) -> Iterator[str]:
    """Every order id in order, read in keyset pages."""
    after: str | None = None
    while True:
        stmt = select(OrderRow.order_id).order_by(OrderRow.order_id).limit(page_size)
        if after is not None:
            stmt = stmt.where(OrderRow.order_id > after)
        with sessions() as session:
            page = list(session.scalars(stmt))
        yield from page
        if len(page) < page_size:
            return
        after = page[-1]


def rebuild_order(runtime: Runtime, order_id: str) -> OrderState | None:
    """Recompute one order from its event log; retried when a worker wrote it meanwhile."""
    for _ in range(REBUILD_ATTEMPTS - 1):
        try:
            return rebuild(runtime.unit_of_work(), order_id, runtime.now())
        except VersionConflict:
            continue
    return rebuild(runtime.unit_of_work(), order_id, runtime.now())


def rebuild_all(runtime: Runtime, page_size: int = 1000) -> Iterator[OrderState]:
    """Recompute every order from its event log, one transaction per order (streaming)."""
    for order_id in order_ids(runtime.sessions, page_size):
        state = rebuild_order(runtime, order_id)
        if state is not None:
            yield state


# Dead letters


def list_dead_letters(
    sessions: sessionmaker[Session], reason: str | None = None, limit: int = 1000
) -> list[dict[str, Any]]:
    """Dead letters in arrival order (without their raw message), optionally of one reason."""
    stmt = select(DeadLetterRow).order_by(DeadLetterRow.id).limit(limit)
    if reason is not None:
        stmt = stmt.where(DeadLetterRow.reason == reason)
    with sessions() as session:
        return [_letter_summary(row) for row in session.scalars(stmt)]


def dead_letter(sessions: sessionmaker[Session], letter_id: int) -> dict[str, Any] | None:
    """One dead letter with its raw message, or None."""
    with sessions() as session:
        row = session.get(DeadLetterRow, letter_id)
        return None if row is None else {**_letter_summary(row), "raw": row.raw}


def _letter_summary(row: DeadLetterRow) -> dict[str, Any]:
    return {
        "id": row.id,
        "receivedAt": _instant(row.received_at),
        "reason": row.reason,
        "error": row.error,
        "taskName": row.task_name,
        "orderId": row.order_id,
        "eventId": row.event_id,
        "replayedAt": _instant(row.replayed_at),
    }


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


def replay_dead_letter(
    app: Celery, runtime: Runtime, letter_id: int, fixed_event: str | None = None
) -> Replayed:
    """Re-send a dead letter's message (or a fixed-up one); raises InvalidEvent if invalid."""
    with runtime.sessions() as session:
        row = session.get(DeadLetterRow, letter_id)
        if row is None:
            raise NotFound(f"dead letter {letter_id} not found")
        raw = row.raw
    return _replay(app, runtime, letter_id, raw if fixed_event is None else fixed_event)


def replay_reason(
    app: Celery, runtime: Runtime, reason: str, page_size: int = 200
) -> tuple[list[Replayed], list[Refused]]:
    """Re-send every unreplayed dead letter of a reason that exists now; invalid ones are kept."""
    replayed: list[Replayed] = []
    refused: list[Refused] = []
    for letter_id, raw in _unreplayed(runtime.sessions, reason, page_size):
        try:
            replayed.append(_replay(app, runtime, letter_id, raw))
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


def _replay(app: Celery, runtime: Runtime, letter_id: int, text: str) -> Replayed:
    """Validate locally, send to the event type's task on the order's partition, mark replayed."""
    event = parse_event(text)
    task_name = TASK_FOR_TYPE[event.event_type]
    queue = queue_for(event.order_id, runtime.settings.partitions)
    app.send_task(task_name, kwargs={"event": loads(text)}, queue=queue, routing_key=queue)
    with runtime.sessions.begin() as session:
        stmt = update(DeadLetterRow).where(DeadLetterRow.id == letter_id)
        session.execute(stmt.values(replayed_at=runtime.now()))
    return Replayed(letter_id, event.event_id, event.order_id, task_name, queue)


def purge_dead_letters(
    sessions: sessionmaker[Session], before: datetime, reason: str | None = None
) -> int:
    """Delete dead letters received before an instant (optionally of one reason); how many."""
    stmt = delete(DeadLetterRow).where(DeadLetterRow.received_at < before)
    if reason is not None:
        stmt = stmt.where(DeadLetterRow.reason == reason)
    with sessions.begin() as session:
        return int(session.execute(stmt).rowcount or 0)


# Partitions and the broker


def broker_redis_url(settings: Settings) -> str:
    """A redis-py URL of the broker (kombu's redis+socket:// is redis-py's unix://)."""
    url = locks_url_of_broker(settings.broker_url)
    if url is None:
        raise ValueError(
            f"{env_name('broker_url')} is {str(settings.broker_url).split(':', 1)[0]}://: "
            "queue depths need a Redis broker"
        )
    return url


def queue_depths(client: redis.Redis, prefix: str, queues: Iterable[str]) -> dict[str, int]:
    """Messages waiting in each queue: LLEN of kombu's list keys (every priority step)."""
    names = list(queues)
    with client.pipeline(transaction=False) as pipe:
        for name in names:
            for priority in PRIORITY_STEPS:
                pipe.llen(prefix + _priority_key(name, priority))
        lengths = pipe.execute()
    steps = len(PRIORITY_STEPS)
    return {name: sum(lengths[i * steps : (i + 1) * steps]) for i, name in enumerate(names)}


def _priority_key(queue: str, priority: int) -> str:
    """kombu's Redis list key of a queue at one priority step."""
    return queue if priority == 0 else f"{queue}{Channel.sep}{priority}"


def partition_depths(client: redis.Redis, prefix: str, partitions: int) -> dict[str, int]:
    """Depth of every partition queue plus the decisions and maintenance queues."""
    return queue_depths(client, prefix, all_queues(partitions))


def stray_partition_queues(client: redis.Redis, prefix: str, partitions: int) -> dict[str, int]:
    """Partition queues outside 0..P-1 that hold messages: nobody in this fleet consumes them."""
    names = set()
    for key in client.scan_iter(match=f"{prefix}orderfleet.p*", count=1000):
        queue = key.decode(errors="replace").removeprefix(prefix).split(Channel.sep)[0]
        number = queue.removeprefix("orderfleet.p")
        if number.isdigit() and int(number) >= partitions:
            names.add(queue)
    depths = queue_depths(client, prefix, sorted(names))
    return {name: depth for name, depth in depths.items() if depth}


def message_ledger(
    client: redis.Redis, prefix: str, sessions: sessionmaker[Session]
) -> list[dict[str, Any]]:
    """Per queue: messages taken from the broker, outcomes committed, and those in flight.

    At rest (nothing waiting or unacknowledged), taken > ended means messages lost between the
    broker and a committed outcome. ended > taken are re-deliveries of messages that had ended
    (a worker that died after its commit, before its acknowledgement): harmless.
    """
    taken = {k.decode(): int(v) for k, v in client.hgetall(prefix + TAKEN_KEY).items()}
    with sessions() as session:
        ended = MessageLedger(session).ended()
    unacked = Counter(json.loads(raw)[2] for raw in client.hvals(f"{prefix}unacked"))
    names = sorted(set(taken) | set(ended))
    depths = queue_depths(client, prefix, names)
    rows = []
    for name in names:
        flight = depths[name] + unacked.get(name, 0)
        gap = taken.get(name, 0) - ended.get(name, 0)
        row = {"queue": name, "taken": taken.get(name, 0), "ended": ended.get(name, 0)}
        rows.append({**row, "in_flight": flight, "lost": gap if gap > 0 and not flight else 0})
    return rows


def queue_consumers(app: Celery, timeout: float = 1.0) -> dict[str, int]:
    """How many workers consume each queue (those that answer within the timeout)."""
    replies = app.control.inspect(timeout=timeout).active_queues() or {}
    counts: dict[str, int] = {}
    for queues in replies.values():
        for queue in queues or []:
            counts[queue["name"]] = counts.get(queue["name"], 0) + 1
    return counts


def partition_report(
    depths: Mapping[str, int], consumers: Mapping[str, int]
) -> list[dict[str, Any]]:
    """One row per queue: name, depth, consumers (0 when no worker answered)."""
    return [
        {"queue": name, "depth": depth, "consumers": consumers.get(name, 0)}
        for name, depth in depths.items()
    ]


# Flower


def flower_auth(settings: Settings) -> str:
    """The basic-auth credentials for Flower; raises ValueError naming the setting."""
    name = env_name("flower_auth")
    auth = settings.flower_auth
    if not auth:
        raise ValueError(f"{name} is not set: set it to user:password, or pass --no-auth")
    for pair in auth.split(","):
        user, _, password = pair.partition(":")
        if not user or not password:
            raise ValueError(f"{name} must be user:password (comma-separated for several)")
    return auth


def flower_argv(port: int, auth: str | None) -> list[str]:
    """The `celery flower` arguments: the port and, unless None, basic auth."""
    argv = ["flower", f"--port={port}"]
    if auth is not None:
        argv.append(f"--basic-auth={auth}")
    return argv


def _instant(value: datetime | None) -> str | None:
    return None if value is None else format_instant(value)
