"""The retry policy: full-jitter backoff bounded below the visibility timeout."""

from __future__ import annotations

import random

import pytest
from orderfleet.worker.retries import backoff_countdown, check_visibility
from orderfleet.worker.settings import Settings, SettingsError, load_settings


def test_countdowns_grow_exponentially_and_are_capped():
    settings = Settings(retry_backoff_base=0.1, retry_backoff_max=2.0)
    rng = random.Random(1)
    ceilings = [max(backoff_countdown(n, settings, rng) for _ in range(2000)) for n in range(6)]
    assert [round(c, 1) for c in ceilings] == [0.1, 0.2, 0.4, 0.8, 1.6, 2.0]
    assert min(backoff_countdown(5, settings, rng) for _ in range(2000)) < 0.01


def test_visibility_timeout_smaller_than_twice_the_largest_countdown_is_refused():
    with pytest.raises(SettingsError) as refused:
        check_visibility(Settings(visibility_timeout=8, retry_backoff_max=5.0))
    assert str(refused.value) == (
        "ORDERFLEET_VISIBILITY_TIMEOUT=8 is too small: a retry countdown can reach 5 s "
        "(ORDERFLEET_RETRY_BACKOFF_MAX=5), and the visibility timeout must be at least twice "
        "the largest countdown (10 s) or waiting retries are re-delivered"
    )
    check_visibility(Settings(visibility_timeout=10, retry_backoff_max=5.0))


def test_defaults_are_consistent():
    check_visibility(Settings())


def test_settings_from_environment_with_a_clear_error():
    settings = load_settings({"ORDERFLEET_PARTITIONS": "64", "ORDERFLEET_LOCK_LEASE": "0.2"})
    assert (settings.partitions, settings.lock_lease) == (64, 0.2)
    with pytest.raises(SettingsError, match="ORDERFLEET_PARTITIONS='many': must be an integer"):
        load_settings({"ORDERFLEET_PARTITIONS": "many"})


def test_boolean_settings():
    assert load_settings({"ORDERFLEET_TASK_EVENTS": "off"}).task_events is False
    assert load_settings({}).task_events is True
    with pytest.raises(SettingsError, match="TASK_EVENTS='maybe': must be true or false"):
        load_settings({"ORDERFLEET_TASK_EVENTS": "maybe"})
