"""The composition root: builds engines, clients and settings on first use, never at import."""

from __future__ import annotations

import threading
from datetime import UTC, datetime
from functools import cached_property

import redis
from orderfleet.worker.db import check_schema, make_engine, session_factory, session_options
from orderfleet.worker.servers import DATABASE, LOCKS, Embedded, resolve_servers
from orderfleet.worker.settings import Settings, load_settings
from orderfleet.worker.store import SentDecisions, StateCache, UnitOfWork
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker


class Runtime:
    """Everything a worker process talks to, built lazily from one Settings."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    @cached_property
    def database_url(self) -> str:
        # Configured servers only: an entry point that may use embedded ones exported their URLs.
        return resolve_servers(self.settings, [DATABASE], Embedded.NEVER).database_url or ""

    @cached_property
    def redis_url(self) -> str:
        return resolve_servers(self.settings, [LOCKS], Embedded.NEVER).redis_url or ""

    @cached_property
    def engine(self) -> Engine:
        # No pre-ping: it costs a round trip per transaction, and a connection that died with a
        # restarted PostgreSQL fails its statement instead, which the apply path retries.
        return make_engine(
            self.database_url,
            pool_size=2,
            max_overflow=4,
            pool_pre_ping=False,
            connect_args={"options": session_options(self.settings)},
        )

    @cached_property
    def sessions(self) -> sessionmaker[Session]:
        return session_factory(self.engine)

    @cached_property
    def redis(self) -> redis.Redis:
        return redis.Redis.from_url(
            self.redis_url, socket_timeout=5, socket_connect_timeout=5, health_check_interval=30
        )

    @cached_property
    def states(self) -> StateCache:
        """Order states this process wrote lately (a partition worker reads them back)."""
        return StateCache()

    @cached_property
    def sent(self) -> SentDecisions:
        """Decisions this process sent that are not marked published yet."""
        return SentDecisions()

    def unit_of_work(self) -> UnitOfWork:
        return UnitOfWork(self.sessions, self.states, self.sent)

    def check_schema(self) -> None:
        check_schema(self.engine)

    def close(self) -> None:
        if "engine" in self.__dict__:
            self.engine.dispose()
        if "redis" in self.__dict__:
            self.redis.close()

    @staticmethod
    def now() -> datetime:
        return datetime.now(UTC)


_current: Runtime | None = None
_guard = threading.Lock()


def get_runtime() -> Runtime:
    """The process's runtime, built from the environment on first use."""
    global _current
    with _guard:
        if _current is None:
            _current = Runtime(load_settings())
        return _current


def reset_runtime(runtime: Runtime | None = None) -> None:
    """Drop the process's runtime (after fork, or to install one in tests)."""
    global _current
    with _guard:
        if _current is not None and _current is not runtime:
            _current.close()
        _current = runtime
