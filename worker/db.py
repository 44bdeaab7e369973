"""Engines and schema management: nothing connects until a function here is called."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from orderfleet.models.wire import dumps
from orderfleet.worker.settings import Settings
from sqlalchemy import Engine, create_engine, make_url
from sqlalchemy.orm import Session, sessionmaker

MIGRATIONS = Path(__file__).with_name("migrations")


class SchemaBehind(RuntimeError):
    """The database schema is older than the code; `orderfleet db upgrade` fixes it."""


def driver_url(url: str) -> str:
    """Pin plain postgresql:// URLs to psycopg2 (SQLAlchemy 2.1 would pick psycopg 3)."""
    parsed = make_url(url)
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg2")
    return parsed.render_as_string(hide_password=False)


def make_engine(url: str, **options: Any) -> Engine:
    """A pooled engine; pre-ping unless told otherwise (workers retry a dropped connection)."""
    options.setdefault("pool_pre_ping", True)
    return create_engine(driver_url(url), json_serializer=dumps, **options)


def session_options(settings: Settings) -> str:
    """libpq options for the fleet's sessions: a frozen peer blocks for seconds, not forever.

    lock_timeout bounds a wait for a row lock (the apply retries); the idle-in-transaction
    timeout ends the session of a worker frozen inside a transaction, releasing its locks.
    """
    lock_ms = round(settings.db_lock_timeout * 1000)
    idle_ms = round(settings.db_idle_timeout * 1000)
    return f"-c lock_timeout={lock_ms} -c idle_in_transaction_session_timeout={idle_ms}"


def session_factory(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


def alembic_config(url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.set_main_option("sqlalchemy.url", driver_url(url).replace("%", "%%"))
    return config


def upgrade(engine: Engine) -> str:
    """Apply every pending migration; returns the revision the database is now at."""
    config = alembic_config(engine.url.render_as_string(hide_password=False))
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, "head")
    return head_revision()


def head_revision() -> str:
    script = ScriptDirectory.from_config(alembic_config("postgresql://"))
    return str(script.get_current_head())


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


def check_schema(engine: Engine) -> None:
    """Refuse to run against a schema that is behind the code."""
    current, head = current_revision(engine), head_revision()
    if current != head:
        raise SchemaBehind(
            f"the database schema is at revision {current or 'none'} but this orderfleet "
            f"needs {head}: run `orderfleet db upgrade`"
        )
