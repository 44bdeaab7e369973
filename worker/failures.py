"""What to do about a failure: the one place failures are classified (docs/design.md §5 step 6).

A failure is another writer's (a version conflict, an order locked elsewhere), the servers'
(a lost connection, a busy or restarting database), or the event's own (a bug only it
reaches). Only the last is dead-lettered; the others are retried. PostgreSQL errors are told
apart by their SQLSTATE and by the psycopg2 class, never by their message text.
"""

from __future__ import annotations

import enum
from collections.abc import Iterator
from contextlib import contextmanager

import redis
from orderfleet.worker.locks import LockNotAcquired
from orderfleet.worker.store import VersionConflict
from sqlalchemy.exc import DatabaseError, DBAPIError, InterfaceError, OperationalError


class Remedy(enum.Enum):
    """What becomes of the events whose commit failed."""

    RETRY_ALL = "nothing was committed: every message of the batch is retried as it came"
    HAND_BACK = "another writer changed the named orders: their events go back, the rest commits"
    RETRY_ALONE = "the servers failed, not the event: it is retried alone"
    DEAD_LETTER = "the event's own failure: it is dead-lettered (in a batch, found first)"


class Retryable(Exception):
    """A transient failure: the same message may well succeed later."""

    def __init__(self, cause: BaseException) -> None:
        self.cause = cause
        super().__init__(f"{type(cause).__name__}: {cause}")


_CONTENDED = (VersionConflict, LockNotAcquired)
_REDIS_DOWN = (redis.ConnectionError, redis.TimeoutError)
# Connection exceptions, operator intervention (an admin shutdown), transaction rollback
# (serialization failure, deadlock), lock not available, query canceled (a timeout).
_TRANSIENT_SQLSTATES = ("08", "57P", "40", "55P03", "57014")
# Failures of the servers rather than of one event: an event that meets one is retried,
# never dead-lettered as internal_error.
_ENVIRONMENTAL = (DBAPIError, redis.RedisError, OSError)


def remedy(exc: BaseException, *, alone: bool = False) -> Remedy:
    """What to do about `exc`, raised committing a batch (`alone`: a single event)."""
    if handed_back(exc) and not alone:
        return Remedy.HAND_BACK
    if transient(exc):
        return Remedy.RETRY_ALONE if alone else Remedy.RETRY_ALL
    if alone and isinstance(exc, _ENVIRONMENTAL):
        return Remedy.RETRY_ALONE
    return Remedy.DEAD_LETTER


def handed_back(exc: BaseException) -> frozenset[str]:
    """The orders whose events a failed batch hands back to retry: those a version conflict
    names (none for any other failure)."""
    return exc.order_ids if isinstance(exc, VersionConflict) else frozenset()


def transient(exc: BaseException | None) -> bool:
    """Worth retrying as it is: a version conflict, a lock, a lost connection, a busy database."""
    if isinstance(exc, (*_CONTENDED, *_REDIS_DOWN)):
        return True
    return isinstance(exc, DBAPIError) and (
        _connection_lost(exc) or _sqlstate(exc).startswith(_TRANSIENT_SQLSTATES)
    )


def unreachable(exc: BaseException | None) -> bool:
    """A Redis or PostgreSQL server that could not be reached or is not serving now (not a
    conflict, not a lock): the same batch may be tried again in place."""
    if isinstance(exc, (*_REDIS_DOWN, ConnectionError)):
        return True
    return isinstance(exc, DBAPIError) and (
        _connection_lost(exc) or isinstance(exc, OperationalError | InterfaceError)
    )


@contextmanager
def transient_as_retryable() -> Iterator[None]:
    """Raise Retryable for a transient failure (writing a dead letter: the message is tried
    again, neither misfiled nor dropped)."""
    try:
        yield
    except Exception as exc:
        if transient(exc):
            raise Retryable(exc) from exc
        raise


def cause_of(exc: BaseException) -> BaseException:
    """The failure itself: the cause of a Retryable, else `exc`."""
    return exc.cause if isinstance(exc, Retryable) else exc


def _connection_lost(exc: DBAPIError) -> bool:
    """The server did not answer: SQLAlchemy found the connection gone, or psycopg2 raised one
    of its broken-connection classes without an SQLSTATE (OperationalError, InterfaceError, or
    the bare DatabaseError it falls back to when the server closed the connection)."""
    if exc.connection_invalidated:
        return True
    no_answer = isinstance(exc, OperationalError | InterfaceError) or type(exc) is DatabaseError
    return no_answer and not _sqlstate(exc)


def _sqlstate(exc: DBAPIError) -> str:
    return getattr(exc.orig, "pgcode", None) or ""
