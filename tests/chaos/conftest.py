from __future__ import annotations

import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from orderfleet.worker.dev import embedded

from tests.fleet import Fleet, fleet_env


@pytest.fixture
def fleet(database_url, redis_server_url, key_prefix, sessions, tmp_path):
    """Real orderfleet subprocesses on the test database and a test-only Redis key prefix."""
    env = fleet_env(database_url, redis_server_url, key_prefix, ORDERFLEET_LOG_LEVEL="WARNING")
    running = Fleet(env, tmp_path)
    yield running
    running.stop_all()


@pytest.fixture
def fleets(database_url, key_prefix, sessions, tmp_path) -> Iterator[Callable[..., Fleet]]:
    """Make fleets on the test database and key prefix; every process stopped afterwards."""
    made: list[Fleet] = []

    def make(redis_url: str, **extra: str) -> Fleet:
        fleet = Fleet(fleet_env(database_url, redis_url, key_prefix, **extra), tmp_path / "logs")
        made.append(fleet)
        return fleet

    yield make
    for fleet in made:
        fleet.stop_all()


@pytest.fixture
def producers() -> Iterator[list[subprocess.Popen]]:
    """The test's simulate subprocesses; any still running at the end are killed."""
    running: list[subprocess.Popen] = []
    yield running
    for process in running:
        if process.poll() is None:
            process.kill()
            process.wait(10)


@pytest.fixture
def own_redis(tmp_path) -> Iterator[Path]:
    """A dedicated embedded Redis with its AOF, for a test that restarts it."""
    data = tmp_path / "redis-data"
    embedded.ensure_redis(data)
    yield data
    embedded.stop(data)
