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


# One round trip for a whole batch: SET NX PX per key, then compare-and-delete on release
# (the same protocol as redis-py's Lock, so the two interoperate on the same keys).
_ACQUIRE_MANY = """
local held = {}
for i, key in ipairs(KEYS) do
  if redis.call('set', key, ARGV[1], 'nx', 'px', ARGV[2]) then held[#held + 1] = i end
end
return held
"""
_RELEASE_MANY = """
local released = 0
for _, key in ipairs(KEYS) do
  if redis.call('get', key) == ARGV[1] then redis.call('del', key); released = released + 1 end
end
return released
"""


class OrderLocks:
    """The locks of many orders, taken and released in one round trip each."""

    def __init__(self, client: redis.Redis, *, prefix: str, lease: float) -> None:
        self._prefix, self._lease_ms = prefix, max(1, int(lease * 1000))
        self._acquire = client.register_script(_ACQUIRE_MANY)
        self._release = client.register_script(_RELEASE_MANY)

    def acquire(self, order_ids: list[str], token: str) -> set[str]:
        """The orders whose lock is now held with `token` (the others are held elsewhere)."""
        if not order_ids:
            return set()
        keys = [f"{self._prefix}{order_id}" for order_id in order_ids]
        held = self._acquire(keys=keys, args=[token, self._lease_ms])
        return {order_ids[i - 1] for i in held}

    def release(self, order_ids: list[str], token: str) -> None:
        """Release what `token` still holds; a lease that ran out costs a warning only."""
        if not order_ids:
            return
        keys = [f"{self._prefix}{order_id}" for order_id in order_ids]
        released = self._release(keys=keys, args=[token])
        if released < len(keys):
            log.warning(
                "%d of %d order lock leases ran out before release; the version fence held",
                len(keys) - released,
                len(keys),
            )
