"""Smoke tests of the benchmark harness: short `python -m bench --quick` runs work end to end,
on Redis (RabbitMQ reported skipped, with the reason) and on RabbitMQ alone.

They assert the harness runs and writes a complete result, never how fast anything is.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from orderfleet.worker.servers import broker_url_of_redis

pytestmark = [pytest.mark.slow, pytest.mark.e2e]

ROOT = Path(__file__).resolve().parent.parent
TIMEOUT = 300  # the RabbitMQ run publishes its backlogs with confirms

DRAINS = ("unbatched", "batched", "bulk")
TOP_KEYS = {
    "machine",
    "servers",
    "config",
    "method",
    "baseline",
    *DRAINS,
    "latency",
    "producer",
    "ratio",
    "summary",
    "warnings",
}
MACHINE_KEYS = {"cores_logical", "ram_gib", "python", "celery", "kombu", "redis_py"}
MACHINE_KEYS |= {"sqlalchemy", "postgresql", "redis", "date"}
DRAIN_KEYS = ["events_per_s", "applied_events_per_s", "worker_cpu_s", "worker_peak_rss_mb"]
POSITIVE = {
    "baseline": ["messages_per_s", "worker_cpu_s", "worker_peak_rss_mb"],
    **dict.fromkeys(DRAINS, DRAIN_KEYS),
    "latency": ["rate_offered", "rate_achieved", "committed", "worker_cpu_s", "capacity"],
    "producer": ["per_event_to_raw"],
}
ROW_LABELS = ["(a) no-op", "(b1) unbatched", "(b2) batched", "(b3) bulk", "ratio to (a)"]
ROW_LABELS += ["(c) publish->commit p99", "(d) publish_many, bulk", "(d) per event / raw"]
CLOSED_AMQP_URL = "amqp://guest:guest@127.0.0.1:1"  # nothing listens on port 1
QUICK = ["--quick", "--runs=1", "--duration=3", "--bulk-duration=2", "--noop-messages=1000"]
RABBITMQ_DRAINS = ("batched", "bulk")
RABBITMQ_LABELS = ["orderfleet bench on RabbitMQ", "(a) no-op", "(b2) batched", "(b3) bulk"]
RABBITMQ_LABELS += ["ratio to (a)", "Redis columns: skipped"]


def bench_env(database_url: str, redis_url: str) -> dict[str, str]:
    """This environment pointed at the test servers (the bench makes its own db and prefix)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ORDERFLEET_")}
    env.update(
        {
            "ORDERFLEET_DATABASE_URL": database_url,
            "ORDERFLEET_REDIS_URL": redis_url,
            "ORDERFLEET_BROKER_URL": broker_url_of_redis(redis_url),
        }
    )
    return env


def run_bench(
    database_url: str, redis_url: str, tmp_path: Path, options: list[str]
) -> subprocess.CompletedProcess[str]:
    """`python -m bench` with these options, its data and JSON under tmp_path; it succeeded."""
    command = [sys.executable, "-m", "bench", *options, f"--data-dir={tmp_path / 'data'}"]
    done = subprocess.run(
        [*command, f"--output={tmp_path / 'bench.json'}"],
        cwd=ROOT,
        env=bench_env(database_url, redis_url),
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    return done


def test_quick_bench_writes_a_complete_result(
    server_database_url: str, redis_server_url: str, tmp_path: Path
) -> None:
    output = tmp_path / "bench.json"
    options = ["--rate-duration=3", "--producer-events=2000", f"--amqp-url={CLOSED_AMQP_URL}"]
    done = run_bench(server_database_url, redis_server_url, tmp_path, [*QUICK, *options])
    for label in [*ROW_LABELS, "RabbitMQ columns: skipped"]:
        assert label in done.stdout, label

    result = json.loads(output.read_text())
    assert result.keys() >= TOP_KEYS
    assert result["brokers"]["redis"]["status"] == "measured"
    assert result["brokers"]["rabbitmq"]["status"] == "skipped"
    assert "127.0.0.1:1" in result["brokers"]["rabbitmq"]["reason"]
    assert "rabbitmq" not in result
    assert result["machine"].keys() >= MACHINE_KEYS
    assert result["servers"]["source"] == "environment"
    for block, keys in POSITIVE.items():
        assert len(result[block]["runs"]) == 1
        for key in keys:
            assert result[block]["median"][key] > 0, (block, key)
    for drain in DRAINS:
        assert result[drain]["median"]["latency"]["count"] > 0, drain
        assert result["ratio"][drain]["median"] > 0, drain
    assert result["bulk"]["median"]["events_per_message"] > 1
    assert result["latency"]["median"]["latency"]["p50_ms"] > 0
    assert result["latency"]["runs"][0]["all_committed"] is True
    for mode in ("bulk", "per_event", "raw"):
        assert result["producer"]["median"][mode]["events_per_s"] > 0, mode
    assert result["summary"]["latency_rate"] > 0


def test_quick_bench_on_rabbitmq_alone(
    server_database_url: str,
    redis_server_url: str,
    amqp_server_url: str,
    amqp_url: str,
    tmp_path: Path,
) -> None:
    """`--brokers rabbitmq`: the RabbitMQ columns in a virtual host the run deletes afterwards
    (the `amqp_url` fixture makes sure rabbitmqctl works here, as the bench needs it)."""
    options = [*QUICK, "--brokers=rabbitmq", f"--amqp-url={amqp_server_url}"]
    done = run_bench(server_database_url, redis_server_url, tmp_path, options)
    for label in RABBITMQ_LABELS:
        assert label in done.stdout, label

    result = json.loads((tmp_path / "bench.json").read_text())
    assert result["brokers"]["redis"]["status"] == "skipped"
    measured = result["brokers"]["rabbitmq"]
    assert measured["status"] == "measured"
    assert "baseline" not in result and "latency" not in result
    section = result["rabbitmq"]
    assert section["baseline"]["median"]["messages_per_s"] > 0
    for drain in RABBITMQ_DRAINS:
        assert len(section[drain]["runs"]) == 1
        for key in DRAIN_KEYS:
            assert section[drain]["median"][key] > 0, (drain, key)
        assert section["ratio"][drain]["median"] > 0, drain
        assert result["summary"][f"rabbitmq_{drain}_to_baseline_ratio"] > 0, drain
    assert section["bulk"]["median"]["events_per_message"] > 1
    vhost = urlsplit(measured["url"]).path.lstrip("/")
    assert vhost.startswith("orderfleet-bench-")
    listed = subprocess.run(["rabbitmqctl", "list_vhosts"], capture_output=True, text=True)
    assert listed.returncode == 0 and vhost not in listed.stdout.split()
