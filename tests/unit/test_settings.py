"""Settings: only ORDERFLEET_* variables, read by load_settings alone, refused values named."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import pytest
from orderfleet.worker import routing
from orderfleet.worker.settings import Settings, SettingsError, env_name, load_settings

INTEGER = "must be an integer"
NUMBER = "must be a number"
SWITCH = "must be true or false (1/0, yes/no, on/off)"


def test_every_variable_is_the_prefixed_field_name():
    assert env_name("partitions") == "ORDERFLEET_PARTITIONS"
    assert env_name("batch_linger") == "ORDERFLEET_BATCH_LINGER"
    assert load_settings({"ORDERFLEET_DATA_DIR": "/srv/of"}).data_dir == Path("/srv/of")
    assert load_settings({"ORDERFLEET_METRICS_PORT": "9100"}).metrics_port == 9100


def test_unset_or_empty_variables_keep_their_defaults():
    assert load_settings({}) == Settings()
    assert load_settings({"ORDERFLEET_PARTITIONS": "", "ORDERFLEET_BROKER_URL": ""}) == Settings()


def test_other_variables_are_ignored():
    env = {
        "ORDERFLEET_NO_SUCH_SETTING": "1",
        "ORDERFLEET_TEST_REDIS_URL": "redis://elsewhere",
        "orderfleet_partitions": "64",
        "PARTITIONS": "64",
    }
    assert load_settings(env) == Settings()


def test_load_settings_reads_the_given_mapping_not_the_process_environment(monkeypatch):
    monkeypatch.setenv("ORDERFLEET_PARTITIONS", "64")
    assert load_settings({}).partitions == 16
    assert load_settings().partitions == 64


def test_settings_built_in_code_ignore_the_environment(monkeypatch):
    monkeypatch.setenv("ORDERFLEET_PARTITIONS", "64")
    monkeypatch.setenv("ORDERFLEET_BATCHING", "false")
    assert Settings().partitions == 16
    assert Settings(partitions=8).flush_size == 500


@pytest.mark.parametrize(
    ("field", "reason"),
    [
        *((f, INTEGER) for f in ("partitions", "max_retries", "flower_port", "metrics_port")),
        ("batch_size", INTEGER),
        *(
            (f, NUMBER)
            for f in (
                "visibility_timeout",
                "retry_backoff_base",
                "retry_backoff_max",
                "db_lock_timeout",
                "db_idle_timeout",
                "lock_lease",
                "outbox_relay_after",
                "outbox_relay_interval",
                "stalled_after",
                "batch_interval",
                "batch_linger",
            )
        ),
        ("task_events", SWITCH),
        ("batching", SWITCH),
    ],
)
def test_a_value_of_the_wrong_type_is_refused_naming_the_variable(field, reason):
    variable = env_name(field)
    with pytest.raises(SettingsError) as refused:
        load_settings({variable: "soon"})
    assert str(refused.value) == f"{variable}='soon': {reason}"


def test_the_first_refused_variable_is_named():
    env = {"ORDERFLEET_BATCHING": "maybe", "ORDERFLEET_PARTITIONS": "x"}
    with pytest.raises(SettingsError) as refused:
        load_settings(env)
    assert str(refused.value) == "ORDERFLEET_PARTITIONS='x': must be an integer"


@pytest.mark.parametrize(
    ("raw", "value"),
    [
        *(("1", True), ("TRUE", True), (" yes ", True), ("On", True)),
        *(("0", False), ("false", False), ("No", False), (" off", False)),
    ],
)
def test_boolean_spellings(raw, value):
    assert load_settings({"ORDERFLEET_BATCHING": raw}).batching is value


@pytest.mark.parametrize("raw", ["t", "y", "2", "enabled"])
def test_other_boolean_spellings_are_refused(raw):
    with pytest.raises(SettingsError) as refused:
        load_settings({"ORDERFLEET_BATCHING": raw})
    assert str(refused.value) == f"ORDERFLEET_BATCHING={raw!r}: {SWITCH}"


def fresh_celeryconfig() -> ModuleType:
    """orderfleet.celeryconfig run anew (it reads the settings on import)."""
    origin = importlib.util.find_spec("orderfleet.celeryconfig").origin
    spec = importlib.util.spec_from_file_location("orderfleet.celeryconfig", origin)  # its own name
    config = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(config)
    return config


def test_celeryconfig_takes_its_values_from_the_settings(monkeypatch):
    for name, value in {
        "ORDERFLEET_BROKER_URL": "redis://127.0.0.1:1/5",
        "ORDERFLEET_PARTITIONS": "4",
        "ORDERFLEET_VISIBILITY_TIMEOUT": "40",
        "ORDERFLEET_BROKER_PREFIX": "staging:",
        "ORDERFLEET_TASK_EVENTS": "off",
        "ORDERFLEET_OUTBOX_RELAY_INTERVAL": "7",
    }.items():
        monkeypatch.setenv(name, value)
    config = fresh_celeryconfig()
    assert config.broker_url == "redis://127.0.0.1:1/5"
    assert config.broker_transport_options["visibility_timeout"] == 40
    assert config.broker_transport_options["global_keyprefix"] == "staging:"
    assert config.result_backend_transport_options == {"visibility_timeout": 40}
    assert config.worker_send_task_events is False
    assert [q.name for q in config.task_queues] == routing.all_queues(4)
    assert config.beat_schedule["relay-unpublished-decisions"]["schedule"] == 7
    queue = routing.queue_for("o-2", 4)
    event = {"event": {"orderId": "o-2"}}
    assert config.route_task("orderfleet.events.order_created", (), event, {}) == {
        "queue": queue,
        "routing_key": queue,
    }
