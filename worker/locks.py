"""Per-order Redis locks (redis-py Lock: random token, lease, short blocking wait)."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

import redis
from redis.exceptions import LockError

log = logging.getLogger(__name__)


class LockNotAcquired(Exception):
    """Another worker holds the order's lock; the event is retried later."""


@contextmanager
def order_lock(
    client: redis.Redis, order_id: str, *, prefix: str, lease: float, wait: float
) -> Iterator[None]:
    """Hold the order's lock; a lease that ran out costs a warning, never correctness."""
    lock = client.lock(
        f"{prefix}{order_id}", timeout=lease, blocking_timeout=wait, thread_local=False
    )
    if not lock.acquire():
        raise LockNotAcquired(f"order {order_id!r} is locked by another worker")
    try:
        yield
    finally:
        _release(lock, order_id)


def _release(lock: redis.lock.Lock, order_id: str) -> None:
    try:
        lock.release()
    except LockError:
        log.warning(
            "lock lease of order %s ran out before release; the version fence held", order_id
        )
