"""The operations CLI against real PostgreSQL and Redis (and one real worker for replays)."""

from __future__ import annotations

import importlib
import importlib.util
import json
import os
import re
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from celery import Celery
from orderfleet.models import InvalidEvent, converged_view, parse_event, project
from orderfleet.models.tables import DeadLetterRow, OrderRow
from orderfleet.models.wire import to_instant
from orderfleet.tasks.producer import publish_many
from orderfleet.worker.cli import cli
from orderfleet.worker.ops import flower_argv
from orderfleet.worker.routing import all_queues, queue_for
from orderfleet.worker.runtime import reset_runtime
from orderfleet.worker.service import apply_event
from orderfleet.worker.store import DeadLetter, UnitOfWork, stream_orders
from sqlalchemy import create_engine, select, text
from sqlalchemy.engine import make_url
from typer.testing import CliRunner, Result

from tests.fleet import Fleet, fleet_env, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

T0 = datetime(2026, 1, 1, 10, tzinfo=UTC)
DOCUMENT_KEYS = {
    "orderId",
    "status",
    "completeness",
    "eventCount",
    "createdAt",
    "firstEventAt",
    "lastEventAt",
    "customer",
    "inventory",
    "payment",
    "shipping",
    "loyalty",
    "decision",
    "version",
}
SECTION_FIELDS = {
    "customer": {"customerId", "totalAmount", "currency", "items"},
    "inventory": {"reservedItems", "warehouseId"},
    "payment": {"transactionId", "amount", "status", "method"},
    "shipping": {"shippingCost", "estimatedDays", "carrierOptions"},
    "loyalty": {"pointsEarned", "totalPoints", "tierStatus"},
}
DECIMAL_TEXT = re.compile(r"-?\d+(\.\d+)?")
CONFIRMED = ["o-confirmed-1", "o-confirmed-2"]
ALL_ORDERS = sorted([*CONFIRMED, "o-rejected", "o-processing", "o-pending"])


# Events and state


def wire(kind: str, order_id: str, minutes: int = 0, **fields: Any) -> dict[str, Any]:
    """A valid wire event of a type, with overridable fields."""
    payloads: dict[str, dict[str, Any]] = {
        "OrderCreated": {
            "customerId": "c-1",
            "totalAmount": "99.99",
            "currency": "USD",
            "items": [{"sku": "sku-1", "quantity": 2, "unitPrice": "49.995"}],
        },
        "InventoryReserved": {"reservedItems": {"sku-1": 2}, "warehouseId": "w-1"},
        "PaymentProcessed": {
            "transactionId": "t-1",
            "amount": "99.99",
            "status": "successful",
            "method": "card",
        },
        "ShippingCalculated": {
            "shippingCost": "4.50",
            "estimatedDays": 3,
            "carrierOptions": [{"name": "ups", "cost": "4.5", "estimatedDays": 3}],
        },
        "LoyaltyPointsUpdated": {"pointsEarned": 10, "totalPoints": 110, "tierStatus": "gold"},
    }
    timestamp = (T0 + timedelta(minutes=minutes)).isoformat()
    return {
        "eventType": kind,
        "orderId": order_id,
        "timestamp": timestamp,
        **payloads[kind],
        **fields,
    }


def order_events(order_id: str) -> list[dict[str, Any]]:
    """The wire events that give each test order its status."""
    confirmed = [
        wire("OrderCreated", order_id),
        wire("InventoryReserved", order_id, 1),
        wire("PaymentProcessed", order_id, 2),
    ]
    return {
        "o-confirmed-1": confirmed,
        "o-confirmed-2": [
            *confirmed,
            wire("ShippingCalculated", order_id, 3),
            wire("LoyaltyPointsUpdated", order_id, 4),
        ],
        "o-rejected": [wire("PaymentProcessed", order_id, status="failed")],
        "o-processing": [wire("OrderCreated", order_id)],
        "o-pending": [wire("InventoryReserved", order_id)],
    }[order_id]


def apply(sessions, events: list[dict[str, Any]], now: datetime) -> None:
    for event in events:
        apply_event(UnitOfWork(sessions), parse_event(event), now)


def populate(sessions, now: datetime | None = None) -> None:
    for order_id in ALL_ORDERS:
        apply(sessions, order_events(order_id), now or datetime.now(UTC))


def stored_documents(sessions) -> list[dict[str, Any]]:
    return [state.to_document() for state in stream_orders(sessions)]


