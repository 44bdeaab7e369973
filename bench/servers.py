"""The servers a bench run uses: embedded ones under a bench data dir, or ORDERFLEET_* URLs.

Either way the run gets a fresh PostgreSQL database (dropped afterwards) and a unique Redis key
prefix (its keys deleted afterwards; worker/dev/scratch.py), and only loopback hosts or unix
sockets are accepted.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import redis
from orderfleet.models.tables import Base
from orderfleet.worker.db import driver_url
from orderfleet.worker.dev import embedded
from orderfleet.worker.dev.lifeline import lifeline
from orderfleet.worker.servers import FLEET, Embedded, locks_url_of_broker, resolve_servers
from orderfleet.worker.settings import load_settings
from sqlalchemy import Engine, make_url, text
from sqlalchemy.exc import DBAPIError

LOOPBACK = {"127.0.0.1", "localhost", "::1"}


class BenchError(RuntimeError):
    """The bench cannot measure; the message says why."""


@dataclass(frozen=True)
class Servers:
    """Where the broker, the lock Redis and the PostgreSQL server are."""

    broker_url: str
    redis_url: str
    admin_database_url: str
    embedded_dir: Path | None
    source: str


def require_local_redis(url: str) -> None:
    """Refuse a Redis URL that is not a unix socket or a loopback host."""
    parts = urlsplit(url)
    if parts.scheme in ("unix", "redis+socket"):
        return
    if parts.hostname not in LOOPBACK:
        raise BenchError(f"refusing non-loopback Redis host {parts.hostname!r}")


def require_local_database(url: str) -> None:
    """Refuse a PostgreSQL URL that is not a unix socket or a loopback host."""
    parsed = make_url(url)
    socket_host = str(parsed.query.get("host", ""))
    if parsed.host is None and (not socket_host or socket_host.startswith("/")):
        return
    if (parsed.host or socket_host) not in LOOPBACK:
        raise BenchError(f"refusing non-loopback PostgreSQL host {parsed.host or socket_host!r}")


def resolve(data_dir: Path) -> Servers:
    """ORDERFLEET_* URLs where set, else embedded servers under data_dir (started now)."""
    settings = load_settings().model_copy(update={"data_dir": data_dir})
    found = resolve_servers(settings, FLEET, Embedded.START)
    if found.broker_url is None or found.redis_url is None or found.database_url is None:
        raise BenchError("the bench needs a broker, a lock Redis and a PostgreSQL server")
    if locks_url_of_broker(found.broker_url) is None:
        raise BenchError("the bench needs a Redis broker")
    for url in (found.broker_url, found.redis_url):
        require_local_redis(url)
    require_local_database(found.database_url)
    source = "embedded" if found.embedded_dir else "environment"
    return Servers(
        found.broker_url,
        found.redis_url,
        driver_url(found.database_url),
        found.embedded_dir,
        source,
    )


@contextlib.contextmanager
def bench_servers(data_dir: Path) -> Iterator[Servers]:
    """The run's servers; embedded ones started here are stopped at the end (or if we die)."""
    lifeline.guard_data_dir(data_dir)
    servers = None
    try:
        servers = resolve(data_dir)
        yield servers
    finally:
        if servers is None or servers.embedded_dir is not None:
            embedded.stop(data_dir)
        lifeline.release_data_dir(data_dir)


def truncate_all(engine: Engine) -> None:
    """Empty every orderfleet table (fresh state for the next measurement)."""
    names = ", ".join(table.name for table in Base.metadata.sorted_tables)
    with engine.begin() as conn:
        conn.execute(text(f"TRUNCATE {names} RESTART IDENTITY"))


def checkpoint(engine: Engine) -> bool:
    """Write out what the last measurement left dirty, so that it does not land in the next.

    Measured: latency runs started right after a heavy write measured p99 of 0.3-1.9 s, a few
    minutes later 0.11 s. False when the role may not (CHECKPOINT needs a superuser or, from
    PostgreSQL 15, pg_checkpoint).
    """
    try:
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(text("CHECKPOINT"))
    except DBAPIError:
        return False
    return True


def server_versions(client: redis.Redis, engine: Engine) -> dict[str, str]:
    """The Redis and PostgreSQL server versions."""
    with engine.connect() as conn:
        postgres = str(conn.execute(text("SHOW server_version")).scalar())
    info = client.info("server")
    return {"redis": str(info.get("redis_version")), "postgresql": postgres}
