"""Embedded servers only by choice, refusals that name the variable, no leaked processes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
from orderfleet.worker.dev.lifeline import guarded_popen
from orderfleet.worker.dev.scratch import RabbitMQUnavailable, rabbitmqctl
from orderfleet.worker.servers import broker_url_of_redis

from tests.fleet import ORDERFLEET

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
GONE_WITHIN = 10.0


def clean_env(**settings: str) -> dict[str, str]:
    """This environment without any ORDERFLEET_* variable, plus `settings`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ORDERFLEET_")}
    return {**env, **settings}


def processes_naming(path: Path) -> list[psutil.Process]:
    """Live processes whose command line or working directory is under path."""
    found = []
    for proc in psutil.process_iter(["cmdline", "cwd"]):
        cmdline = " ".join(proc.info["cmdline"] or [])
        if str(path) in cmdline or (proc.info["cwd"] or "").startswith(str(path)):
            found.append(proc)
    return [p for p in found if p.pid != os.getpid()]


def run(args: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=60)


# --------------------------------------------------------------------------- refusals


def test_worker_with_a_broker_but_no_database_refuses_and_leaves_nothing(
    redis_server_url, tmp_path
):
    """A forgotten ORDERFLEET_DATABASE_URL is an error, never a private PostgreSQL."""
    env = clean_env(ORDERFLEET_BROKER_URL=broker_url_of_redis(redis_server_url))
    done = run([*ORDERFLEET, "worker", "--partitions", "0-1"], tmp_path, env)
    assert done.returncode == 2, done.stderr
    assert "ORDERFLEET_DATABASE_URL is not set, but ORDERFLEET_BROKER_URL is set" in done.stderr
    assert list(tmp_path.iterdir()) == []
    assert processes_naming(tmp_path) == []


def test_plain_celery_worker_with_nothing_set_refuses_naming_the_variables(tmp_path):
    """`celery -A orderfleet.worker worker` runs the same rule: no URL, no start."""
    done = run(
        [sys.executable, "-m", "celery", "-A", "orderfleet.worker", "worker", "-P", "solo"],
        tmp_path,
        clean_env(),
    )
    assert done.returncode == 2, done.stderr
    assert (
        "ORDERFLEET_BROKER_URL, ORDERFLEET_REDIS_URL, ORDERFLEET_DATABASE_URL are not set"
        in done.stderr
    )
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "command",
    [
        ["orders", "list"],
        ["order", "show", "o-1"],
        ["dlq", "list"],
        ["verify"],
        ["partitions"],
    ],
)
def test_read_only_commands_in_an_empty_folder_start_no_server(command, tmp_path):
    """Read-only commands use embedded servers that run; with none running they refuse."""
    done = run([*ORDERFLEET, *command], tmp_path, clean_env())
    assert done.returncode == 2, done.stdout + done.stderr
    assert "this command starts no server" in done.stderr
    assert "is not set and no embedded" in done.stderr
    assert not (tmp_path / ".orderfleet").exists()
    assert processes_naming(tmp_path) == []


def test_celery_in_another_folder_finds_no_orderfleet_configuration(tmp_path):
    """Installed, orderfleet claims no top-level `celeryconfig` (nor tasks, models, worker)."""
    code = (
        "import importlib.util as u; "
        "print([n for n in ('celeryconfig', 'tasks', 'models', 'worker') if u.find_spec(n)])"
    )
    done = run([sys.executable, "-c", code], tmp_path, clean_env())
    assert done.stdout.strip() == "[]", done.stderr


def test_the_repository_celeryconfig_is_no_plain_celeryconfig():
    """Even in the repository root, Celery's default `celeryconfig` lookup gets nothing."""
    done = run([sys.executable, "-c", "import celeryconfig"], ROOT, clean_env())
    assert done.returncode == 1
    assert "ImportError: this is orderfleet.celeryconfig" in done.stderr


# --------------------------------------------------------------------------- no leaked processes


@pytest.fixture
def parent_dir(tmp_path) -> Iterator[Path]:
    yield tmp_path
    for proc in processes_naming(tmp_path):  # only if the test failed: leave nothing behind
        proc.kill()


@pytest.mark.parametrize(
    "parent",
    [
        pytest.param(
            [sys.executable, "-m", "bench", "--quick", "--duration=60"],
            id="bench",
        ),
        pytest.param([*ORDERFLEET, "demo", "--orders", "200000"], id="demo"),
    ],
)
def test_sigkill_of_a_parent_takes_its_workers_and_servers_with_it(parent, parent_dir):
    """A bench or demo killed with SIGKILL leaves no worker, no embedded server and no RabbitMQ
    virtual host of its own behind."""
    vhosts_before = bench_vhosts()
    data_dir = parent_dir / "data"
    args = [*parent, *(["--data-dir", str(data_dir)] if "bench" in parent else [])]
    env = clean_env(ORDERFLEET_DATA_DIR=str(data_dir), ORDERFLEET_PARTITIONS="4")
    log = (parent_dir / "parent.log").open("wb")
    starter = guarded_popen(args, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    started = wait_for_fleet(starter, data_dir)
    os.kill(starter.pid, signal.SIGKILL)
    starter.wait(10)
    deadline = time.monotonic() + GONE_WITHIN
    while time.monotonic() < deadline and any(p.is_running() for p in started):
        time.sleep(0.1)
    left = [f"{p.pid} {' '.join(p.cmdline())}" for p in started if alive(p)]
    assert left == [], (parent_dir / "parent.log").read_text()[-3000:]
    while time.monotonic() < deadline and bench_vhosts() - vhosts_before:
        time.sleep(0.2)
    assert bench_vhosts() - vhosts_before == set()


def bench_vhosts() -> set[str]:
    """The bench's RabbitMQ virtual hosts on this machine (none without rabbitmqctl)."""
    try:
        listed = rabbitmqctl(["list_vhosts", "--quiet"])
    except RabbitMQUnavailable:
        return set()
    return {name for name in listed.split() if name.startswith("orderfleet-bench-")}


def wait_for_fleet(starter: subprocess.Popen, data_dir: Path) -> list[psutil.Process]:
    """Wait until the starter runs two or more workers and both embedded servers; them all."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and starter.poll() is None:
        children = psutil.Process(starter.pid).children()
        workers = [c for c in children if "worker" in " ".join(safe_cmdline(c))]
        servers = [p for p in processes_naming(data_dir) if p.pid != starter.pid]
        server_kinds = {"redis" if "redis" in p.name() else "postgres" for p in servers}
        if len(workers) >= 2 and server_kinds == {"redis", "postgres"}:
            time.sleep(1.0)  # a moment of work, then the kill
            return workers + servers
        time.sleep(0.2)
    raise AssertionError(f"no fleet appeared (exit {starter.poll()})")


def safe_cmdline(proc: psutil.Process) -> list[str]:
    try:
        return proc.cmdline()
    except psutil.Error:
        return []


def alive(proc: psutil.Process) -> bool:
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False