def add_dead_letter(sessions, received_at: datetime, reason: str, raw: Any, **fields: Any) -> None:
    text_ = raw if isinstance(raw, str) else json.dumps(raw)
    with UnitOfWork(sessions) as uow:
        uow.dead_letters.add(
            DeadLetter(reason=reason, error=f"{reason}!", raw=text_, **fields), received_at
        )
        uow.commit()


def letters(sessions) -> list[DeadLetterRow]:
    with sessions() as session:
        return list(session.scalars(select(DeadLetterRow).order_by(DeadLetterRow.id)))


# The CLI in this process, on the test's servers


def celery_app_from_env() -> Celery:
    """A Celery app configured by a fresh run of celeryconfig (it reads the env on import)."""
    origin = importlib.util.find_spec("orderfleet.celeryconfig").origin
    spec = importlib.util.spec_from_file_location("orderfleet.celeryconfig", origin)  # its own name
    config = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(config)
    app = Celery("orderfleet", set_as_current=False)
    app.config_from_object(config)
    return app


@pytest.fixture
def use_env(monkeypatch) -> Iterator[Callable[[dict[str, str]], Celery]]:
    """Point the CLI (settings, runtime, Celery app) at an ORDERFLEET_* environment."""
    apps: list[Celery] = []

    def install(env: dict[str, str]) -> Celery:
        for name in list(os.environ):
            if name.startswith("ORDERFLEET_") and not name.startswith("ORDERFLEET_TEST_"):
                monkeypatch.delenv(name)
        for name, value in env.items():
            if name.startswith("ORDERFLEET_"):
                monkeypatch.setenv(name, value)
        monkeypatch.setenv("COLUMNS", "200")
        reset_runtime()
        app = celery_app_from_env()
        apps.append(app)
        monkeypatch.setattr(importlib.import_module("orderfleet.worker.celery_app"), "app", app)
        return app

    yield install
    reset_runtime()
    for app in apps:
        app.close()


@pytest.fixture
def env(database_url, redis_server_url, key_prefix, sessions) -> dict[str, str]:
    """The ORDERFLEET_* settings of a fleet on the test database and a test-only prefix."""
    return fleet_env(database_url, redis_server_url, key_prefix)


@pytest.fixture
def run(env, use_env) -> Callable[..., Result]:
    use_env(env)
    runner = CliRunner()

    def invoke(*args: str, input: str | None = None) -> Result:
        return runner.invoke(cli, list(args), input=input)

    return invoke


def ok(result: Result) -> Result:
    assert result.exit_code == 0, (result.output, result.exception)
    return result


# Documents


def assert_document_shape(doc: dict[str, Any]) -> None:
    """Every key of docs/design.md §2; sections with eventId/timestamp; decimal strings."""
    assert set(doc) == DOCUMENT_KEYS
    for key in ("createdAt", "firstEventAt", "lastEventAt"):
        assert doc[key] is None or doc[key].endswith("Z")
    for name, fields in SECTION_FIELDS.items():
        section = doc[name]
        if section is not None:
            assert {"eventId", "timestamp", *fields} <= set(section), name
            assert section["timestamp"].endswith("Z")
            assert to_instant(section["timestamp"])
    amounts = [
        *((doc["customer"] or {}).get(k) for k in ("totalAmount",)),
        *(item.get("unitPrice") for item in (doc["customer"] or {}).get("items", [])),
        (doc["payment"] or {}).get("amount"),
        (doc["shipping"] or {}).get("shippingCost"),
        *(o["cost"] for o in (doc["shipping"] or {}).get("carrierOptions", [])),
    ]
    for amount in filter(None, amounts):
        assert isinstance(amount, str) and DECIMAL_TEXT.fullmatch(amount), amount
        Decimal(amount)


def test_every_command_has_help(run):
    commands = [
        ["order", "show"],
        ["orders", "list"],
        ["orders", "export"],
        ["dlq", "list"],
        ["dlq", "show"],
        ["dlq", "replay"],
        ["dlq", "purge"],
        ["verify"],
        ["rebuild"],
        ["partitions"],
        ["flower"],
    ]
    for command in commands:
        assert "Usage" in ok(run(*command, "--help")).output, command


def test_order_show_prints_the_stored_document_with_its_row_version(run, sessions):
    populate(sessions)
    expected = {doc["orderId"]: doc for doc in stored_documents(sessions)}
    shown = json.loads(ok(run("order", "show", "o-confirmed-2", "--json")).stdout)
    assert shown == expected["o-confirmed-2"]
    assert_document_shape(shown)
    with sessions() as session:
        assert shown["version"] == session.get(OrderRow, "o-confirmed-2").version == 5
    assert (shown["status"], shown["completeness"], shown["eventCount"]) == ("confirmed", 100, 5)
    table = ok(run("order", "show", "o-confirmed-2")).stdout
    assert "customer.totalAmount" in table and "99.99" in table
    missing = run("order", "show", "o-missing")
    assert missing.exit_code == 1
    assert "order 'o-missing' not found" in missing.stderr


