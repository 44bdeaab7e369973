"""pytest plugin: a real 3-node RabbitMQ cluster on this machine (worker/dev/rabbit_cluster.py).

Registered with `pytest_plugins = ["tests.rabbit_cluster"]` (or `pytest -p tests.rabbit_cluster`).
`rabbit_cluster` is one cluster for the whole session, as booting one takes seconds;
`rabbit_vhost` is a virtual host of one test alone, and after that test every node runs again,
whatever the test stopped. Without rabbitmq-server installed the tests skip, or fail in CI.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest
from orderfleet.worker.dev.rabbit_cluster import RabbitCluster, scripts_dir

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


@pytest.fixture(scope="session")
def rabbit_cluster() -> Iterator[RabbitCluster]:
    """Three clustered RabbitMQ nodes of this test session, removed at its end."""
    if scripts_dir() is None:
        message = "rabbitmq-server is not installed: the 3-node cluster tests need it"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    with RabbitCluster() as cluster:
        yield cluster


@pytest.fixture
def rabbit_vhost(rabbit_cluster: RabbitCluster) -> Iterator[str]:
    """A fresh virtual host on the cluster; afterwards every node is started again and it goes."""
    vhost = f"orderfleet-test-{uuid.uuid4().hex[:8]}"
    rabbit_cluster.add_vhost(vhost)
    yield vhost
    rabbit_cluster.start_stopped_nodes()
    rabbit_cluster.delete_vhost(vhost)
