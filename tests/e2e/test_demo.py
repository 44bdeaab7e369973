"""`orderfleet demo` end to end: embedded servers, a real fleet, a verified summary, no orphans."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
TIMEOUT = 240


def demo_env(data_dir: Path) -> dict[str, str]:
    """No ORDERFLEET_* URL (so: embedded servers), a private data dir, the project importable."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ORDERFLEET_")}
    env["ORDERFLEET_DATA_DIR"] = str(data_dir)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    return env


def belongs_to(proc: psutil.Process, places: list[str]) -> bool:
    """Whether a live process runs in, names, or was configured with one of the places."""
    try:
        if proc.status() == psutil.STATUS_ZOMBIE:
            return False  # exited; pid 1 here does not reap
        cwd = proc.cwd()
        cmdline = " ".join(proc.cmdline())
        environ = proc.environ().get("ORDERFLEET_DATA_DIR", "")
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return False
    return any(
        cwd.startswith(place) or place in cmdline or environ.startswith(place) for place in places
    )


def leftovers(places: list[str]) -> list[str]:
    me = os.getpid()
    return [
        f"{p.pid} {' '.join(p.cmdline())[:120]}"
        for p in psutil.process_iter()
        if p.pid != me and belongs_to(p, places)
    ]


def stop_embedded(data_dir: Path) -> None:
    from orderfleet.worker.dev import embedded

    embedded.stop(data_dir)


def test_demo_runs_a_fleet_on_embedded_servers_verifies_and_leaves_nothing_running(tmp_path):
    data_dir, workdir = tmp_path / "data", tmp_path / "cwd"
    workdir.mkdir()
    try:
        result = subprocess.run(
            [sys.executable, "-m", "orderfleet.worker", "demo", "--orders", "150"],
            cwd=workdir,
            env={**demo_env(data_dir), "COLUMNS": "120"},
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
        )
        output = result.stdout + result.stderr
        assert result.returncode == 0, output[-4000:]
        assert "0 divergent orders" in output, output[-4000:]
        assert "150 orders by status and decision" in output
        assert "stopped embedded redis, postgres" in output
        deadline = time.monotonic() + 10
        while leftovers([str(data_dir), str(workdir)]) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert leftovers([str(data_dir), str(workdir)]) == []
    finally:
        stop_embedded(data_dir)
