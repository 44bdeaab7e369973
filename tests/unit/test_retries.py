"""The retry policy: which failures are retried and how, full-jitter backoff bounded below the
visibility timeout."""

from __future__ import annotations

import random

import psycopg2
import psycopg2.errors
import pytest
import redis
from orderfleet.worker.failures import (
    Remedy,
    Retryable,
    cause_of,
    handed_back,
    remedy,
    transient,
    transient_as_retryable,
    unreachable,
)
from orderfleet.worker.locks import LockNotAcquired
from orderfleet.worker.retries import backoff_countdown, check_visibility
from orderfleet.worker.settings import Settings, SettingsError, load_settings
from orderfleet.worker.store import VersionConflict
from sqlalchemy.exc import DBAPIError


def test_countdowns_grow_exponentially_and_are_capped():
    settings = Settings(retry_backoff_base=0.1, retry_backoff_max=2.0)
    rng = random.Random(1)
    ceilings = [max(backoff_countdown(n, settings, rng) for _ in range(2000)) for n in range(6)]
    assert [round(c, 1) for c in ceilings] == [0.1, 0.2, 0.4, 0.8, 1.6, 2.0]
    assert min(backoff_countdown(5, settings, rng) for _ in range(2000)) < 0.01


def test_visibility_timeout_smaller_than_twice_the_largest_countdown_is_refused():
    with pytest.raises(SettingsError) as refused:
        check_visibility(Settings(visibility_timeout=8, retry_backoff_max=5.0))
    assert str(refused.value) == (
        "ORDERFLEET_VISIBILITY_TIMEOUT=8 is too small: a retry countdown can reach 5 s "
        "(ORDERFLEET_RETRY_BACKOFF_MAX=5), and the visibility timeout must be at least twice "
        "the largest countdown (10 s) or waiting retries are re-delivered"
    )
    check_visibility(Settings(visibility_timeout=10, retry_backoff_max=5.0))


def test_defaults_are_consistent():
    check_visibility(Settings())


def test_settings_from_environment_with_a_clear_error():
    settings = load_settings({"ORDERFLEET_PARTITIONS": "64", "ORDERFLEET_LOCK_LEASE": "0.2"})
    assert (settings.partitions, settings.lock_lease) == (64, 0.2)
    with pytest.raises(SettingsError, match="ORDERFLEET_PARTITIONS='many': must be an integer"):
        load_settings({"ORDERFLEET_PARTITIONS": "many"})


def test_boolean_settings():
    assert load_settings({"ORDERFLEET_TASK_EVENTS": "off"}).task_events is False
    assert load_settings({}).task_events is True
    with pytest.raises(SettingsError, match="TASK_EVENTS='maybe': must be true or false"):
        load_settings({"ORDERFLEET_TASK_EVENTS": "maybe"})


def pg_error(sqlstate: str | None, message: str = "failed", cls: type = psycopg2.OperationalError):
    """A psycopg2 error as SQLAlchemy raises it: the class psycopg2 picks for the SQLSTATE."""
    orig = (psycopg2.errors.lookup(sqlstate) if sqlstate else cls)(message)
    orig.__setstate__({"pgcode": sqlstate, "pgerror": message})
    return DBAPIError.instance("SELECT 1", {}, orig, psycopg2.Error)


LOST_CONNECTION = [
    pg_error(None, "server closed the connection unexpectedly"),
    pg_error(None, "SSL SYSCALL error: EOF detected", psycopg2.DatabaseError),  # no SQLSTATE
    pg_error(None, "connection already closed", psycopg2.InterfaceError),
    pg_error("57P01", "terminating connection due to administrator command"),
    pg_error("08006", "connection failure"),
]
BUSY_DATABASE = [pg_error(code) for code in ("40001", "40P01", "55P03", "57014")]
OTHER_WRITER = [VersionConflict("changed", {"o-1"}), LockNotAcquired("o-1")]
REDIS_DOWN = [redis.ConnectionError("refused"), redis.TimeoutError("timed out")]
THE_EVENTS_OWN = [
    pg_error("22012", "division by zero (server closed the connection)"),  # no text match
    pg_error("23505", "duplicate key value violates unique constraint"),
    pg_error(None, "can't adapt type 'Foo'", psycopg2.ProgrammingError),
    redis.ResponseError("WRONGTYPE"),
]


@pytest.mark.parametrize("exc", LOST_CONNECTION + BUSY_DATABASE + OTHER_WRITER + REDIS_DOWN)
def test_failures_of_the_servers_and_of_other_writers_are_transient(exc):
    assert transient(exc)
    assert remedy(exc, alone=True) is Remedy.RETRY_ALONE


@pytest.mark.parametrize("exc", [*THE_EVENTS_OWN, ValueError("bug"), None])
def test_other_failures_are_not_transient(exc):
    assert not transient(exc)


def test_a_connection_sqlalchemy_invalidated_is_lost_whatever_the_error():
    lost = pg_error("22012")
    lost.connection_invalidated = True
    assert transient(lost) and unreachable(lost)


def test_remedies_of_a_batch_and_of_an_event_alone():
    conflict = VersionConflict("changed", {"o-1", "o-2"})
    assert (remedy(conflict), handed_back(conflict)) == (Remedy.HAND_BACK, {"o-1", "o-2"})
    assert remedy(VersionConflict("changed by someone")) is Remedy.RETRY_ALL  # no orders named
    assert handed_back(ValueError("bug")) == frozenset()
    for exc in LOST_CONNECTION + BUSY_DATABASE + REDIS_DOWN:
        assert remedy(exc) is Remedy.RETRY_ALL
    for exc in [*THE_EVENTS_OWN, ZeroDivisionError("bug")]:
        assert remedy(exc) is Remedy.DEAD_LETTER  # in a batch: isolate the event first
    for exc in THE_EVENTS_OWN:  # a server's error, met alone: retried, never internal_error
        assert remedy(exc, alone=True) is Remedy.RETRY_ALONE
    assert remedy(ZeroDivisionError("bug"), alone=True) is Remedy.DEAD_LETTER


@pytest.mark.parametrize("exc", [*LOST_CONNECTION, *REDIS_DOWN, ConnectionRefusedError()])
def test_unreachable_servers(exc):
    assert unreachable(exc)


@pytest.mark.parametrize("exc", [*OTHER_WRITER, pg_error("22012"), ValueError("bug"), None])
def test_reachable_servers(exc):
    assert not unreachable(exc)


def test_a_transient_failure_is_retryable_and_keeps_its_cause():
    lost = LOST_CONNECTION[0]
    with pytest.raises(Retryable) as raised, transient_as_retryable():
        raise lost
    assert cause_of(raised.value) is lost and cause_of(lost) is lost
    with pytest.raises(ZeroDivisionError), transient_as_retryable():
        raise ZeroDivisionError("bug")
