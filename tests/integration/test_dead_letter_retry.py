"""A lost database connection while writing a dead letter is retried, never misfiled or lost.

Regression: `dead_letter` did not map a lost connection to Retryable, so an invalid event whose
dead-letter commit hit a killed connection was recorded as `internal_error` instead of
`invalid_event`; when that second write failed too, the task raised, Celery acknowledged the
message (acks_late acks failures) and it was gone without a trace. Found by the PostgreSQL
chaos test (pg_terminate_backend under traffic).
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from orderfleet.models.tables import DeadLetterRow
from orderfleet.worker.failures import Retryable
from orderfleet.worker.pipeline import dead_letter
from sqlalchemy import Engine, create_engine, event, select, text

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

INVALID = {"eventType": "PaymentProcessed", "orderId": "o-1", "timestamp": "2026-01-01T10:00:00Z"}


class ConnectionKiller:
    """Terminates the backend of the next `times` commits on an engine just before they run."""

    def __init__(self, engine: Engine, admin: Engine, times: int) -> None:
        self.admin, self.left, self.killed = admin, times, 0
        event.listen(engine, "commit", self._before_commit)

    def _before_commit(self, conn) -> None:
        if self.left <= 0:
            return
        self.left -= 1
        pid = conn.connection.dbapi_connection.info.backend_pid
        with self.admin.connect() as admin:
            admin.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
            gone = text("SELECT count(*) FROM pg_stat_activity WHERE pid = :pid")
            while admin.execute(gone, {"pid": pid}).scalar():
                time.sleep(0.005)
        self.killed += 1


@pytest.fixture
def admin(database_url) -> Iterator[Engine]:
    engine = create_engine(database_url, isolation_level="AUTOCOMMIT")
    yield engine
    engine.dispose()


def letters(sessions) -> list[tuple[str, str]]:
    with sessions() as s:
        return [tuple(row) for row in s.execute(select(DeadLetterRow.reason, DeadLetterRow.error))]


def test_dead_letter_raises_retryable_when_its_connection_is_lost(runtime, admin, sessions):
    killer = ConnectionKiller(runtime.engine, admin, times=1)
    with pytest.raises(Retryable):
        dead_letter(runtime, "invalid_event", "broken", INVALID, "orderfleet.events.x")
    assert killer.killed == 1 and letters(sessions) == []
    dead_letter(runtime, "invalid_event", "broken", INVALID, "orderfleet.events.x")
    assert letters(sessions) == [("invalid_event", "broken")]


@pytest.mark.parametrize("kills", [1, 2, 3])
def test_an_invalid_event_is_dead_lettered_once_with_its_reason(runtime, admin, sessions, kills):
    from orderfleet.tasks.events import EVENT_TASK_FOR

    payment_processed = EVENT_TASK_FOR["PaymentProcessed"]

    killer = ConnectionKiller(runtime.engine, admin, times=kills)
    result = payment_processed.apply(kwargs={"event": INVALID})  # eager: retries run at once
    assert killer.killed == kills
    assert result.get() == "dead_lettered"
    [(reason, error)] = letters(sessions)
    assert reason == "invalid_event"
    assert "PaymentProcessed.transactionId: is required" in error
