"""docker-compose.yml and Procfile name real CLI commands and cover every partition exactly once."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from orderfleet.worker.cli import cli
from orderfleet.worker.routing import covers_exactly_once, parse_partitions, partitions_of_member
from typer.testing import CliRunner

ROOT = Path(__file__).resolve().parents[1]
COMPOSE = ROOT / "docker-compose.yml"
PROCFILE = ROOT / "Procfile"
ORDERFLEET_SERVICES = ("migrate", "worker-a", "worker-b", "decisions", "beat", "flower")
_DEFAULTED = re.compile(r"\$\{(\w+):-([^}]*)\}")


def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())


def services() -> dict[str, Any]:
    return compose()["services"]


def procfile() -> dict[str, str]:
    """Process type -> command line."""
    lines = [line for line in PROCFILE.read_text().splitlines() if line.strip()]
    return dict(line.split(":", 1) for line in lines)


def expand(command: str, env: dict[str, str] | None = None) -> list[str]:
    """A Procfile command's argv, with ${VAR:-default} taken from env or its default."""
    env = env or {}
    return shlex.split(_DEFAULTED.sub(lambda m: env.get(m[1], m[2]), command))


def argv_of(service: dict[str, Any]) -> list[str]:
    command = service["command"]
    return command if isinstance(command, list) else shlex.split(command)


def assert_real_command(argv: list[str]) -> None:
    """The argv is an `orderfleet` command whose name and options the CLI knows."""
    assert argv[0] == "orderfleet", argv
    result = CliRunner().invoke(cli, [*argv[1:], "--help"])
    assert result.exit_code == 0, f"{shlex.join(argv)}: {result.output}"
    assert "Usage:" in result.output


def worker_ranges(argvs: list[list[str]], partitions: int) -> list[list[int]]:
    """The partitions each partition worker consumes (--partitions or --index/--of)."""
    ranges = []
    for argv in argvs:
        if argv[1] != "worker" or "--decisions" in argv:
            continue
        options = dict(zip(argv[2::2], argv[3::2], strict=True))
        if "--partitions" in options:
            ranges.append(parse_partitions(options["--partitions"], partitions))
        else:
            index, of = int(options["--index"]), int(options["--of"])
            ranges.append(partitions_of_member(index, of, partitions))
    return ranges


# --------------------------------------------------------------------------- docker-compose.yml


def test_compose_has_the_services_of_the_design():
    assert {"redis", "postgres", *ORDERFLEET_SERVICES} <= set(services())


@pytest.mark.parametrize("name", ORDERFLEET_SERVICES)
def test_compose_command_is_a_real_cli_command(name):
    assert_real_command(argv_of(services()[name]))


def test_compose_partition_workers_cover_every_partition_exactly_once():
    env = compose()["x-orderfleet-env"]
    partitions = int(env["ORDERFLEET_PARTITIONS"])
    argvs = [argv_of(s) for s in services().values() if "command" in s]
    argvs = [a for a in argvs if a[0] == "orderfleet"]
    ranges = worker_ranges(argvs, partitions)
    assert len(ranges) >= 2
    assert covers_exactly_once(ranges, partitions), ranges


def test_compose_orderfleet_services_share_one_image_and_the_orderfleet_env():
    env = compose()["x-orderfleet-env"]
    for name in ORDERFLEET_SERVICES:
        service = services()[name]
        assert service["image"] == "orderfleet:latest"
        assert service["build"] == "."
        assert env.items() <= service["environment"].items(), name
        assert all(key.startswith("ORDERFLEET_") for key in service["environment"]), name


def test_compose_redis_has_append_only_file_on_a_volume():
    redis = services()["redis"]
    command = " ".join(argv_of(redis))
    assert "--appendonly yes" in command
    assert "--appendfsync everysec" in command
    assert any(v.endswith(":/data") for v in redis["volumes"])


def test_compose_postgres_has_a_healthcheck_and_a_volume():
    postgres = services()["postgres"]
    assert "pg_isready" in " ".join(postgres["healthcheck"]["test"])
    assert any(v.endswith(":/var/lib/postgresql/data") for v in postgres["volumes"])
    named = {v.split(":")[0] for v in postgres["volumes"]}
    assert named <= set(compose()["volumes"])


def test_compose_workers_wait_for_the_migration():
    for name in ("worker-a", "worker-b", "decisions", "beat", "flower"):
        depends = services()[name]["depends_on"]
        assert depends["migrate"]["condition"] == "service_completed_successfully", name
    assert services()["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"


def test_docker_compose_config_accepts_the_file():
    docker = shutil.which("docker")
    if docker is None:
        pytest.skip("docker is not on PATH")
    try:
        probe = subprocess.run(
            [docker, "compose", "version"], capture_output=True, text=True, timeout=20
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        pytest.skip(f"docker compose does not answer: {exc}")
    if probe.returncode != 0:
        why = (probe.stderr or probe.stdout or "?").strip().splitlines()[0]
        pytest.skip(f"no docker compose plugin: {why[:200]}")
    env = {**os.environ, "ORDERFLEET_FLOWER_AUTH": "user:password"}
    result = subprocess.run(
        [docker, "compose", "-f", str(COMPOSE), "config", "--quiet"],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr


# --------------------------------------------------------------------------- Procfile


def test_procfile_has_the_process_types_of_the_design():
    assert {"worker", "decisions", "beat", "flower"} <= set(procfile())


@pytest.mark.parametrize("kind", ["release", "worker", "decisions", "beat", "flower"])
def test_procfile_command_is_a_real_cli_command(kind):
    assert_real_command(expand(procfile()[kind]))


@pytest.mark.parametrize("count", [1, 2, 3, 4, 16])
def test_procfile_workers_scaled_to_n_cover_every_partition_exactly_once(count):
    partitions = 16
    command = procfile()["worker"]
    argvs = [
        expand(command, {"WORKER_INDEX": str(i), "WORKER_COUNT": str(count)}) for i in range(count)
    ]
    assert covers_exactly_once(worker_ranges(argvs, partitions), partitions)


def test_procfile_defaults_run_one_worker_on_every_partition():
    argv = expand(procfile()["worker"])
    assert covers_exactly_once(worker_ranges([argv], 16), 16)
