"""Everything one bench run shares: servers, its database and key prefix, its processes; and
the broker the current measurement runs on (Redis, or RabbitMQ in the run's virtual host)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import redis
from orderfleet.worker import routing
from orderfleet.worker.dev.processes import FleetProcess, Supervisor
from orderfleet.worker.dev.scratch import delete_prefix
from orderfleet.worker.metrics import scrape
from orderfleet.worker.rabbitmq import DEAD_LETTER_QUEUE
from sqlalchemy import Engine

from bench import noop_app
from bench.brokers import Broker
from bench.config import REPO_ROOT, BenchConfig
from bench.procs import ResourceMonitor, server_pids
from bench.servers import Servers, checkpoint, truncate_all
from bench.store import clear_except_store

METRICS_PORT_ENV = "ORDERFLEET_METRICS_PORT"


@dataclass
class Context:
    """The run's servers, database, Redis prefix, log dir, supervised processes and broker."""

    config: BenchConfig
    servers: Servers
    database_url: str
    engine: Engine
    redis: redis.Redis
    prefix: str
    log_dir: Path
    broker: Broker
    supervisor: Supervisor = field(default_factory=Supervisor)

    def on(self, broker: Broker) -> Context:
        """This context with its measurements on `broker` (the same processes and servers)."""
        return replace(self, broker=broker)

    def base_env(self) -> dict[str, str]:
        """This environment without ORDERFLEET_* variables, with the repo on PYTHONPATH."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("ORDERFLEET_")}
        paths = [str(REPO_ROOT), *filter(None, [env.get("PYTHONPATH")])]
        env["PYTHONPATH"] = os.pathsep.join(paths)
        return env

    def fleet_env(self, **extra: str) -> dict[str, str]:
        """orderfleet's settings for workers and producers of this run, plus `extra`."""
        return {
            **self.base_env(),
            **self.broker.env(),
            "ORDERFLEET_REDIS_URL": self.servers.redis_url,
            "ORDERFLEET_DATABASE_URL": self.database_url,
            "ORDERFLEET_KEY_PREFIX": self.prefix,
            "ORDERFLEET_PARTITIONS": str(self.config.partitions),
            "ORDERFLEET_DATA_DIR": str(self.config.data_dir),
            "ORDERFLEET_LOG_LEVEL": "INFO",
            **extra,
        }

    def noop_env(self) -> dict[str, str]:
        """The no-op app's broker and prefix (the same broker, the same prefix)."""
        return {
            **self.base_env(),
            noop_app.BROKER_ENV: self.broker.url,
            noop_app.PREFIX_ENV: self.prefix,
        }

    def reset(self, keep_store: bool = False) -> None:
        """Delete the run's Redis keys and broker queues, empty the tables (all, or all but the
        pre-fill) and checkpoint, so that each measurement starts clean."""
        delete_prefix(self.redis, self.prefix)
        self.broker.clear(self.queues())
        if keep_store:
            clear_except_store(self.engine)
        else:
            truncate_all(self.engine)
        checkpoint(self.engine)

    def fleet_depth(self) -> int:
        """Messages waiting in orderfleet's partition queues."""
        return self.broker.depth([routing.queue_name(p) for p in range(self.config.partitions)])

    def noop_depth(self) -> int:
        """Messages waiting in the no-op queue."""
        return self.broker.depth([noop_app.QUEUE])

    def queues(self) -> list[str]:
        """Every queue a measurement may fill: orderfleet's, its dead letters', the no-op's."""
        return [*routing.all_queues(self.config.partitions), DEAD_LETTER_QUEUE, noop_app.QUEUE]

    def monitor(self, workers: Sequence[FleetProcess]) -> ResourceMonitor:
        """A monitor of these workers and of the servers: the embedded ones, the broker's."""
        servers = server_pids(self.servers.embedded_dir) + self.broker.server_pids()
        return ResourceMonitor([w.pid for w in workers], servers)

    def server_names(self) -> list[str]:
        """Whose CPU the monitor counts as the servers'."""
        names = ["PostgreSQL", "Redis"] if self.servers.embedded_dir is not None else []
        return names + (["RabbitMQ"] if self.broker.server_pids() else [])

    def stats(self, workers: Sequence[FleetProcess]) -> dict[str, int]:
        """The workers' tallies (applied, duplicate, retry:<cause>, ...) from their metrics: at
        the port a worker was given (served before it is ready), else the one it announced."""
        return scrape(url for url in map(_metrics_url, workers) if url is not None)


def _metrics_url(worker: FleetProcess) -> str | None:
    port = worker.env.get(METRICS_PORT_ENV, "0")
    return f"http://127.0.0.1:{port}/metrics" if port != "0" else worker.metrics_url()
