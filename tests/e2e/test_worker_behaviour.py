"""Worker behaviour with real processes: routing on the broker, refusal, retries, the relay."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime, timedelta

import pytest
import redis
from orderfleet.models import decision_id_for, parse_event
from orderfleet.models.tables import DeadLetterRow, DecisionDeliveryRow, EventRow, OutboxRow
from orderfleet.worker.dev.workload import order_traffic
from orderfleet.worker.routing import partition_for, queue_name
from sqlalchemy import func, select

from tests.fleet import run_orderfleet, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

SEND_EVERY_WAY = """
import json, sys
import orderfleet.tasks.events as t
from orderfleet.worker import app
from orderfleet import publish
event = json.loads(sys.argv[1])
t.order_created.delay(event=event)
t.order_created.apply_async(kwargs={"event": event})
t.order_created.apply_async(kwargs={"event": json.dumps(event)})
app.send_task("orderfleet.events.order_created", kwargs={"event": event})
app.send_task("orderfleet.events.order_created", kwargs={"event": {**event, "orderId": "o-2"}})
publish(event)
"""


def run_python(code: str, env: dict, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code, *args], env=env, capture_output=True, text=True, timeout=60
    )


def test_every_calling_style_lands_on_the_partition_queue(fleet, redis_server_url):
    event = order_traffic(1, seed=1, prefix="route")[0]
    done = run_python(SEND_EVERY_WAY, fleet.env, json.dumps(event))
    assert done.returncode == 0, done.stderr
    client = redis.Redis.from_url(redis_server_url)
    prefix = fleet.env["ORDERFLEET_BROKER_PREFIX"]
    depths = {q: client.llen(prefix + queue_name(q)) for q in range(8)}
    expected = {partition_for(event["orderId"], 8): 5, partition_for("o-2", 8): 1}
    assert {q: n for q, n in depths.items() if n} == expected


def test_start_up_refuses_a_visibility_timeout_a_retry_could_reach(fleet):
    env = {**fleet.env, "ORDERFLEET_VISIBILITY_TIMEOUT": "3", "ORDERFLEET_RETRY_BACKOFF_MAX": "2"}
    cli = run_orderfleet("worker", "--partitions", "0-1", env=env)
    assert cli.returncode == 2
    assert "ORDERFLEET_VISIBILITY_TIMEOUT=3 is too small" in cli.stderr
    plain = subprocess.run(
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "orderfleet.worker",
            "worker",
            "-P",
            "solo",
            "-Q",
            "x",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert plain.returncode != 0
    assert "ORDERFLEET_VISIBILITY_TIMEOUT=3 is too small" in plain.stdout + plain.stderr


def test_a_locked_order_is_retried_until_the_lock_is_free(fleet, sessions, redis_server_url):
    event = parse_event(order_traffic(1, seed=2, prefix="locked")[0])
    client = redis.Redis.from_url(redis_server_url)
    lock_key = f"{fleet.env['ORDERFLEET_KEY_PREFIX']}lock:{event.order_id}"
    holder = client.lock(lock_key, timeout=30)
    assert holder.acquire()
    fleet.start("w", "worker", "--partitions", "0-7")
    assert (
        run_python(
            "import sys; from orderfleet import publish; publish(sys.argv[1])",
            fleet.env,
            event.model_dump_json(by_alias=True),
        ).returncode
        == 0
    )
    wait_for(lambda: fleet.tallies().get("retry:LockNotAcquired", 0) >= 2, 30, "retries")
    holder.release()
    wait_for(lambda: fleet.tallies().get("applied") == 1, 30, "the apply")
    with sessions() as s:
        assert s.scalar(select(func.count()).select_from(EventRow)) == 1


def test_retries_exhausted_go_to_dead_letters_with_the_event(
    database_url, redis_server_url, key_prefix, sessions, tmp_path
):
    from tests.fleet import Fleet, fleet_env

    env = fleet_env(
        database_url,
        redis_server_url,
        key_prefix,
        ORDERFLEET_MAX_RETRIES="2",
        ORDERFLEET_RETRY_BACKOFF_BASE="0.01",
    )
    fleet = Fleet(env, tmp_path)
    try:
        event = parse_event(order_traffic(1, seed=3, prefix="stuck")[0])
        client = redis.Redis.from_url(redis_server_url)
        holder = client.lock(f"{key_prefix}lock:{event.order_id}", timeout=60)
        assert holder.acquire()
        fleet.start("w", "worker", "--partitions", "0-7")
        code = "import sys; from orderfleet import publish; publish(sys.argv[1])"
        assert run_python(code, env, event.model_dump_json(by_alias=True)).returncode == 0
        wait_for(lambda: _count(sessions, DeadLetterRow) == 1, 30, "the dead letter")
        with sessions() as s:
            letter = s.scalars(select(DeadLetterRow)).one()
        assert (letter.reason, letter.event_id, letter.order_id) == (
            "retries_exhausted",
            event.event_id,
            event.order_id,
        )
        assert letter.error.startswith("gave up after 2 retries: LockNotAcquired")
        assert parse_event(letter.raw) == event
        holder.release()
    finally:
        fleet.stop_all()


def test_beat_relays_a_decision_left_unpublished(
    database_url, redis_server_url, key_prefix, sessions, tmp_path
):
    from tests.fleet import Fleet, fleet_env

    env = fleet_env(
        database_url,
        redis_server_url,
        key_prefix,
        ORDERFLEET_OUTBOX_RELAY_INTERVAL="1",
        ORDERFLEET_OUTBOX_RELAY_AFTER="1",
        ORDERFLEET_DATA_DIR=str(tmp_path / "data"),
    )
    decision_id = decision_id_for("o-lost", 1)  # the fleet's own id: others are dead-lettered
    payload = {
        "orderId": "o-lost",
        "decisionId": decision_id,
        "seq": 1,
        "outcome": "confirmed",
        "reason": None,
        "warehouseId": "w-1",
        "estimatedDays": 5,
        "supersedes": None,
    }
    with sessions.begin() as s:
        s.add(
            OutboxRow(
                decision_id=decision_id,
                order_id="o-lost",
                seq=1,
                outcome="confirmed",
                payload=payload,
                created_at=datetime.now(UTC) - timedelta(minutes=1),
            )
        )
    fleet = Fleet(env, tmp_path)
    try:
        fleet.start("decisions", "worker", "--decisions")
        fleet.start("beat", "beat")
        wait_for(lambda: _count(sessions, DecisionDeliveryRow) == 1, 30, "the relayed decision")
        with sessions() as s:
            delivered = s.scalars(select(DecisionDeliveryRow)).one()
            published = s.scalar(select(OutboxRow.published_at))
        assert (delivered.decision_id, delivered.deliveries, delivered.payload) == (
            decision_id,
            1,
            payload,
        )
        assert published is not None
    finally:
        fleet.stop_all()


def _count(sessions, model) -> int:
    with sessions() as s:
        return s.scalar(select(func.count()).select_from(model))