def test_orders_export_is_json_lines_of_every_document_in_pages(run, sessions):
    populate(sessions)
    result = ok(run("orders", "export", "--page-size", "2"))
    lines = result.stdout.splitlines()
    exported = [json.loads(line) for line in lines]
    for doc in exported:
        assert_document_shape(doc)
    assert exported == stored_documents(sessions)
    assert [doc["orderId"] for doc in exported] == ALL_ORDERS
    for doc in exported:
        expected = project(doc["orderId"], map(parse_event, order_events(doc["orderId"])))
        assert converged_view(doc) == converged_view(expected.to_document())


def test_orders_list_by_status(run, sessions):
    populate(sessions)
    listed = json.loads(ok(run("orders", "list", "--status", "confirmed", "--json")).stdout)
    assert [row["orderId"] for row in listed] == CONFIRMED
    assert set(listed[0]) == {
        "orderId",
        "status",
        "completeness",
        "eventCount",
        "lastEventAt",
        "updatedAt",
        "version",
    }
    assert {row["status"] for row in listed} == {"confirmed"}
    everything = json.loads(ok(run("orders", "list", "--json")).stdout)
    assert [row["orderId"] for row in everything] == ALL_ORDERS
    first_two = json.loads(ok(run("orders", "list", "--limit", "2", "--json")).stdout)
    assert [row["orderId"] for row in first_two] == ALL_ORDERS[:2]
    table = ok(run("orders", "list", "--status", "rejected")).stdout
    assert "o-rejected" in table and "o-pending" not in table
    assert run("orders", "list", "--status", "lost").exit_code == 2


def test_orders_list_stalled(env, use_env, sessions):
    now = datetime.now(UTC)
    populate(sessions, now - timedelta(hours=1))
    apply(sessions, [wire("OrderCreated", "o-fresh")], now)
    runner = CliRunner()

    use_env({**env, "ORDERFLEET_STALLED_AFTER": "60"})
    listed = json.loads(ok(runner.invoke(cli, ["orders", "list", "--stalled", "--json"])).stdout)
    assert [row["orderId"] for row in listed] == ["o-pending", "o-processing"]

    use_env({**env, "ORDERFLEET_STALLED_AFTER": "0.001"})
    time.sleep(0.01)
    listed = json.loads(ok(runner.invoke(cli, ["orders", "list", "--stalled", "--json"])).stdout)
    assert [row["orderId"] for row in listed] == ["o-fresh", "o-pending", "o-processing"]
    args = ["orders", "list", "--stalled", "--status", "processing", "--json"]
    listed = json.loads(ok(runner.invoke(cli, args)).stdout)
    assert [row["orderId"] for row in listed] == ["o-fresh", "o-processing"]


# Dead letters


def test_dlq_list_and_show(run, sessions):
    invalid = {"eventType": "OrderCreated", "orderId": "o-9"}
    add_dead_letter(
        sessions,
        T0,
        "invalid_event",
        invalid,
        task_name="orderfleet.events.order_created",
        order_id="o-9",
    )
    add_dead_letter(sessions, T0 + timedelta(hours=1), "retries_exhausted", "not json")
    add_dead_letter(sessions, T0 + timedelta(hours=2), "invalid_event", "[1]")

    listed = json.loads(ok(run("dlq", "list", "--json")).stdout)
    assert listed[0] == {
        "id": 1,
        "receivedAt": "2026-01-01T10:00:00Z",
        "reason": "invalid_event",
        "error": "invalid_event!",
        "taskName": "orderfleet.events.order_created",
        "orderId": "o-9",
        "eventId": None,
        "replayedAt": None,
    }
    assert [(x["id"], x["reason"]) for x in listed] == [
        (1, "invalid_event"),
        (2, "retries_exhausted"),
        (3, "invalid_event"),
    ]
    by_reason = json.loads(ok(run("dlq", "list", "--reason", "invalid_event", "--json")).stdout)
    assert [x["id"] for x in by_reason] == [1, 3]
    shown = json.loads(ok(run("dlq", "show", "1", "--json")).stdout)
    assert shown == {**listed[0], "raw": json.dumps(invalid)}
    assert "retries_exhausted" in ok(run("dlq", "list")).stdout
    assert "not json" in ok(run("dlq", "show", "2")).stdout
    missing = run("dlq", "show", "99")
    assert missing.exit_code == 1 and "dead letter 99 not found" in missing.stderr


