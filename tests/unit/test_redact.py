"""Passwords in URLs never reach what orderfleet prints."""

from __future__ import annotations

import pytest
from orderfleet.worker.settings import redact


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("amqp://user:s3cret@rabbit:5672//", "amqp://user:***@rabbit:5672//"),
        ("redis://:pw@127.0.0.1:6379/0", "redis://:***@127.0.0.1:6379/0"),
        (
            "cannot reach postgresql+psycopg2://of:p@ss@db/x now",
            "cannot reach postgresql+psycopg2://of:***@db/x now",
        ),
        ("redis://127.0.0.1:6379/0", "redis://127.0.0.1:6379/0"),
        (
            "unix:///run/redis.sock and user@example.com",
            "unix:///run/redis.sock and user@example.com",
        ),
    ],
)
def test_redact_hides_the_password_of_every_url(text, shown):
    assert redact(text) == shown
