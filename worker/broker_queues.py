"""The broker's queues as kombu lays them out in Redis: depths, strays, consumers, the ledger.

kombu keeps a queue as one Redis list per priority step under the broker's key prefix; the
functions return JSON-ready data for the `partitions` and `ledger` commands.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any

import redis
from celery import Celery
from kombu.transport.redis import PRIORITY_STEPS, Channel
from orderfleet.worker.routing import all_queues
from orderfleet.worker.servers import locks_url_of_broker
from orderfleet.worker.settings import Settings, env_name
from orderfleet.worker.store import MessageLedger
from orderfleet.worker.transport import TAKEN_KEY
from sqlalchemy.orm import Session, sessionmaker


def broker_redis_url(settings: Settings) -> str:
    """A redis-py URL of the broker (kombu's redis+socket:// is redis-py's unix://)."""
    url = locks_url_of_broker(settings.broker_url)
    if url is None:
        raise ValueError(
            f"{env_name('broker_url')} is {str(settings.broker_url).split(':', 1)[0]}://: "
            "queue depths need a Redis broker"
        )
    return url


def queue_depths(client: redis.Redis, prefix: str, queues: Iterable[str]) -> dict[str, int]:
    """Messages waiting in each queue: LLEN of kombu's list keys (every priority step)."""
    names = list(queues)
    with client.pipeline(transaction=False) as pipe:
        for name in names:
            for priority in PRIORITY_STEPS:
                pipe.llen(prefix + _priority_key(name, priority))
        lengths = pipe.execute()
    steps = len(PRIORITY_STEPS)
    return {name: sum(lengths[i * steps : (i + 1) * steps]) for i, name in enumerate(names)}


def _priority_key(queue: str, priority: int) -> str:
    """kombu's Redis list key of a queue at one priority step."""
    return queue if priority == 0 else f"{queue}{Channel.sep}{priority}"


def partition_depths(client: redis.Redis, prefix: str, partitions: int) -> dict[str, int]:
    """Depth of every partition queue plus the decisions and maintenance queues."""
    return queue_depths(client, prefix, all_queues(partitions))


def stray_partition_queues(client: redis.Redis, prefix: str, partitions: int) -> dict[str, int]:
    """Partition queues outside 0..P-1 that hold messages: nobody in this fleet consumes them."""
    names = set()
    for key in client.scan_iter(match=f"{prefix}orderfleet.p*", count=1000):
        queue = key.decode(errors="replace").removeprefix(prefix).split(Channel.sep)[0]
        number = queue.removeprefix("orderfleet.p")
        if number.isdigit() and int(number) >= partitions:
            names.add(queue)
    depths = queue_depths(client, prefix, sorted(names))
    return {name: depth for name, depth in depths.items() if depth}


def message_ledger(
    client: redis.Redis, prefix: str, sessions: sessionmaker[Session]
) -> list[dict[str, Any]]:
    """Per queue: messages taken from the broker, outcomes committed, and those in flight.

    At rest (nothing waiting or unacknowledged), taken > ended means messages lost between the
    broker and a committed outcome. ended > taken are re-deliveries of messages that had ended
    (a worker that died after its commit, before its acknowledgement): harmless.
    """
    taken = {k.decode(): int(v) for k, v in client.hgetall(prefix + TAKEN_KEY).items()}
    with sessions() as session:
        ended = MessageLedger(session).ended()
    unacked = Counter(json.loads(raw)[2] for raw in client.hvals(f"{prefix}unacked"))
    names = sorted(set(taken) | set(ended))
    depths = queue_depths(client, prefix, names)
    rows = []
    for name in names:
        flight = depths[name] + unacked.get(name, 0)
        gap = taken.get(name, 0) - ended.get(name, 0)
        row = {"queue": name, "taken": taken.get(name, 0), "ended": ended.get(name, 0)}
        rows.append({**row, "in_flight": flight, "lost": gap if gap > 0 and not flight else 0})
    return rows


def queue_consumers(app: Celery, timeout: float = 1.0) -> dict[str, int]:
    """How many workers consume each queue (those that answer within the timeout)."""
    replies = app.control.inspect(timeout=timeout).active_queues() or {}
    counts: dict[str, int] = {}
    for queues in replies.values():
        for queue in queues or []:
            counts[queue["name"]] = counts.get(queue["name"], 0) + 1
    return counts


def partition_report(
    depths: Mapping[str, int], consumers: Mapping[str, int]
) -> list[dict[str, Any]]:
    """One row per queue: name, depth, consumers (0 when no worker answered)."""
    return [
        {"queue": name, "depth": depth, "consumers": consumers.get(name, 0)}
        for name, depth in depths.items()
    ]
