"""The one rule for which servers a process uses (worker/servers.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
from orderfleet.worker.servers import (
    BROKER,
    DATABASE,
    FLEET,
    Embedded,
    Servers,
    broker_url_of_redis,
    locks_url_of_broker,
    resolve_servers,
)
from orderfleet.worker.settings import Settings, SettingsError

BROKER_URL = "redis://broker:6379/0"
DB_URL = "postgresql://db/orderfleet"


@pytest.mark.parametrize("embedded", list(Embedded))
def test_a_full_configuration_is_used_as_it_is(embedded):
    settings = Settings(broker_url=BROKER_URL, database_url=DB_URL)
    assert resolve_servers(settings, FLEET, embedded) == Servers(BROKER_URL, BROKER_URL, DB_URL)


def test_the_producer_without_a_broker_url_is_refused_naming_it():
    with pytest.raises(SettingsError) as raised:
        resolve_servers(Settings(), [BROKER], Embedded.NEVER)
    assert str(raised.value) == "ORDERFLEET_BROKER_URL is not set: orderfleet starts no server here"


@pytest.mark.parametrize("embedded", list(Embedded))
def test_a_partial_configuration_is_refused_naming_what_is_missing(embedded, tmp_path):
    settings = Settings(broker_url=BROKER_URL, data_dir=tmp_path)
    with pytest.raises(SettingsError) as raised:
        resolve_servers(settings, FLEET, embedded)
    assert str(raised.value).startswith(
        "ORDERFLEET_DATABASE_URL is not set, but ORDERFLEET_BROKER_URL is set: "
    )
    assert list(tmp_path.iterdir()) == []  # nothing started, nothing written


def test_locks_need_their_own_url_when_the_broker_is_not_redis():
    settings = Settings(broker_url="amqp://guest@rabbit//", database_url=DB_URL)
    with pytest.raises(SettingsError, match=r"ORDERFLEET_REDIS_URL \(the broker is not Redis\)"):
        resolve_servers(settings, FLEET, Embedded.START)
    assert resolve_servers(settings, [BROKER, DATABASE], Embedded.NEVER).redis_url is None


def test_a_command_needing_only_the_database_takes_only_its_url():
    servers = resolve_servers(Settings(database_url=DB_URL), [DATABASE], Embedded.ATTACH)
    assert servers == Servers(None, None, DB_URL)
    assert servers.environ() == {"ORDERFLEET_DATABASE_URL": DB_URL}


def test_attach_starts_nothing_when_no_embedded_server_runs(tmp_path):
    data_dir = tmp_path / "data"
    with pytest.raises(SettingsError) as raised:
        resolve_servers(Settings(data_dir=data_dir), [DATABASE], Embedded.ATTACH)
    assert str(raised.value).startswith(
        f"ORDERFLEET_DATABASE_URL is not set and no embedded postgres runs under {data_dir}"
    )
    assert not data_dir.exists()


@pytest.mark.parametrize(
    "broker, locks",
    [
        ("redis://h:6379/1", "redis://h:6379/1"),
        ("rediss://h:6380/0", "rediss://h:6380/0"),
        ("redis+socket:///run/redis.sock", "unix:///run/redis.sock"),
        ("amqp://guest@h//", None),
        (None, None),
    ],
)
def test_locks_url_of_broker(broker, locks):
    assert locks_url_of_broker(broker) == locks


@pytest.mark.parametrize(
    "redis_url, broker",
    [
        ("redis://h:6379/1", "redis://h:6379/1"),
        ("rediss://h:6380/0", "rediss://h:6380/0"),
        ("unix:///run/redis.sock", "redis+socket:///run/redis.sock"),
    ],
)
def test_broker_url_of_redis_is_the_inverse_of_locks_url_of_broker(redis_url, broker):
    assert broker_url_of_redis(redis_url) == broker
    assert locks_url_of_broker(broker) == redis_url


def test_environ_names_each_url_by_its_variable():
    servers = Servers("redis+socket:///s", "unix:///s", DB_URL, Path("/d"))
    assert servers.environ() == {
        "ORDERFLEET_BROKER_URL": "redis+socket:///s",
        "ORDERFLEET_REDIS_URL": "unix:///s",
        "ORDERFLEET_DATABASE_URL": DB_URL,
    }
