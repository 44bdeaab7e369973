"""Test support: a fleet of real worker subprocesses on the test's servers and key prefix."""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import pytest
import redis
from orderfleet.models.tables import DeadLetterRow, EventRow
from orderfleet.worker.dev import scratch
from orderfleet.worker.dev.processes import FleetProcess, Supervisor
from orderfleet.worker.servers import broker_url_of_redis
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

ORDERFLEET = [sys.executable, "-m", "orderfleet.worker"]  # the `orderfleet` command
# A fleet test run on each broker: the machine's Redis, and RabbitMQ (a virtual host of its own).
both_brokers = pytest.mark.parametrize("broker", ["redis", "rabbitmq"], indirect=True)


def run_orderfleet(
    *args: str, env: dict[str, str], cwd: Path | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """`orderfleet ARGS` run to its end: exit code, stdout and stderr as text."""
    return subprocess.run(
        [*ORDERFLEET, *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout
    )


def fleet_env(database_url: str, redis_url: str, key_prefix: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ORDERFLEET_")}
    env.update(
        {
            "ORDERFLEET_DATABASE_URL": database_url,
            "ORDERFLEET_BROKER_URL": broker_url_of_redis(redis_url),
            "ORDERFLEET_REDIS_URL": redis_url,
            "ORDERFLEET_BROKER_PREFIX": key_prefix,
            "ORDERFLEET_KEY_PREFIX": key_prefix,
            "ORDERFLEET_PARTITIONS": "8",
            "ORDERFLEET_VISIBILITY_TIMEOUT": "10",
            "ORDERFLEET_RETRY_BACKOFF_MAX": "2",
            "ORDERFLEET_LOCK_LEASE": "2",
            "ORDERFLEET_OUTBOX_RELAY_AFTER": "2",
            "ORDERFLEET_LOG_LEVEL": "INFO",
        }
    )
    env.update(extra)
    return env


class Fleet:
    """The test's orderfleet subprocesses on one environment; every one stopped at the end."""

    def __init__(self, env: dict[str, str], log_dir: Path) -> None:
        self.env = env
        self.log_dir = log_dir
        self.supervisor = Supervisor()

    @property
    def processes(self) -> list[FleetProcess]:
        return self.supervisor.processes

    def start(self, name: str, *args: str, ready: bool = True) -> FleetProcess:
        process = self.supervisor.start(FleetProcess(name, list(args), self.env, self.log_dir))
        return process.wait_ready() if ready else process

    def tallies(self) -> dict[str, int]:
        """The fleet's tallies (applied, duplicate, retry:<cause>, ...) from its live processes'
        Prometheus metrics."""
        return self.supervisor.tallies()

    def stop_all(self) -> None:
        self.supervisor.stop_all()

    def publish(
        self, events: Iterable[dict[str, Any]], name: str, *options: str
    ) -> subprocess.Popen[bytes]:
        """A producer process: `orderfleet publish [OPTIONS]` of a JSON Lines file.

        One message per event unless `--bulk` is among the options (the tests that use it
        were written for per-event messages)."""
        options = options if "--bulk" in options else ("--per-event", *options)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        path = self.log_dir / f"{name}.jsonl"
        path.write_text("".join(json.dumps(e) + "\n" for e in events))
        args = ["publish", *options, str(path)]
        return self.supervisor.start(FleetProcess(name, args, self.env, self.log_dir)).popen


def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.25)
    raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")


def ledger(sessions: sessionmaker[Session]) -> tuple[int, int, int]:
    """(distinct events logged, deliveries counted, dead letters)."""
    with sessions() as s:
        logged = s.scalar(select(func.count()).select_from(EventRow)) or 0
        deliveries = s.scalar(select(func.coalesce(func.sum(EventRow.deliveries), 0))) or 0
        letters = s.scalar(select(func.count()).select_from(DeadLetterRow)) or 0
    return int(logged), int(deliveries), int(letters)


def unacked_of(client: redis.Redis, prefix: str, queues: list[str]) -> dict[str, dict]:
    """Task id -> event of the unacknowledged messages of these queues."""
    found = {}
    for raw in client.hvals(f"{prefix}unacked"):
        message, _exchange, routing_key = json.loads(raw)
        if routing_key in queues:
            body = json.loads(base64.b64decode(message["body"]))
            found[message["headers"]["id"]] = body[1].get("event")
    return found


def kill_with_a_message_in_hand(
    client: redis.Redis, prefix: str, victim: FleetProcess, queues: list[str]
) -> tuple[float, dict]:
    """SIGKILL the worker while it holds a message; when, and what it held.

    The worker is frozen (SIGSTOP) when it is seen holding one; if that message was acked in
    the meantime it is thawed and watched again, so the kill always has a message in hand.
    (A SIGKILL between kombu's BRPOP and its write of the unacked record loses that message:
    a limit of the Redis transport, which a random kill would hit now and then.)
    """
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if unacked_of(client, prefix, queues):
            os.killpg(victim.pid, signal.SIGSTOP)
            held = unacked_of(client, prefix, queues)
            if held:
                killed_at = time.monotonic()
                victim.kill()
                return killed_at, held
            os.killpg(victim.pid, signal.SIGCONT)
        time.sleep(0.001)
    raise AssertionError("the worker never held a message")


def vhost_of(amqp_url: str) -> str:
    return unquote(urlsplit(amqp_url).path[1:])


def rabbitmq_consumers(amqp_url: str) -> dict[str, list[bool]]:
    """Per queue of the URL's virtual host: for each of its consumers, whether it is active
    (a single-active-consumer queue has one active consumer, the others are standbys)."""
    columns = ["queue_name", "active", "--quiet", "--no-table-headers"]
    listed = scratch.rabbitmqctl(["list_consumers", "-p", vhost_of(amqp_url), *columns])
    found: dict[str, list[bool]] = {}
    for line in filter(None, listed.splitlines()):
        queue, active = line.split("\t")[:2]
        found.setdefault(queue, []).append(active.strip() == "true")
    return found


def rabbitmq_queues(amqp_url: str) -> dict[str, tuple[int, int]]:
    """Per queue of the URL's virtual host: (messages ready, messages unacknowledged)."""
    columns = ["name", "messages_ready", "messages_unacknowledged", "--quiet", "--no-table-headers"]
    listed = scratch.rabbitmqctl(["list_queues", "-p", vhost_of(amqp_url), *columns])
    found = {}
    for line in filter(None, listed.splitlines()):
        name, ready, unacked = line.split("\t")[:3]
        found[name] = (int(ready), int(unacked))
    return found
