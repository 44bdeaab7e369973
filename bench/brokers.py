"""The broker a measurement runs on: what its processes are told, its queue depths, emptying it.

A depth is the number of messages ready in a queue (LLEN of kombu's list on Redis, a passive
queue_declare's message_count on RabbitMQ); on neither does it count a message a worker holds
unacknowledged.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

import redis
from amqp.exceptions import NotFound
from kombu import Connection


class Broker(Protocol):
    """What a measurement needs of its broker."""

    name: str  # "redis" or "rabbitmq" (bench/config.py BROKERS)
    url: str

    def env(self) -> dict[str, str]:
        """The ORDERFLEET_* variables that put a fleet process on this broker."""
        ...

    def depth(self, queues: Sequence[str]) -> int:
        """Messages ready in these queues together (a queue not declared yet holds none)."""
        ...

    def clear(self, queues: Sequence[str]) -> None:
        """Empty these queues, for the next measurement."""
        ...

    def server_pids(self) -> list[int]:
        """Broker processes to count as server CPU, beyond the embedded servers'."""
        ...


class RedisBroker:
    """kombu's Redis transport under the run's key prefix (the locks share it)."""

    name = "redis"

    def __init__(self, url: str, client: redis.Redis, prefix: str) -> None:
        self.url, self.client, self.prefix = url, client, prefix

    def env(self) -> dict[str, str]:
        return {"ORDERFLEET_BROKER_URL": self.url, "ORDERFLEET_BROKER_PREFIX": self.prefix}

    def depth(self, queues: Sequence[str]) -> int:
        pipe = self.client.pipeline(transaction=False)
        for queue in queues:
            pipe.llen(self.prefix + queue)
        return sum(pipe.execute())

    def clear(self, queues: Sequence[str]) -> None:
        """Nothing of its own: the run's reset deletes every key under the prefix."""

    def server_pids(self) -> list[int]:
        return []


class RabbitBroker:
    """RabbitMQ in a virtual host of the run's own (bench/rabbit_server.py); one connection
    for the depths, opened when first needed."""

    name = "rabbitmq"

    def __init__(self, url: str, pid: int | None, version: str) -> None:
        self.url, self.pid, self.version = url, pid, version
        self._connection: Connection | None = None
        self._channel: Any = None

    def env(self) -> dict[str, str]:
        return {"ORDERFLEET_BROKER_URL": self.url}

    def depth(self, queues: Sequence[str]) -> int:
        return sum(self._ready(queue) for queue in queues)

    def clear(self, queues: Sequence[str]) -> None:
        """Empty the queues (their consumers stopped). Purged, not deleted: a producer in this
        process that declared a queue before keeps it in kombu's declaration cache and would
        not declare it again, and RabbitMQ drops what goes to a queue that is gone (run 2's
        no-op backlog vanished so, and its drain rate read 0)."""
        for queue in queues:
            try:
                self._open().queue_purge(queue)
            except NotFound:  # never declared: nothing to empty
                self._channel = None

    def server_pids(self) -> list[int]:
        return [self.pid] if self.pid is not None else []

    def close(self) -> None:
        """Close the connection, if open."""
        if self._connection is not None:
            self._connection.release()
        self._connection = self._channel = None

    def _ready(self, queue: str) -> int:
        try:
            return int(self._open().queue_declare(queue=queue, passive=True).message_count)
        except NotFound:  # the broker closed the channel: the next call opens another
            self._channel = None
            return 0

    def _open(self) -> Any:
        """The channel of the depths, opened again after the broker closed it."""
        if self._connection is None:
            self._connection = Connection(self.url, connect_timeout=10)
        if self._channel is None:
            self._channel = self._connection.channel()
        return self._channel
