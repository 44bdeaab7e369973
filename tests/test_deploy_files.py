"""The docker-compose files and the Procfile name real CLI commands and cover every partition.

Coverage rule: active partition workers cover every partition exactly once. On RabbitMQ (each
partition queue has single-active-consumer) a service whose name ends in `-standby` may repeat
an active worker's range: it waits as a hot standby. The Redis file has no standbys.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml
from orderfleet.worker.cli import cli
from orderfleet.worker.routing import covers_exactly_once, parse_partitions, partitions_of_member
from typer.testing import CliRunner

ROOT = Path(__file__).resolve().parents[1]
COMPOSE = ROOT / "docker-compose.yml"
COMPOSE_RABBITMQ = ROOT / "docker-compose.rabbitmq.yml"
PROCFILE = ROOT / "Procfile"
VARIANTS = {"redis": (COMPOSE,), "rabbitmq": (COMPOSE, COMPOSE_RABBITMQ)}
_BASE_SERVICES = ("migrate", "worker-a", "worker-b", "decisions", "beat", "flower")
ORDERFLEET_SERVICES = {
    "redis": _BASE_SERVICES,
    "rabbitmq": (*_BASE_SERVICES, "worker-a-standby"),
}
STANDBY_SUFFIX = "-standby"
_REPLACED_SEQUENCES = {"command", "entrypoint", "test"}
_DEFAULTED = re.compile(r"\$\{(\w+):-([^}]*)\}")


def merge(base: Any, override: Any, key: str = "") -> Any:
    """Compose's merge of an override onto a base: mappings key by key, sequences appended.

    command, entrypoint and healthcheck test are replaced, as Compose does.
    """
    if isinstance(base, dict) and isinstance(override, dict):
        both = {k: merge(base[k], v, k) for k, v in override.items() if k in base}
        return {**base, **override, **both}
    if isinstance(base, list) and isinstance(override, list) and key not in _REPLACED_SEQUENCES:
        return base + override
    return override


def compose(variant: str) -> dict[str, Any]:
    """The variant's Compose model: its files merged in order."""
    model: dict[str, Any] = {}
    for path in VARIANTS[variant]:
        model = merge(model, yaml.safe_load(path.read_text()))
    return model


def services(variant: str) -> dict[str, Any]:
    return compose(variant)["services"]


def partitions_of(variant: str) -> int:
    return int(compose(variant)["x-orderfleet-env"]["ORDERFLEET_PARTITIONS"])


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


def partition_workers(variant: str) -> dict[str, list[int]]:
    """Service name -> the partitions it consumes, for every partition worker service."""
    argvs = {name: argv_of(s) for name, s in services(variant).items() if "command" in s}
    return {
        name: ranges[0]
        for name, argv in argvs.items()
        if argv[0] == "orderfleet" and (ranges := worker_ranges([argv], partitions_of(variant)))
    }


def actives(workers: dict[str, list[int]]) -> list[list[int]]:
    return [r for name, r in workers.items() if not name.endswith(STANDBY_SUFFIX)]


def fleet_is_covered(
    workers: dict[str, list[int]], partitions: int, *, standbys_allowed: bool
) -> bool:
    """Actives cover each partition exactly once; each standby repeats an active's range."""
    standbys = [r for name, r in workers.items() if name.endswith(STANDBY_SUFFIX)]
    if standbys and not standbys_allowed:
        return False
    active = actives(workers)
    return covers_exactly_once(active, partitions) and all(r in active for r in standbys)


# --------------------------------------------------------------------------- docker-compose files


def test_merge_follows_compose_for_mappings_commands_and_other_sequences():
    base = {"s": {"command": ["a"], "ports": ["1:1"], "environment": {"A": "1", "B": "2"}}}
    override = {"s": {"command": ["b"], "ports": ["2:2"], "environment": {"B": "3"}}, "t": {}}
    assert merge(base, override) == {
        "s": {"command": ["b"], "ports": ["1:1", "2:2"], "environment": {"A": "1", "B": "3"}},
        "t": {},
    }


@pytest.mark.parametrize("variant", VARIANTS)
def test_compose_has_the_services_of_the_design(variant):
    assert {"redis", "postgres", *ORDERFLEET_SERVICES[variant]} <= set(services(variant))


@pytest.mark.parametrize("variant", VARIANTS)
def test_compose_runs_the_orderfleet_image_only_in_the_orderfleet_services(variant):
    named = {n for n, s in services(variant).items() if s.get("image") == "orderfleet:latest"}
    assert named == set(ORDERFLEET_SERVICES[variant])


@pytest.mark.parametrize(
    ("variant", "name"), [(v, n) for v, names in ORDERFLEET_SERVICES.items() for n in names]
)
def test_compose_command_is_a_real_cli_command(variant, name):
    assert_real_command(argv_of(services(variant)[name]))


@pytest.mark.parametrize("variant", VARIANTS)
def test_compose_partition_workers_cover_every_partition_exactly_once(variant):
    workers = partition_workers(variant)
    assert len(actives(workers)) >= 2
    assert fleet_is_covered(workers, partitions_of(variant), standbys_allowed=variant != "redis")


