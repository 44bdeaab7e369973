from __future__ import annotations

import pytest

from tests.fleet import Fleet, fleet_env


@pytest.fixture
def fleet(database_url, redis_server_url, key_prefix, sessions, tmp_path):
    """Real orderfleet subprocesses on the test database and a test-only Redis key prefix."""
    env = fleet_env(database_url, redis_server_url, key_prefix, ORDERFLEET_LOG_LEVEL="WARNING")
    running = Fleet(env, tmp_path)
    yield running
    running.stop_all()
