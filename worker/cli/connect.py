"""What a command connects to: its servers, the runtime, the broker's Redis, the Celery app.

SQLAlchemy, redis-py and Celery load inside these functions, when a command needs them:
`orderfleet --help` imports every command module and needs none of them.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

import typer
from orderfleet.worker.cli.output import fail
from orderfleet.worker.servers import (
    DATABASE,
    Embedded,
    Servers,
    locks_url_of_broker,
    resolve_servers,
)
from orderfleet.worker.settings import Settings, SettingsError, env_name, load_settings

if TYPE_CHECKING:
    import redis
    from celery import Celery
    from orderfleet.worker.runtime import Runtime


def use_servers(needs: Collection[str], embedded: Embedded) -> Servers:
    """The servers of this command (worker/servers.py's rule), exported for Celery and runtime."""
    try:
        servers = resolve_servers(load_settings(), needs, embedded).export()
    except SettingsError as exc:
        fail(str(exc))
    if servers.embedded_dir is not None and embedded is Embedded.START:
        typer.secho(
            f"orderfleet: no ORDERFLEET_* server URLs are set: using the embedded servers of "
            f"{servers.embedded_dir} (ORDERFLEET_DATA_DIR)",
            err=True,
        )
    return servers


def fleet_runtime() -> Runtime:
    """The fleet's runtime (worker/runtime.py) on the servers `use_servers` exported."""
    from orderfleet.worker.runtime import get_runtime

    return get_runtime()


def checked_runtime(needs: Collection[str] = (DATABASE,)) -> Runtime:
    """The runtime, refusing (exit 2) when the database is unreachable or its schema behind.

    It uses configured servers, or embedded ones that already run: it starts none.
    """
    use_servers(needs, Embedded.ATTACH)
    from orderfleet.worker.db import SchemaBehind
    from sqlalchemy.exc import OperationalError

    runtime = fleet_runtime()
    try:
        runtime.check_schema()
    except SchemaBehind as exc:
        fail(str(exc))
    except OperationalError as exc:
        fail(f"cannot reach the database: {exc.orig}")
    return runtime


@contextmanager
def broker_client(settings: Settings) -> Iterator[redis.Redis]:
    """A redis-py client on the Redis broker; a bad URL or a lost broker ends the command."""
    import redis

    url = locks_url_of_broker(settings.broker_url)
    if url is None:
        scheme = str(settings.broker_url).split(":", 1)[0]
        fail(f"{env_name('broker_url')} is {scheme}://: queue depths need a Redis broker")
    try:
        client = redis.Redis.from_url(url, socket_timeout=5)
    except ValueError as exc:
        fail(str(exc))
    try:
        yield client
    except redis.RedisError as exc:
        fail(f"cannot reach the broker: {exc}")
    finally:
        client.close()


def celery_app() -> Celery:
    """The fleet's Celery app, configured from the ORDERFLEET_* settings."""
    from orderfleet.worker.celery_app import app

    return app
