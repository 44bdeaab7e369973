"""Shared fixtures: real PostgreSQL, Redis and RabbitMQ, isolated per test run and cleaned up.

The machine's servers when ORDERFLEET_TEST_DATABASE_URL / ORDERFLEET_TEST_REDIS_URL are set
(.ci/run sets them), else embedded ones from PyPI. RabbitMQ is the machine's, at
ORDERFLEET_TEST_AMQP_URL (default amqp://guest:guest@127.0.0.1:5672), each test in a virtual
host of its own. A missing service fails loudly in CI.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from kombu import Connection
from orderfleet.worker.db import driver_url, make_engine, session_factory
from orderfleet.worker.dev import scratch
from orderfleet.worker.dev.lifeline import lifeline
from sqlalchemy import text

pytest_plugins = ["tests.rabbit_cluster"]  # the 3-node RabbitMQ cluster fixture

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
RUN_ID = scratch.unique_id()
AMQP_URL = os.environ.get("ORDERFLEET_TEST_AMQP_URL") or "amqp://guest:guest@127.0.0.1:5672"
KEEP_TMP = os.environ.get("ORDERFLEET_TEST_KEEP_TMP", "") == "1"  # logs of a failure, for a look


def unavailable(what: str, why: object) -> None:
    """Raise in CI, skip elsewhere (a developer may lack a service)."""
    message = f"{what} is not available: {why}"
    if IN_CI:
        raise RuntimeError(message)
    pytest.skip(message)


@pytest.fixture
def tmp_path() -> Iterator[Path]:
    """A per-test directory outside pytest's base directory.

    The embedded PostgreSQL runs as its own user and must traverse the path to its data; pytest
    resets its base directory to mode 0700 whenever another pytest session starts.
    """
    path = Path(tempfile.mkdtemp(prefix=f"orderfleet-test-{RUN_ID}-"))
    lifeline.guard_data_dir(path)  # a test's embedded servers end with the run, however it ends
    yield path
    if not KEEP_TMP:
        shutil.rmtree(path, ignore_errors=True)
    lifeline.release_data_dir(path)


@pytest.fixture(scope="session")
def embedded_dir() -> Iterator[Path]:
    """A data dir for embedded servers, stopped at the end of the run."""
    path = Path(tempfile.mkdtemp(prefix=f"orderfleet-embedded-{RUN_ID}-"))
    lifeline.guard_data_dir(path)
    yield path
    from orderfleet.worker.dev import embedded

    embedded.stop(path)
    shutil.rmtree(path, ignore_errors=True)
    lifeline.release_data_dir(path)


@pytest.fixture(scope="session")
def server_database_url(request: pytest.FixtureRequest) -> str:
    url = os.environ.get("ORDERFLEET_TEST_DATABASE_URL")
    if url:
        return driver_url(url)
    try:
        from orderfleet.worker.dev import embedded

        return embedded.ensure_postgres(request.getfixturevalue("embedded_dir"))
    except Exception as exc:
        unavailable("PostgreSQL", exc)
        raise


@pytest.fixture(scope="session")
def database_url(server_database_url: str) -> Iterator[str]:
    """A fresh database with the schema migrated, dropped after the run."""
    try:
        with scratch.fresh_database(server_database_url, f"orderfleet_test_{RUN_ID}") as url:
            yield url
    except scratch.DatabaseUnavailable as exc:
        unavailable("PostgreSQL", exc)


@pytest.fixture(scope="session")
def engine(database_url: str):
    engine = make_engine(database_url)
    yield engine
    engine.dispose()


@pytest.fixture
def sessions(engine):
    """A session factory on a database emptied before the test."""
    with engine.begin() as conn:
        conn.execute(
            text(
                "TRUNCATE orders, order_events, decision_outbox, decision_deliveries, "
                "dead_letters, message_ledger RESTART IDENTITY"
            )
        )
    return session_factory(engine)


@pytest.fixture(scope="session")
def redis_server_url(request: pytest.FixtureRequest) -> str:
    url = os.environ.get("ORDERFLEET_TEST_REDIS_URL")
    if not url:
        try:
            from orderfleet.worker.dev import embedded

            url = embedded.ensure_redis(request.getfixturevalue("embedded_dir"))
        except Exception as exc:
            unavailable("Redis", exc)
    try:
        redis.Redis.from_url(url).ping()
    except redis.RedisError as exc:
        unavailable("Redis", exc)
    return url


@pytest.fixture
def key_prefix(redis_server_url: str) -> Iterator[str]:
    """A Redis key prefix of this test alone; its keys are deleted afterwards."""
    prefix = f"orderfleet-test:{RUN_ID}:{scratch.unique_id(8)}:"
    with scratch.fresh_prefix(redis_server_url, prefix):
        yield prefix


@pytest.fixture(scope="session")
def amqp_server_url() -> str:
    """The machine's RabbitMQ (its default virtual host answers)."""
    try:
        with Connection(AMQP_URL, connect_timeout=5) as conn:
            conn.ensure_connection(max_retries=1)
    except Exception as exc:
        unavailable("RabbitMQ", exc)
    return AMQP_URL


@pytest.fixture
def amqp_url(amqp_server_url: str) -> Iterator[str]:
    """A RabbitMQ virtual host of this test alone (its URL), deleted with its queues afterwards."""
    name = f"orderfleet-test-{RUN_ID}-{scratch.unique_id(8)}"
    try:
        with scratch.fresh_vhost(amqp_server_url, name) as url:
            yield url
    except scratch.RabbitMQUnavailable as exc:
        unavailable("RabbitMQ (rabbitmqctl)", exc)


@pytest.fixture
def broker(request: pytest.FixtureRequest) -> str:
    """The fleet's broker: "redis", unless a test is parametrized with it (`both_brokers`)."""
    return getattr(request, "param", "redis")
