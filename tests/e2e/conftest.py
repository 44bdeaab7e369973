from __future__ import annotations

import pytest

from tests.fleet import Fleet, fleet_env


@pytest.fixture
def fleet(broker, database_url, redis_server_url, key_prefix, sessions, tmp_path, request):
    """Real orderfleet subprocesses on the test database and a test-only Redis key prefix (the
    broker too, or, parametrized with `broker`, a RabbitMQ virtual host of the test's own)."""
    env = fleet_env(database_url, redis_server_url, key_prefix)
    if broker == "rabbitmq":
        env["ORDERFLEET_BROKER_URL"] = request.getfixturevalue("amqp_url")
    running = Fleet(env, tmp_path)
    yield running
    running.stop_all()
