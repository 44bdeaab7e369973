"""Nothing lost, ever: the loss paths found under attack, each with real workers and exact counts.

Every message sent must end applied, recorded as a duplicate, or in the dead letters with a
reason; until then it stays on the broker. Messages here are written straight onto the
partition queues as kombu envelopes, as a foreign producer (or an attacker) would.
"""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import time
import uuid
import zlib
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import redis
from orderfleet.models import decision_id_for
from orderfleet.models.tables import (
    DeadLetterRow,
    DecisionDeliveryRow,
    EventRow,
    OrderRow,
    OutboxRow,
)
from orderfleet.worker.dev import embedded
from orderfleet.worker.dev.workload import deliveries_of, order_traffic
from orderfleet.worker.routing import TASK_FOR_TYPE, partition_for, queue_name
from orderfleet.worker.runtime import Runtime
from orderfleet.worker.settings import load_settings
from sqlalchemy import create_engine, func, select, text
from sqlalchemy.engine import make_url

from tests.chaos.test_chaos import Sent, assert_exact, check, settle, start_traffic, traffic
from tests.e2e.test_fleet import assert_converged
from tests.fleet import (
    Fleet,
    fleet_env,
    ledger,
    run_orderfleet,
    wait_for,
)

pytestmark = [pytest.mark.chaos, pytest.mark.slow, pytest.mark.timeout(240)]

PARTITIONS = 8  # fleet_env's ORDERFLEET_PARTITIONS
T = "2026-01-01T10:00:00Z"
EMBED = {"callbacks": None, "errbacks": None, "chain": None, "chord": None}


# --------------------------------------------------------------------------- messages by hand


def envelope(task: str | None, body: bytes, queue: str, **headers: Any) -> bytes:
    """A kombu Redis envelope of a Celery (protocol 2) task message, as the queue holds it."""
    task_id = headers.pop("id", str(uuid.uuid4()))
    all_headers = {
        "lang": "py",
        "id": task_id,
        "root_id": task_id,
        "parent_id": None,
        "group": None,
        "retries": 0,
        "eta": None,
        "expires": None,
        "timelimit": [None, None],
        "ignore_result": True,
        **({"task": task} if task else {}),
        **headers,
    }
    return json.dumps(
        {
            "body": base64.b64encode(body).decode(),
            "content-encoding": "utf-8",
            "content-type": "application/json",
            "headers": all_headers,
            "properties": {
                "correlation_id": task_id,
                "delivery_mode": 2,
                "delivery_info": {"exchange": "", "routing_key": queue},
                "priority": 0,
                "body_encoding": "base64",
                "delivery_tag": str(uuid.uuid4()),
            },
        }
    ).encode()


def event_body(event_json: str) -> bytes:
    """The task body for one event, its JSON written by hand (exact numbers survive)."""
    return f'[[], {{"event": {event_json}}}, {json.dumps(EMBED)}]'.encode()


def push(client: redis.Redis, prefix: str, queue: str, item: bytes | str) -> None:
    """Put an item on a queue where kombu's BRPOP takes it next after the ones already there."""
    client.lpush(prefix + queue, item)


def send_event(client: redis.Redis, prefix: str, event: dict[str, Any], **headers: Any) -> str:
    """Send one event task straight to its partition queue; the task id."""
    queue = queue_name(partition_for(event["orderId"], PARTITIONS))
    task_id = headers.pop("id", str(uuid.uuid4()))
    body = event_body(json.dumps(event))
    task = TASK_FOR_TYPE[event["eventType"]]
    push(client, prefix, queue, envelope(task, body, queue, id=task_id, **headers))
    return task_id


def created(order_id: str, **change: Any) -> dict[str, Any]:
    return {
        "eventType": "OrderCreated",
        "orderId": order_id,
        "timestamp": T,
        "customerId": "c-1",
        "totalAmount": "10.00",
        "currency": "USD",
        "items": [],
        **change,
    }


def dead_letters(sessions) -> list[tuple[str, str]]:
    with sessions() as s:
        return [tuple(r) for r in s.execute(select(DeadLetterRow.reason, DeadLetterRow.error))]


