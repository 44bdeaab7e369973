"""Which Redis and PostgreSQL servers a process uses: the one rule, in `resolve_servers`.

Configured servers (ORDERFLEET_BROKER_URL, ORDERFLEET_REDIS_URL, ORDERFLEET_DATABASE_URL) are
used as they are. The embedded servers of ORDERFLEET_DATA_DIR are used only when no URL at all is
set and the caller chose them (`Embedded.START`: the demo, the tests, the bench, a fleet process
on a developer's machine) or asks for ones already running (`Embedded.ATTACH`: operator commands,
which never start a server). A partial configuration is refused, naming what is missing: mixing a
configured broker with a private embedded database would split the fleet's data silently.
"""

from __future__ import annotations

import os
from collections.abc import Collection
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from orderfleet.worker.settings import Settings, SettingsError, env_name

BROKER, LOCKS, DATABASE = "broker", "locks", "database"
FLEET = (BROKER, LOCKS, DATABASE)
_FIELD = {BROKER: "broker_url", LOCKS: "redis_url", DATABASE: "database_url"}
REDIS_SOCKET, KOMBU_SOCKET = "unix://", "redis+socket://"  # a Redis unix socket, as each says


class Embedded(StrEnum):
    """May this process use the embedded servers when no URL is set?"""

    START = "start"  # yes, starting them if they are down
    ATTACH = "attach"  # only those already running
    NEVER = "never"  # no: every server it needs must be configured


@dataclass(frozen=True)
class Servers:
    """The URLs a process uses; `embedded_dir` is set when they are the embedded servers."""

    broker_url: str | None = None
    redis_url: str | None = None
    database_url: str | None = None
    embedded_dir: Path | None = None

    def environ(self) -> dict[str, str]:
        """The ORDERFLEET_* variables that name these servers (for this and child processes)."""
        urls = {"broker_url": self.broker_url, "redis_url": self.redis_url}
        urls["database_url"] = self.database_url
        return {env_name(field): url for field, url in urls.items() if url is not None}

    def export(self) -> Servers:
        """Set these URLs in os.environ, where Celery's config and the runtime read them."""
        os.environ.update(self.environ())
        return self


def resolve_servers(settings: Settings, needs: Collection[str], embedded: Embedded) -> Servers:
    """The servers for `needs` (of broker, locks, database), by the rule of this module."""
    configured = [settings.broker_url, settings.redis_url, settings.database_url]
    if any(configured):
        return _configured(settings, needs)
    missing = [env_name(_FIELD[need]) for need in FLEET if need in needs]
    if embedded is Embedded.NEVER:
        raise SettingsError(f"{_names(missing)} not set: orderfleet starts no server here")
    return _embedded(settings.data_dir, needs, embedded is Embedded.START, missing)


def locks_url_of_broker(broker_url: str | None) -> str | None:
    """redis-py's URL for a Redis broker (kombu's redis+socket:// is unix://); None otherwise."""
    if broker_url is None:
        return None
    if broker_url.startswith(KOMBU_SOCKET):
        return REDIS_SOCKET + broker_url.removeprefix(KOMBU_SOCKET)
    if broker_url.startswith(("redis://", "rediss://", REDIS_SOCKET)):
        return broker_url
    return None


def broker_url_of_redis(redis_url: str) -> str:
    """kombu's URL for a redis-py URL (redis-py's unix:// is kombu's redis+socket://)."""
    if redis_url.startswith(REDIS_SOCKET):
        return KOMBU_SOCKET + redis_url.removeprefix(REDIS_SOCKET)
    return redis_url


def _configured(settings: Settings, needs: Collection[str]) -> Servers:
    urls = Servers(
        settings.broker_url,
        settings.redis_url or locks_url_of_broker(settings.broker_url),
        settings.database_url,
    )
    missing = [
        _missing_name(need, settings)
        for need in FLEET
        if need in needs and getattr(urls, _FIELD[need]) is None
    ]
    if missing:
        given = [env_name(f) for f in _FIELD.values() if getattr(settings, f)]
        raise SettingsError(
            f"{_names(missing)} not set, but {_names(given)} set: set every server URL this "
            "needs, or none to use the embedded servers (orderfleet never mixes the two)"
        )
    return urls


def _missing_name(need: str, settings: Settings) -> str:
    if need == LOCKS and settings.broker_url:
        return f"{env_name('redis_url')} (the broker is not Redis)"
    return env_name(_FIELD[need])


def _embedded(data_dir: Path, needs: Collection[str], start: bool, missing: list[str]) -> Servers:
    # The embedded servers (the `embedded` extra) are loaded here only, when no URL is set.
    from orderfleet.worker.dev import embedded

    data_dir = data_dir.expanduser().resolve()
    running = embedded.status(data_dir)
    wanted = {"redis": BROKER in needs or LOCKS in needs, "postgres": DATABASE in needs}
    down = [name for name, want in wanted.items() if want and not running[name]]
    if down and not start:
        raise SettingsError(
            f"{_names(missing)} not set and no embedded {' or '.join(down)} runs under "
            f"{data_dir}; this command starts no server (`orderfleet demo --keep-running` or "
            "`orderfleet worker` start the embedded ones)"
        )
    if wanted["redis"]:
        embedded.ensure_redis(data_dir)
    if wanted["postgres"]:
        embedded.ensure_postgres(data_dir)
    return Servers(
        embedded.broker_url(data_dir) if wanted["redis"] else None,
        embedded.redis_url(data_dir) if wanted["redis"] else None,
        embedded.database_url(data_dir) if wanted["postgres"] else None,
        data_dir,
    )


def _names(names: list[str]) -> str:
    verb = "is" if len(names) == 1 else "are"
    return f"{', '.join(names)} {verb}"