def test_dlq_purge_deletes_older_letters_and_says_how_many(run, sessions):
    add_dead_letter(sessions, T0, "invalid_event", "a")
    add_dead_letter(sessions, T0, "retries_exhausted", "b")
    add_dead_letter(sessions, T0 + timedelta(days=200), "invalid_event", "c")
    purged = ok(
        run("dlq", "purge", "--before", "2026-06-01T00:00:00Z", "--reason", "invalid_event")
    )
    assert purged.stdout.strip() == "purged 1 dead letter"
    assert [row.raw for row in letters(sessions)] == ["b", "c"]
    purged = ok(run("dlq", "purge", "--before", "2027-01-01T00:00:00+01:00"))
    assert purged.stdout.strip() == "purged 2 dead letters"
    assert letters(sessions) == []
    naive = run("dlq", "purge", "--before", "2026-06-01T00:00:00")
    assert naive.exit_code == 2 and "naive" in naive.stderr


def test_dlq_replay_refuses_a_message_that_is_still_invalid(run, sessions):
    invalid = wire("OrderCreated", "o-bad", totalAmount="-1")
    add_dead_letter(sessions, T0, "invalid_event", invalid, order_id="o-bad")
    with pytest.raises(InvalidEvent) as problem:
        parse_event(invalid)
    refused = run("dlq", "replay", "1")
    assert refused.exit_code == 1
    assert f"dead letter 1 is still invalid, not replayed: {problem.value}" in refused.stderr
    assert letters(sessions)[0].replayed_at is None
    assert run("dlq", "replay").exit_code == 2
    assert run("dlq", "replay", "1", "--reason", "invalid_event").exit_code == 2
    assert run("dlq", "replay", "7").exit_code == 1


@pytest.fixture
def fleet(env, tmp_path) -> Iterator[Fleet]:
    running = Fleet(env, tmp_path)
    yield running
    running.stop_all()


def test_dlq_replay_sends_fixed_up_and_reasoned_letters_to_a_worker(run, sessions, fleet, tmp_path):
    fleet.start("w", "worker", "--partitions", "0-7")
    created = wire("OrderCreated", "o-replay")
    add_dead_letter(
        sessions,
        T0,
        "invalid_event",
        {**created, "totalAmount": "-1"},
        task_name="orderfleet.events.order_created",
    )
    for kind, minutes in (("InventoryReserved", 1), ("PaymentProcessed", 2)):
        add_dead_letter(sessions, T0, "retries_exhausted", wire(kind, "o-replay", minutes))
    mismatched = wire("OrderCreated", "o-mismatch")
    add_dead_letter(
        sessions,
        T0,
        "task_mismatch",
        mismatched,
        task_name="orderfleet.events.payment_processed",
    )
    add_dead_letter(
        sessions, T0, "invalid_event", {**wire("OrderCreated", "o-stdin"), "currency": 1}
    )
    fixed = tmp_path / "fixed.json"
    fixed.write_text(json.dumps(created))

    first = ok(run("dlq", "replay", "1", "--event", str(fixed)))
    event_id = parse_event(created).event_id
    queue = queue_for("o-replay", 8)
    assert first.stdout.strip() == (
        f"replayed dead letter 1: event {event_id} of order o-replay "
        f"sent to orderfleet.events.order_created on {queue}"
    )
    reasoned = ok(run("dlq", "replay", "--reason", "retries_exhausted"))
    assert reasoned.stdout.strip() == "replayed 2 dead letters of reason retries_exhausted"
    assert "orderfleet.events.order_created" in ok(run("dlq", "replay", "4")).stdout
    stdin_event = json.dumps(wire("OrderCreated", "o-stdin"))
    ok(run("dlq", "replay", "5", "--event", "-", input=stdin_event))

    def applied() -> bool:
        with sessions() as session:
            rows = {row.order_id: row for row in session.scalars(select(OrderRow))}
        return (
            set(rows) == {"o-replay", "o-mismatch", "o-stdin"}
            and rows["o-replay"].status == "confirmed"
        )

    wait_for(applied, 20, "the replayed events to be applied")
    document = json.loads(ok(run("order", "show", "o-replay", "--json")).stdout)
    assert (document["customer"]["totalAmount"], document["eventCount"]) == ("99.99", 3)
    assert all(row.replayed_at is not None for row in letters(sessions))
    assert len(letters(sessions)) == 5  # nothing was dead-lettered again
    again = ok(run("dlq", "replay", "--reason", "retries_exhausted"))
    assert again.stdout.strip() == "replayed 0 dead letters of reason retries_exhausted"


