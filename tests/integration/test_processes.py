"""The one process supervisor of the demo, the bench and the tests (worker/dev/processes.py)."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator

import pytest
from orderfleet.worker.dev.processes import FleetProcess, Supervisor

pytestmark = pytest.mark.integration

IGNORES_TERM = "trap '' TERM; touch \"$ORDERFLEET_READY_FILE\"; while :; do sleep 0.05; done"
ENDS_ON_TERM = "trap 'exit 0' TERM; touch \"$ORDERFLEET_READY_FILE\"; while :; do sleep 0.05; done"


def shell(name: str, script: str, log_dir) -> FleetProcess:
    return FleetProcess(name, ["-c", script], dict(os.environ), log_dir, command=["sh"])


@pytest.fixture
def supervisor() -> Iterator[Supervisor]:
    """A supervisor whose processes are stopped after the test, whatever it asserted."""
    made = Supervisor(stop_timeout=1.0)
    yield made
    made.stop_all()


def test_stop_all_ends_every_process_together_killing_what_ignores_sigterm(supervisor, tmp_path):
    polite, stubborn = supervisor.start_ready(
        [shell("polite", ENDS_ON_TERM, tmp_path), shell("stubborn", IGNORES_TERM, tmp_path)]
    )
    began = time.monotonic()
    supervisor.stop_all()
    assert time.monotonic() - began < 5
    assert not polite.alive() and not stubborn.alive()
    assert polite.popen.returncode == 0
    assert stubborn.popen.returncode == -9
    assert supervisor.processes == []


def test_stop_forgets_only_the_processes_stopped(supervisor, tmp_path):
    first, second = supervisor.start_ready(
        [shell("first", ENDS_ON_TERM, tmp_path), shell("second", ENDS_ON_TERM, tmp_path)]
    )
    supervisor.stop([first])
    assert supervisor.processes == [second] and second.alive() and not first.alive()
    supervisor.kill([second])
    assert supervisor.processes == [] and not second.alive()
