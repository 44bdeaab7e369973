"""The RabbitMQ of the RabbitMQ columns: the machine's, in a virtual host of the run's own.

The virtual host is made with rabbitmqctl (worker/dev/scratch.py fresh_vhost) on the local node
and deleted with its queues at the end. An unreachable RabbitMQ skips the columns with the
reason, unless --brokers names it: then the run fails.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from urllib.parse import urlsplit

import psutil
from amqp.exceptions import AMQPError
from kombu import Connection
from kombu.exceptions import OperationalError
from kombu.utils.url import maybe_sanitize_url
from orderfleet.worker.dev import scratch
from orderfleet.worker.rabbitmq import is_rabbitmq

from bench.brokers import RabbitBroker
from bench.servers import LOOPBACK, BenchError

CONNECT_TIMEOUT = 5.0
DEFAULT_PORT = 5672


@dataclass(frozen=True)
class Skipped:
    """RabbitMQ could not be used; why."""

    reason: str


def require_local_amqp(url: str) -> None:
    """Refuse a URL that is not amqp:// to a loopback host."""
    if not is_rabbitmq(url):
        raise BenchError(f"--amqp-url {maybe_sanitize_url(url)!r} is not an amqp:// URL")
    host = urlsplit(url).hostname
    if host not in LOOPBACK:
        raise BenchError(f"refusing non-loopback RabbitMQ host {host!r}")


def server_version(url: str) -> str:
    """The version the RabbitMQ at url announces; raises when it cannot be reached."""
    with Connection(url, connect_timeout=CONNECT_TIMEOUT) as conn:
        conn.connect()
        version = conn.connection.server_properties.get("version", "unknown")
    return version.decode() if isinstance(version, bytes) else str(version)


def listener_pid(url: str) -> int | None:
    """The process listening on the URL's port (the RabbitMQ node), None when not visible."""
    port = urlsplit(url).port or DEFAULT_PORT
    with contextlib.suppress(psutil.Error, OSError):
        for conn in psutil.net_connections(kind="tcp"):
            if conn.status == psutil.CONN_LISTEN and conn.laddr.port == port and conn.pid:
                return int(conn.pid)
    return None


@contextlib.contextmanager
def rabbitmq_broker(url: str, vhost: str, required: bool) -> Iterator[RabbitBroker | Skipped]:
    """A RabbitBroker in a new virtual host `vhost` of url's RabbitMQ, deleted at the end; when
    RabbitMQ or rabbitmqctl fails, Skipped with the reason (a BenchError when required)."""
    require_local_amqp(url)
    stack = contextlib.ExitStack()
    try:
        version = server_version(url)
        vhost_url = stack.enter_context(scratch.fresh_vhost(url, vhost))
    except (OSError, AMQPError, OperationalError, scratch.RabbitMQUnavailable) as exc:
        reason = f"RabbitMQ at {maybe_sanitize_url(url)} unavailable: {exc}".strip()
        if required:
            raise BenchError(f"{reason} (--brokers names rabbitmq)") from exc
        yield Skipped(reason)
        return
    with stack:
        broker = RabbitBroker(vhost_url, listener_pid(url), version)
        try:
            yield broker
        finally:
            broker.close()