# Verify and rebuild


def tamper(sessions, order_id: str, event_count: int) -> None:
    with sessions.begin() as session:
        session.execute(
            text(
                "UPDATE orders SET document = jsonb_set(document, '{eventCount}', "
                "to_jsonb(CAST(:count AS int))) WHERE order_id = :order_id"
            ),
            {"count": event_count, "order_id": order_id},
        )


def test_verify_reports_divergent_orders_and_rebuild_repairs_them(run, sessions):
    populate(sessions)
    clean = ok(run("verify"))
    assert clean.stdout.strip() == "0 divergent orders"
    assert json.loads(ok(run("verify", "--json")).stdout) == []

    tamper(sessions, "o-confirmed-1", 7)
    diverged = run("verify")
    assert diverged.exit_code == 1
    assert diverged.stdout.splitlines() == ["o-confirmed-1: eventCount", "1 divergent order"]
    as_json = run("verify", "--json")
    assert as_json.exit_code == 1
    assert json.loads(as_json.stdout) == [{"orderId": "o-confirmed-1", "fields": ["eventCount"]}]

    repaired = ok(run("rebuild", "o-confirmed-1"))
    assert repaired.stdout.strip() == "rebuilt order o-confirmed-1: status confirmed"
    assert ok(run("verify")).stdout.strip() == "0 divergent orders"

    tamper(sessions, "o-pending", 3)
    tamper(sessions, "o-rejected", 4)
    assert run("verify").exit_code == 1
    assert ok(run("rebuild")).stdout.strip() == f"rebuilt {len(ALL_ORDERS)} orders"
    assert ok(run("verify")).stdout.strip() == "0 divergent orders"
    assert [d["eventCount"] for d in stored_documents(sessions)] == [
        len(order_events(order_id)) for order_id in ALL_ORDERS
    ]
    missing = run("rebuild", "o-missing")
    assert missing.exit_code == 1 and "order 'o-missing' not found" in missing.stderr


def test_commands_refuse_a_database_schema_behind_the_code(env, use_env, server_database_url):
    name = f"orderfleet_test_empty_{uuid.uuid4().hex[:8]}"
    admin = create_engine(server_database_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        url = make_url(server_database_url).set(database=name)
        use_env({**env, "ORDERFLEET_DATABASE_URL": url.render_as_string(hide_password=False)})
        result = CliRunner().invoke(cli, ["orders", "list"])
        assert result.exit_code == 2
        assert "run `orderfleet db upgrade`" in result.stderr
    finally:
        reset_runtime()
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


# Partitions and Flower


def test_partitions_shows_the_depth_of_a_queue_nobody_consumes(run):
    from orderfleet.worker.celery_app import app

    events = [wire("LoyaltyPointsUpdated", "o-queued", n, eventId=f"e-{n}") for n in range(5)]
    publish_many(events, app=app, bulk=False)
    report = json.loads(ok(run("partitions", "--timeout", "0.5", "--json")).stdout)
    assert (report["partitions"], report["outside"]) == (8, [])
    rows = report["queues"]
    assert [row["queue"] for row in rows] == all_queues(8)
    depths = {row["queue"]: row["depth"] for row in rows}
    queue = queue_for("o-queued", 8)
    assert depths == {name: 5 if name == queue else 0 for name in all_queues(8)}
    assert {row["consumers"] for row in rows} == {0}
    assert queue in ok(run("partitions", "--timeout", "0.2")).stdout


def test_flower_refuses_to_start_without_auth_and_builds_its_argv(env, use_env, monkeypatch):
    runner = CliRunner()
    use_env(env)
    refused = runner.invoke(cli, ["flower"])
    assert refused.exit_code == 2
    assert "ORDERFLEET_FLOWER_AUTH" in refused.stderr

    use_env({**env, "ORDERFLEET_FLOWER_AUTH": "admin"})
    malformed = runner.invoke(cli, ["flower"])
    assert malformed.exit_code == 2 and "ORDERFLEET_FLOWER_AUTH" in malformed.stderr

    started: list[list[str]] = []
    app = use_env({**env, "ORDERFLEET_FLOWER_AUTH": "admin:s3cret"})
    monkeypatch.setattr(app, "start", lambda argv: started.append(argv))
    ok(runner.invoke(cli, ["flower", "--port", "5599"]))
    ok(runner.invoke(cli, ["flower", "--no-auth"]))
    assert started == [
        ["flower", "--port=5599", "--basic-auth=admin:s3cret"],
        ["flower", "--port=5555"],
    ]
    assert flower_argv(5555, None) == ["flower", "--port=5555"]