def test_compose_rabbitmq_variant_runs_a_standby_of_worker_a():
    workers = partition_workers("rabbitmq")
    assert workers["worker-a-standby"] == workers["worker-a"]
    assert not any(name.endswith(STANDBY_SUFFIX) for name in partition_workers("redis"))


@pytest.mark.parametrize(
    ("workers", "standbys_allowed", "covered"),
    [
        ({"a": [0, 1], "b": [2, 3]}, False, True),
        ({"a": [0, 1], "b": [2, 3], "a-standby": [0, 1]}, True, True),
        ({"a": [0, 1], "b": [2, 3], "a-standby": [0, 1]}, False, False),
        ({"a": [0, 1], "b": [2, 3], "c": [0, 1]}, True, False),
        ({"a": [0, 1], "b": [2, 3], "a-standby": [0]}, True, False),
        ({"a": [0, 1], "a-standby": [2, 3]}, True, False),
    ],
)
def test_coverage_rule_allows_repeated_ranges_only_as_standbys(workers, standbys_allowed, covered):
    assert fleet_is_covered(workers, 4, standbys_allowed=standbys_allowed) is covered


@pytest.mark.parametrize("variant", VARIANTS)
def test_compose_orderfleet_services_share_one_image_and_the_orderfleet_env(variant):
    env = compose(variant)["x-orderfleet-env"]
    for name in ORDERFLEET_SERVICES[variant]:
        service = services(variant)[name]
        assert service["image"] == "orderfleet:latest"
        assert service["build"] == "."
        assert env.items() <= service["environment"].items(), name
        assert all(key.startswith("ORDERFLEET_") for key in service["environment"]), name


@pytest.mark.parametrize("variant", VARIANTS)
def test_compose_redis_has_append_only_file_on_a_volume(variant):
    redis = services(variant)["redis"]
    command = " ".join(argv_of(redis))
    assert "--appendonly yes" in command
    assert "--appendfsync everysec" in command
    assert any(v.endswith(":/data") for v in redis["volumes"])


@pytest.mark.parametrize("variant", VARIANTS)
def test_compose_postgres_has_a_healthcheck_and_a_volume(variant):
    postgres = services(variant)["postgres"]
    assert "pg_isready" in " ".join(postgres["healthcheck"]["test"])
    assert any(v.endswith(":/var/lib/postgresql/data") for v in postgres["volumes"])
    named = {v.split(":")[0] for v in postgres["volumes"]}
    assert named <= set(compose(variant)["volumes"])


@pytest.mark.parametrize("variant", VARIANTS)
def test_compose_workers_wait_for_redis_and_the_migration(variant):
    for name in set(ORDERFLEET_SERVICES[variant]) - {"migrate"}:
        depends = services(variant)[name]["depends_on"]
        assert depends["migrate"]["condition"] == "service_completed_successfully", name
        assert depends["redis"]["condition"] == "service_healthy", name
    assert services(variant)["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"


def test_compose_rabbitmq_has_the_management_ui_a_healthcheck_and_a_volume():
    rabbitmq = services("rabbitmq")["rabbitmq"]
    assert "management" in rabbitmq["image"]
    assert rabbitmq["ports"] == ["127.0.0.1:15672:15672"]  # the UI; AMQP stays internal
    assert "rabbitmq-diagnostics -q ping" in " ".join(rabbitmq["healthcheck"]["test"])
    assert any(v.endswith(":/var/lib/rabbitmq") for v in rabbitmq["volumes"])
    named = {v.split(":")[0] for v in rabbitmq["volumes"]}
    assert named <= set(compose("rabbitmq")["volumes"])
    assert rabbitmq["hostname"] == "rabbitmq"


def test_compose_rabbitmq_variant_brokers_on_rabbitmq_and_locks_in_redis():
    rabbitmq = services("rabbitmq")["rabbitmq"]["environment"]
    for name in ORDERFLEET_SERVICES["rabbitmq"]:
        env = services("rabbitmq")[name]["environment"]
        broker = urlsplit(env["ORDERFLEET_BROKER_URL"])
        assert (broker.scheme, broker.hostname, broker.port, broker.path) == (
            "amqp",
            "rabbitmq",
            5672,
            "//",
        ), name
        assert broker.username == rabbitmq["RABBITMQ_DEFAULT_USER"], name
        assert broker.password == rabbitmq["RABBITMQ_DEFAULT_PASS"], name
        assert env["ORDERFLEET_REDIS_URL"] == "redis://redis:6379/0", name


def test_compose_rabbitmq_variant_workers_wait_for_a_healthy_rabbitmq():
    for name in set(ORDERFLEET_SERVICES["rabbitmq"]) - {"migrate"}:
        depends = services("rabbitmq")[name]["depends_on"]
        assert depends["rabbitmq"]["condition"] == "service_healthy", name


@pytest.mark.parametrize("variant", VARIANTS)
def test_docker_compose_config_accepts_the_files(variant):
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
    files = [arg for path in VARIANTS[variant] for arg in ("-f", str(path))]
    result = subprocess.run(
        [docker, "compose", *files, "config", "--quiet"],
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