def document(sessions, order_id: str) -> dict[str, Any] | None:
    with sessions() as s:
        row = s.get(OrderRow, order_id)
        return None if row is None else row.document


@pytest.fixture
def client(redis_server_url) -> Iterator[redis.Redis]:
    c = redis.Redis.from_url(redis_server_url)
    yield c
    c.close()


# --------------------------------------------------------------------------- 1. not a message


def test_items_that_are_not_messages_are_dead_lettered_and_the_worker_goes_on(
    fleet, sessions, client, key_prefix
):
    """A string, a JSON array, a body that is not base64, headers that are a string."""
    worker = fleet.start("w", "worker", "--partitions", "0-7")
    queue = queue_name(partition_for("after-junk", PARTITIONS))
    valid = envelope("orderfleet.events.order_created", b"[]", queue)
    not_base64 = json.loads(valid)
    not_base64["body"] = "%%% not base64 %%%"
    string_headers = json.loads(valid)
    string_headers["headers"] = "task=orderfleet.events.order_created"
    junk = [b"plain text", b"[1, 2, 3]", json.dumps(not_base64), json.dumps(string_headers)]
    for item in junk:
        push(client, key_prefix, queue, item)
    send_event(client, key_prefix, created("after-junk"))
    wait_for(lambda: ledger(sessions) == (1, 1, 4), 30, "4 dead letters and the valid event")
    letters = dead_letters(sessions)
    assert Counter(reason for reason, _ in letters) == {"not_a_message": 4}
    assert all(f"not a message, from queue {queue}" in error for _, error in letters)
    assert worker.alive()
    assert "Unrecoverable error" not in worker.log_text()


# --------------------------------------------------------------------------- 2 + 3. database


