"""Fixtures of the in-process integration tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
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
