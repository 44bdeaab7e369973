"""The fleet's partition count, recorded on the broker, where producers and workers both see it.

A producer with another ORDERFLEET_PARTITIONS than the workers routes part of its events to
queues nobody consumes; they would wait there silently. The first worker on a broker records P
(under the broker's key prefix); a worker or producer configured with another P refuses, naming
both values. Changing P is deliberate: stop the fleet, drain it, `orderfleet partitions
--record`. Only Redis brokers carry the record.
"""

from __future__ import annotations

import redis
from orderfleet.worker.settings import Settings, SettingsError, env_name

KEY = "orderfleet.partitions"


def recorded_partitions(client: redis.Redis, prefix: str) -> int | None:
    """The partition count recorded on the broker, if any."""
    value = client.get(prefix + KEY)
    return int(value) if value is not None else None


def record_partitions(client: redis.Redis, prefix: str, partitions: int, force: bool) -> int:
    """Record P unless another one is (or always, with force); the count now recorded."""
    if force:
        client.set(prefix + KEY, partitions)
        return partitions
    client.set(prefix + KEY, partitions, nx=True)
    return recorded_partitions(client, prefix) or partitions


def check_agreement(settings: Settings, recorded: int | None) -> None:
    """Refuse when this process's P is not the fleet's."""
    if recorded is not None and recorded != settings.partitions:
        raise SettingsError(
            f"{env_name('partitions')}={settings.partitions}, but the fleet on this broker runs "
            f"{recorded} partitions (recorded in its key {settings.broker_prefix}{KEY}); use "
            f"{env_name('partitions')}={recorded}, or change the fleet's count on purpose: stop "
            "and drain the workers, then `orderfleet partitions --record`"
        )
