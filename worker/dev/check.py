"""`orderfleet check FILE`: compare the store with the events a run says it published.

FILE is JSON Lines of distinct valid events (what `orderfleet simulate --out` writes; the demo
hands its events over with `published_events`). Every order in it must be in the store, equal
to the projection of its published events (`models.project`, compared with
`worker.service.divergence`), and hold the decision invariant.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Collection, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from orderfleet.models import (
    Event,
    InvalidEvent,
    OrderState,
    converged_view,
    decide,
    parse_event,
    project,
)
from orderfleet.models.decisions import verdict_of
from orderfleet.worker.service import divergence
from orderfleet.worker.store import OrderRepository
from sqlalchemy.orm import Session, sessionmaker

PAGE = 500
SHOWN = 160  # characters of a value shown per differing field


class BadEventFile(ValueError):
    """A line of the events file is not a valid event; the message names it."""


@dataclass(frozen=True)
class Finding:
    """An order that is missing from the store or differs from its published events."""

    order_id: str
    fields: tuple[str, ...]
    details: tuple[str, ...] = ()
    missing: bool = False


def load_events(path: Path) -> dict[str, list[Event]]:
    """The events of a JSON Lines file, by orderId; BadEventFile on a line that is not one."""
    by_order: dict[str, list[Event]] = defaultdict(list)
    with path.open(encoding="utf-8") as lines:
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                event = parse_event(line)
            except InvalidEvent as exc:
                raise BadEventFile(f"{path}:{number}: {exc}") from None
            by_order[event.order_id].append(event)
    return dict(by_order)


def published_events(
    wires: Iterable[dict[str, Any]], event_ids: Collection[str]
) -> dict[str, list[Event]]:
    """The events of wires whose eventId is among those published, by orderId."""
    by_order: dict[str, list[Event]] = defaultdict(list)
    for wire in wires:
        event = parse_event(wire)
        if event.event_id in event_ids:
            by_order[event.order_id].append(event)
    return dict(by_order)


def check_orders(
    sessions: sessionmaker[Session], published: dict[str, list[Event]]
) -> Iterator[Finding]:
    """A finding for every published order that is missing or divergent, a page at a time."""
    order_ids = sorted(published)
    for start in range(0, len(order_ids), PAGE):
        page = order_ids[start : start + PAGE]
        with sessions() as session:
            stored = OrderRepository(session).get_many(page)
        for order_id in page:
            found = check_order(order_id, stored.get(order_id), published[order_id])
            if found is not None:
                yield found


def check_order(order_id: str, stored: OrderState | None, events: list[Event]) -> Finding | None:
    """The finding for one order, or None when it is as its published events say."""
    if stored is None:
        return Finding(order_id, (), missing=True)
    found = divergence(stored, events)
    if found is None:
        return None
    return Finding(order_id, found.fields, tuple(_details(stored, events, found.fields)))


def _details(stored: OrderState, events: Iterable[Event], fields: tuple[str, ...]) -> Iterator[str]:
    """'field: stored X, published Y' for each differing field."""
    expected = converged_view(project(stored.order_id, events).to_document())
    actual = converged_view(stored.to_document())
    for name in fields:
        if name == "decision":
            last = None if stored.decision is None else stored.decision.verdict
            now = verdict_of(decide(stored))
            yield f"decision: last emitted {_short(last)}, decide() says {_short(now)}"
        else:
            yield from _differences(name, actual.get(name), expected[name])


def _differences(name: str, stored: Any, published: Any) -> Iterator[str]:
    """One line per differing value; sections (objects) compared key by key."""
    if isinstance(stored, dict) and isinstance(published, dict):
        for key in sorted(set(stored) | set(published)):
            if stored.get(key) != published.get(key):
                yield from _differences(f"{name}.{key}", stored.get(key), published.get(key))
        return
    yield f"{name}: stored {_short(stored)}, published {_short(published)}"


def _short(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False, default=str)
    return text if len(text) <= SHOWN else text[: SHOWN - 3] + "..."