@pytest.fixture
def limited_database_url(database_url) -> Iterator[str]:
    """The test database through a role of its own (not a superuser: connection limits bind)."""
    role = f"of_limited_{uuid.uuid4().hex[:8]}"
    admin = create_engine(database_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE ROLE "{role}" LOGIN'))
        conn.execute(text(f'GRANT ALL ON ALL TABLES IN SCHEMA public TO "{role}"'))
        conn.execute(text(f'GRANT ALL ON ALL SEQUENCES IN SCHEMA public TO "{role}"'))
    admin.dispose()
    yield make_url(database_url).set(username=role, password=None).render_as_string(False)
    admin = create_engine(database_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'ALTER ROLE "{role}" CONNECTION LIMIT -1'))
        conn.execute(
            text(f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = '{role}'")
        )
        conn.execute(text(f'DROP OWNED BY "{role}"'))
        conn.execute(text(f'DROP ROLE "{role}"'))
    admin.dispose()


TERMINATE_ROLE = text(
    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE usename = :role"
)


def refuse_connections(database_url: str, role: str, seconds: float) -> int:
    """'too many connections' for the role for a while (its sessions ended); how many ended."""
    admin = create_engine(database_url, isolation_level="AUTOCOMMIT")
    ended = 0
    with admin.connect() as conn:
        conn.execute(text(f'ALTER ROLE "{role}" CONNECTION LIMIT 0'))
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            ended += conn.scalar(TERMINATE_ROLE.bindparams(role=role))
            time.sleep(0.05)
        conn.execute(text(f'ALTER ROLE "{role}" CONNECTION LIMIT -1'))
    admin.dispose()
    return ended


def test_a_database_refusing_connections_loses_no_event_and_no_decision(
    limited_database_url, redis_server_url, key_prefix, sessions, tmp_path, database_url
):
    """'too many connections' (not a retryable class before) while events and decisions flow."""
    env = fleet_env(
        limited_database_url,
        redis_server_url,
        key_prefix,
        ORDERFLEET_LOG_LEVEL="WARNING",
        ORDERFLEET_BATCH_SIZE="100",  # what may land after the refusal began: see below
    )
    fleet = Fleet(env, tmp_path)
    try:
        fleet.start("w0", "worker", "--partitions", "0-3")
        fleet.start("w1", "worker", "--partitions", "4-7")
        fleet.start("decisions", "worker", "--decisions")
        fleet.start("beat", "beat")
        events = order_traffic(300, seed=21, prefix="refused")
        sent = deliveries_of(events, redeliver=0.3, seed=22)
        producer = fleet.publish(sent, "producer")
        wait_for(lambda: ledger(sessions)[0] > 20, 60, "traffic to flow")
        role = make_url(limited_database_url).username
        before = ledger(sessions)[1]
        ended = refuse_connections(database_url, role, seconds=4.0)
        during = ledger(sessions)[1] - before
        assert producer.wait(120) == 0
        expected = (len(events), len(sent), 0)
        try:
            wait_for(lambda: ledger(sessions) == expected, 120, "every message")
        except AssertionError as exc:
            tails = "\n".join(f"--- {p.name}\n{p.log_text()[-3000:]}" for p in fleet.processes)
            raise AssertionError(f"{exc}: {ledger(sessions)} != {expected}\n{tails}") from None
        wait_for(lambda: undelivered_decisions(sessions) == 0, 60, "every decision delivered")
        assert_converged(sessions, events)
        retried = fleet.tallies()
        print(
            f"\nrefused connections for 4 s: {len(sent)} messages, {ended} sessions ended, "
            f"{during} deliveries committed meanwhile (from {before}), retries {retried}, 0 lost"
        )
        # thousands would commit in 4 s unhindered; what was in flight when it began may still
        # land: a batch per worker (up to ORDERFLEET_BATCH_SIZE = 100 messages each here)
        assert ended > 0 and during < 250 and before + during < len(sent)
        assert retried.get("retry:OperationalError", 0) > 0
    finally:
        fleet.stop_all()


def undelivered_decisions(sessions) -> int:
    """Outbox rows whose decision was never recorded as delivered."""
    with sessions() as s:
        delivered = select(DecisionDeliveryRow.decision_id)
        return s.scalar(
            select(func.count())
            .select_from(OutboxRow)
            .where(OutboxRow.decision_id.not_in(delivered))
        )


# --------------------------------------------------------------------------- 4. partition count


def test_another_partition_count_is_refused_and_stray_queues_are_shown(
    fleet, sessions, client, key_prefix
):
    """P=32 against a fleet of 8: the producer and a worker refuse; `partitions` shows strays."""
    fleet.start("w", "worker", "--partitions", "0-7")
    env32 = {**fleet.env, "ORDERFLEET_PARTITIONS": "32"}
    code = "from orderfleet import publish; import json, sys; publish(json.loads(sys.argv[1]))"
    done = subprocess.run(
        [sys.executable, "-c", code, json.dumps(created("p32"))],
        env=env32,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1
    assert "ORDERFLEET_PARTITIONS=32, but the fleet on this broker runs 8 partitions" in done.stderr
    worker = run_orderfleet("worker", "--partitions", "0-31", env=env32)
    assert worker.returncode == 2
    assert "runs 8 partitions" in worker.stderr
    stray = "orderfleet.p020"
    push(client, key_prefix, stray, envelope("orderfleet.events.order_created", b"[]", stray))
    shown = run_orderfleet("partitions", "--json", "--timeout", "0.5", env=fleet.env)
    assert shown.returncode == 1
    report = json.loads(shown.stdout)
    assert report["recorded"] == 8
    assert report["outside"] == [{"queue": stray, "depth": 1}]
    assert "1 messages wait in orderfleet.p020" in shown.stderr
    assert ledger(sessions) == (0, 0, 0)


# --------------------------------------------------------------------------- 5. expiry, revoke


def test_expired_and_revoked_messages_are_dead_lettered(fleet, sessions, client, key_prefix):
    """Celery would acknowledge both without running them; here each leaves a dead letter."""
    from celery import Celery

    fleet.start("w", "worker", "--partitions", "0-7")
    past = (datetime.now(UTC) - timedelta(minutes=5)).isoformat()
    send_event(client, key_prefix, created("expired-1"), expires=past)
    app = Celery(broker=fleet.env["ORDERFLEET_BROKER_URL"])
    app.conf.broker_transport_options = {"global_keyprefix": key_prefix}
    revoked_id = str(uuid.uuid4())
    app.control.revoke(revoked_id)
    time.sleep(1.0)  # the broadcast reaches the worker
    send_event(client, key_prefix, created("revoked-1"), id=revoked_id)
    send_event(client, key_prefix, created("applied-1"))
    wait_for(lambda: ledger(sessions) == (1, 1, 2), 30, "1 applied, 2 dead letters")
    assert sorted(reason for reason, _ in dead_letters(sessions)) == ["expired", "revoked"]
    app.close()


# --------------------------------------------------------------------------- 6. exact numbers


def test_json_numbers_from_a_foreign_producer_stay_exact(fleet, sessions, client, key_prefix):
    """12345678901234567.89 as a JSON number: stored exactly, and the order is confirmed."""
    fleet.start("w", "worker", "--partitions", "0-7")
    fleet.start("decisions", "worker", "--decisions")
    order = "exact-1"
    queue = queue_name(partition_for(order, PARTITIONS))
    amount = "12345678901234567.89"
    base = f'"orderId": "{order}", "timestamp": "{T}"'
    texts = {
        "OrderCreated": f'{{"eventType": "OrderCreated", {base}, "customerId": "c", '
        f'"totalAmount": {amount}, "currency": "USD", "items": []}}',
        "PaymentProcessed": f'{{"eventType": "PaymentProcessed", {base}, "transactionId": "t", '
        f'"amount": {amount}, "status": "successful"}}',
        "InventoryReserved": f'{{"eventType": "InventoryReserved", {base}, '
        f'"warehouseId": "w", "reservedItems": {{"s": 1}}}}',
    }
    for event_type, event_json in texts.items():
        body = event_body(event_json)
        push(client, key_prefix, queue, envelope(TASK_FOR_TYPE[event_type], body, queue))
    wait_for(lambda: ledger(sessions) == (3, 3, 0), 30, "3 events applied")
    doc = document(sessions, order)
    assert doc["customer"]["totalAmount"] == amount
    assert doc["payment"]["amount"] == amount
    assert (doc["status"], doc["decision"]["reason"]) == ("confirmed", None)


# --------------------------------------------------------------------------- 7. costly messages


def test_costly_messages_are_refused_or_bounded(fleet, sessions, client, key_prefix):
    """A compressed message, 1,150 items priced 1e65000, a countdown of 600 s."""
    worker = fleet.start("w", "worker", "--partitions", "0-7")
    order = "costly-1"
    queue = queue_name(partition_for(order, PARTITIONS))
    packed = zlib.compress(event_body(json.dumps(created(order))))
    push(
        client,
        key_prefix,
        queue,
        envelope(TASK_FOR_TYPE["OrderCreated"], packed, queue, compression="application/x-gzip"),
    )
    items = [{"sku": f"s-{n}", "quantity": 1, "unitPrice": "__P__"} for n in range(1150)]
    priced = json.dumps(created("costly-2", items=items)).replace('"__P__"', "1e65000")
    started = time.monotonic()
    push(
        client,
        key_prefix,
        queue,
        envelope(TASK_FOR_TYPE["OrderCreated"], event_body(priced), queue),
    )
    wait_for(lambda: ledger(sessions)[2] == 2, 30, "2 dead letters")
    refused_in = time.monotonic() - started
    later = (datetime.now(UTC) + timedelta(seconds=600)).isoformat()
    send_event(client, key_prefix, created("costly-3"), eta=later)
    wait_for(lambda: ledger(sessions)[:2] == (1, 1), 30, "the far-ETA event applied now")
    time.sleep(12)  # past fleet_env's 10 s visibility timeout: no copy may come back
    assert ledger(sessions) == (1, 1, 2)
    assert client.hlen(f"{key_prefix}unacked") == 0
    reasons = Counter(reason for reason, _ in dead_letters(sessions))
    assert reasons == {"compressed_message": 1, "invalid_event": 1}
    assert any(
        "OrderCreated.items: must have at most 1000 items" in e for _, e in dead_letters(sessions)
    )
    assert refused_in < 10
    assert "running it now" in worker.log_text()


# --------------------------------------------------------------------------- 8. frozen peer


def test_a_transaction_left_open_blocks_its_order_for_seconds_not_forever(
    database_url, redis_server_url, key_prefix, sessions, tmp_path, client
):
    """A peer frozen inside a transaction holding the order's row: ended by the server."""
    env = fleet_env(
        database_url,
        redis_server_url,
        key_prefix,
        ORDERFLEET_DB_LOCK_TIMEOUT="0.5",
        ORDERFLEET_DB_IDLE_TIMEOUT="3",
    )
    fleet = Fleet(env, tmp_path)
    try:
        fleet.start("w", "worker", "--partitions", "0-7")
        order = "frozen-1"
        send_event(client, key_prefix, created(order))
        wait_for(lambda: ledger(sessions)[0] == 1, 30, "the order to exist")
        peer = Runtime(load_settings(env))  # a fleet process's own database sessions
        conn = peer.engine.connect()
        conn.execute(text("SELECT 1 FROM orders WHERE order_id = :o FOR UPDATE"), {"o": order})
        held_at = time.monotonic()  # now idle in transaction, as a SIGSTOPped worker would be
        payment = {
            "eventType": "PaymentProcessed",
            "orderId": order,
            "timestamp": T,
            "transactionId": "t",
            "amount": "10.00",
            "status": "successful",
        }
        send_event(client, key_prefix, payment)
        wait_for(lambda: ledger(sessions)[0] == 2, 30, "the second event applied")
        waited = time.monotonic() - held_at
        with pytest.raises(Exception, match="server closed the connection"):
            conn.execute(text("SELECT 1"))
        conn.close()
        peer.close()
        assert 2.5 <= waited <= 20
        assert ledger(sessions) == (2, 2, 0)
    finally:
        fleet.stop_all()


# --------------------------------------------------------------------------- 9. smaller things


DECISION_TASK = "orderfleet.decisions.order_confirmed"


def decision_message(decision: Any, queue: str = "orderfleet.decisions") -> bytes:
    body = json.dumps([[], {"decision": decision}, EMBED]).encode()
    return envelope(DECISION_TASK, body, queue)


def test_bad_decisions_are_dead_lettered_and_secrets_are_not_printed(
    fleet, sessions, client, key_prefix
):
    """Malformed and forged decision tasks; a password in a broker URL; broker persistence."""
    worker = fleet.start("decisions", "worker", "--decisions")
    ours = {"orderId": "o-9", "seq": 1, "outcome": "confirmed", "reason": None}
    malformed = [["not", "a", "decision"], {"orderId": "o-9", "seq": "one"}]
    forged = {**ours, "decisionId": str(uuid.uuid4())}
    foreign = {**ours, "decisionId": decision_id_for("o-9", 1)}  # well formed, never emitted
    for decision in [*malformed, forged, foreign]:
        push(client, key_prefix, "orderfleet.decisions", decision_message(decision))
    wait_for(lambda: ledger(sessions)[2] == 4, 30, "4 dead letters")
    reasons = Counter(reason for reason, _ in dead_letters(sessions))
    assert reasons == {"invalid_decision": 3, "unknown_decision": 1}
    with sessions() as s:
        assert s.scalar(select(func.count()).select_from(DecisionDeliveryRow)) == 0
    secret = "s3cret-pw"
    env = {**fleet.env, "ORDERFLEET_BROKER_URL": f"amqp://user:{secret}@127.0.0.1:1//"}
    shown = run_orderfleet("partitions", env=env)
    assert shown.returncode != 0
    assert secret not in shown.stdout + shown.stderr
    config = client.config_get("appendonly") | client.config_get("save")
    persistent = config.get("appendonly") == "yes" or bool(config.get("save"))
    assert ("keeps nothing on disk" in worker.log_text()) is not persistent
    with sessions() as s:
        assert s.scalar(select(func.count()).select_from(EventRow)) == 0


# --------------------------------------------------------------------------- chaos: all at once


FAULT = 2.0  # seconds each fault lasts
FAILING_TRIGGERS = ("order_events", "decision_deliveries")


def fail_statements(database_url: str, seconds: float) -> None:
    """Every insert into the event log and the deliveries raises, for a while."""
    admin = create_engine(database_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(
            text(
                "CREATE OR REPLACE FUNCTION orderfleet_injected() RETURNS trigger LANGUAGE plpgsql "
                "AS $$ BEGIN RAISE EXCEPTION 'injected failure'; END $$"
            )
        )
        for table in FAILING_TRIGGERS:
            conn.execute(
                text(
                    f"CREATE TRIGGER injected BEFORE INSERT ON {table} "
                    "FOR EACH ROW EXECUTE FUNCTION orderfleet_injected()"
                )
            )
        time.sleep(seconds)
        for table in FAILING_TRIGGERS:
            conn.execute(text(f"DROP TRIGGER injected ON {table}"))
    admin.dispose()


def close_database(database_url: str, seconds: float) -> None:
    """The database accepts no connection (and loses the ones it had) for a while."""
    url = make_url(database_url)
    name = url.database
    admin = create_engine(url.set(database="postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false'))
        conn.execute(
            text(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE datname = :name AND pid <> pg_backend_pid()"
            ),
            {"name": name},
        )
        time.sleep(seconds)
        conn.execute(text(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true'))
    admin.dispose()


def test_database_and_redis_faults_under_traffic_lose_nothing(
    limited_database_url,
    database_url,
    redis_server_url,
    key_prefix,
    sessions,
    tmp_path,
    own_redis,
    producers,
):
    """Refused, failing, closed database; lock Redis down: exact counts, decisions delivered."""
    locks_url = embedded.redis_url(own_redis)
    env = fleet_env(
        limited_database_url,
        redis_server_url,
        key_prefix,
        ORDERFLEET_REDIS_URL=locks_url,
        ORDERFLEET_LOG_LEVEL="WARNING",
    )
    fleet = Fleet(env, tmp_path / "logs")
    broker = redis.Redis.from_url(redis_server_url)
    try:
        fleet.start("w0", "worker", "--partitions", "0-3")
        fleet.start("w1", "worker", "--partitions", "4-7")
        fleet.start("decisions", "worker", "--decisions")
        fleet.start("beat", "beat")
        run = start_traffic(fleet, producers, "sim", *traffic("faults-", seed=31, orders=300))
        wait_for(lambda: ledger(sessions)[0] > 100, 60, "traffic to flow")
        role = make_url(limited_database_url).username
        refuse_connections(database_url, role, FAULT)
        fail_statements(database_url, FAULT)
        close_database(database_url, FAULT)
        assert embedded.stop_redis(own_redis)
        time.sleep(FAULT)
        embedded.ensure_redis(own_redis)
        sent = Sent.of([run.finish(timeout=120)])
        settle(sessions, broker, key_prefix, sent, timeout=150)
        logged, deliveries, _ = assert_exact(sessions, sent, extra_deliveries=sent.valid)
        last = check(fleet, run.out)
        wait_for(lambda: undelivered_decisions(sessions) == 0, 60, "every decision delivered")
        accounts = run_orderfleet("ledger", "--json", env=fleet.env)
        assert accounts.returncode == 0, accounts.stderr
        rows = json.loads(accounts.stdout)
        retried = fleet.tallies()
        print(
            f"\nchaos db+redis faults: {sent.valid + sent.invalid} messages, {logged} distinct, "
            f"{deliveries - sent.valid} extra deliveries; 0 undelivered decisions; "
            f"retries {retried}; ledger {rows}; {last}"
        )
        assert sum(row["lost"] for row in rows) == 0
        assert sum(row["taken"] for row in rows if row["queue"].startswith("orderfleet.p")) == (
            sent.valid + sent.invalid
        )
    finally:
        fleet.stop_all()
        broker.close()
