"""Smoke test of the benchmark harness: a short `python -m bench --quick` run works end to end.

It asserts the harness runs and writes a complete result, never how fast anything is.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from orderfleet.worker.servers import broker_url_of_redis

pytestmark = [pytest.mark.slow, pytest.mark.e2e]

ROOT = Path(__file__).resolve().parent.parent
TIMEOUT = 180

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


def test_quick_bench_writes_a_complete_result(
    server_database_url: str, redis_server_url: str, tmp_path: Path
) -> None:
    output = tmp_path / "bench.json"
    command = [
        sys.executable,
        "-m",
        "bench",
        "--quick",
        "--runs=1",
        "--duration=3",
        "--bulk-duration=2",
        "--rate-duration=3",
        "--noop-messages=1000",
        "--producer-events=2000",
        f"--data-dir={tmp_path / 'data'}",
        f"--output={output}",
    ]
    done = subprocess.run(
        command,
        cwd=ROOT,
        env=bench_env(server_database_url, redis_server_url),
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    for label in ROW_LABELS:
        assert label in done.stdout, label

    result = json.loads(output.read_text())
    assert result.keys() >= TOP_KEYS
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
