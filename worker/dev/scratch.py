"""Throwaway places on shared servers, for the tests and the bench: a database, a key prefix,
a RabbitMQ virtual host.

A run gets a uniquely named PostgreSQL database with orderfleet's schema, dropped at the end
(sessions forced out), a unique Redis key prefix whose keys are deleted at the end, and a
RabbitMQ virtual host of its own, deleted with its queues at the end, so runs on the same
servers never see each other's data.
"""

from __future__ import annotations

import contextlib
import subprocess
import uuid
from collections.abc import Iterator
from urllib.parse import quote, urlsplit, urlunsplit

import redis
from orderfleet.worker.db import make_engine, upgrade
from orderfleet.worker.dev.lifeline import lifeline
from sqlalchemy import Engine, create_engine, make_url, text

DELETE_BATCH = 1000


class DatabaseUnavailable(RuntimeError):
    """The scratch database could not be created (the server is down or refuses)."""


def unique_id(length: int = 10) -> str:
    """A short random id, to name a run's database, key prefix and logs."""
    return uuid.uuid4().hex[:length]


@contextlib.contextmanager
def fresh_database(admin_url: str, name: str) -> Iterator[str]:
    """A new database `name` with orderfleet's schema; its URL. Dropped at the end."""
    url = create_database(admin_url, name)
    try:
        yield url
    finally:
        drop_database(admin_url, name)


def create_database(admin_url: str, name: str) -> str:
    """Create database `name` with orderfleet's schema; its URL (none is left half made)."""
    with _admin(admin_url) as admin:
        try:
            with admin.connect() as conn:
                conn.execute(text(f'CREATE DATABASE "{name}"'))
        except Exception as exc:
            raise DatabaseUnavailable(f"cannot create database {name}: {exc}") from exc
    url = make_url(admin_url).set(database=name).render_as_string(hide_password=False)
    try:
        _migrate(url)
    except BaseException:
        drop_database(admin_url, name)
        raise
    return url


def drop_database(admin_url: str, name: str) -> None:
    """Drop database `name`, forcing its sessions out."""
    with _admin(admin_url) as admin, admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@contextlib.contextmanager
def _admin(admin_url: str) -> Iterator[Engine]:
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    try:
        yield admin
    finally:
        admin.dispose()


def _migrate(url: str) -> None:
    engine = make_engine(url)
    try:
        upgrade(engine)
    finally:
        engine.dispose()


@contextlib.contextmanager
def fresh_prefix(redis_url: str, prefix: str) -> Iterator[str]:
    """The key prefix `prefix` (make it unique); every key under it is deleted at the end."""
    try:
        yield prefix
    finally:
        client = redis.Redis.from_url(redis_url)
        try:
            delete_prefix(client, prefix)
        finally:
            client.close()


def delete_prefix(client: redis.Redis, prefix: str) -> int:
    """Delete every key under prefix; how many there were."""
    deleted = 0
    batch: list[bytes] = []
    for key in client.scan_iter(match=f"{prefix}*", count=DELETE_BATCH):
        batch.append(key)
        if len(batch) >= DELETE_BATCH:
            deleted += client.delete(*batch)
            batch = []
    if batch:
        deleted += client.delete(*batch)
    return deleted


class RabbitMQUnavailable(RuntimeError):
    """rabbitmqctl failed: it is missing, or the RabbitMQ node is down or refuses."""


RABBITMQCTL_TIMEOUT = 60.0  # seconds; each call starts an Erlang VM (about a second)


@contextlib.contextmanager
def fresh_vhost(amqp_url: str, name: str, node: str | None = None) -> Iterator[str]:
    """A new virtual host `name` on this machine's RabbitMQ node (rabbitmqctl), where the URL's
    user may do everything; the URL of it. Deleted at the end, with its queues."""
    user = urlsplit(amqp_url).username or "guest"
    lifeline.guard_vhost(name, node)  # deleted even if we are SIGKILLed
    rabbitmqctl(["add_vhost", name], node)
    try:
        rabbitmqctl(["set_permissions", "-p", name, user, ".*", ".*", ".*"], node)
        yield vhost_url(amqp_url, name)
    finally:
        rabbitmqctl(["delete_vhost", name], node)
        lifeline.release_vhost(name, node)


def vhost_url(amqp_url: str, vhost: str) -> str:
    """The AMQP URL of another virtual host on the same server."""
    parts = urlsplit(amqp_url)
    return urlunsplit(parts._replace(path="/" + quote(vhost, safe="")))


def rabbitmqctl(args: list[str], node: str | None = None) -> str:
    """Run `rabbitmqctl ARGS` (on `node`, else the default node); its output."""
    command = ["rabbitmqctl", *(["-n", node] if node else []), *args]
    try:
        done = subprocess.run(
            command, capture_output=True, text=True, timeout=RABBITMQCTL_TIMEOUT, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise RabbitMQUnavailable(f"{' '.join(command)}: {exc}") from exc
    if done.returncode != 0:
        raise RabbitMQUnavailable(f"{' '.join(command)}: {done.stderr.strip() or done.stdout}")
    return done.stdout
