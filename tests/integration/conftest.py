"""Fixtures of the in-process integration tests."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from kombu import Connection
from kombu import transport as kombu_transports
from orderfleet.worker import transport
from orderfleet.worker.dev import embedded
from orderfleet.worker.runtime import Runtime, reset_runtime
from orderfleet.worker.settings import load_settings

from tests.fleet import fleet_env


@pytest.fixture
def runtime(database_url, redis_server_url, key_prefix, sessions) -> Iterator[Runtime]:
    """The process runtime on the test database and a test-only key prefix."""
    runtime = Runtime(load_settings(fleet_env(database_url, redis_server_url, key_prefix)))
    reset_runtime(runtime)
    yield runtime
    reset_runtime(None)
    runtime.close()


@pytest.fixture
def redis_dir(tmp_path: Path) -> Iterator[Path]:
    """A dedicated embedded Redis (with its AOF), for a test that stops or restarts it."""
    path = tmp_path / "data"
    embedded.ensure_redis(path)
    yield path
    embedded.stop(path)


@pytest.fixture
def restart_redis(redis_dir: Path) -> Iterator[Callable[[float], threading.Timer]]:
    """Start the dedicated Redis again after some seconds. Every such timer is done or cancelled
    before that Redis is stopped: one that fired after a failed test's teardown started a
    server nobody stopped."""
    timers: list[threading.Timer] = []

    def after(seconds: float) -> threading.Timer:
        timer = threading.Timer(seconds, embedded.ensure_redis, args=(redis_dir,))
        timers.append(timer)
        timer.start()
        return timer

    yield after
    for timer in timers:
        timer.cancel()
        timer.join()


@pytest.fixture
def worker_connection(redis_dir: Path, monkeypatch) -> Iterator[Connection]:
    """A broker connection to it through orderfleet's Redis transport, as a worker installs it."""
    aliases = dict(kombu_transports.TRANSPORT_ALIASES)
    monkeypatch.setattr(kombu_transports, "TRANSPORT_ALIASES", aliases)
    monkeypatch.setattr(kombu_transports, "_transport_cache", {})
    transport.install()
    with Connection(embedded.broker_url(redis_dir)) as conn:
        assert isinstance(conn.default_channel, transport.Channel)
        yield conn
