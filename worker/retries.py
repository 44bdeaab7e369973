"""The retry policy, in one place: exponential backoff with full jitter, bounded."""

from __future__ import annotations

import random

from orderfleet.worker.settings import Settings, SettingsError, env_name


def backoff_countdown(retries: int, settings: Settings, rng: random.Random | None = None) -> float:
    """Seconds before retry number `retries + 1`: uniform in [0, min(max, base * 2**retries)]."""
    ceiling = min(settings.retry_backoff_max, settings.retry_backoff_base * 2**retries)
    return (rng or random).uniform(0, ceiling)


def check_visibility(settings: Settings) -> None:
    """Refuse a visibility timeout a retry countdown could reach.

    A Redis-broker message waiting for its ETA longer than the visibility timeout is
    re-delivered, again and again (kombu#337, celery#2481), so countdowns stay below half of it.
    """
    largest = settings.largest_retry_countdown
    if largest * 2 > settings.visibility_timeout:
        raise SettingsError(
            f"{env_name('visibility_timeout')}={settings.visibility_timeout:g} is too small: a "
            f"retry countdown can reach {largest:g} s ({env_name('retry_backoff_max')}="
            f"{settings.retry_backoff_max:g}), and the visibility timeout must be at least twice "
            f"the largest countdown ({largest * 2:g} s) or waiting retries are re-delivered"
        )
