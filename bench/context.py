"""Everything one bench run shares: servers, its database and key prefix, its processes."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import redis
from orderfleet.worker import routing
from orderfleet.worker.dev.processes import FleetProcess, Supervisor, tallies_of
from orderfleet.worker.dev.scratch import delete_prefix
from sqlalchemy import Engine

from bench import noop_app
from bench.config import REPO_ROOT, BenchConfig
from bench.procs import ResourceMonitor, server_pids
from bench.servers import Servers, checkpoint, truncate_all
from bench.store import clear_except_store


@dataclass
class Context:
    """The run's servers, database, Redis prefix, log dir and supervised processes."""

    config: BenchConfig
    servers: Servers
    database_url: str
    engine: Engine
    redis: redis.Redis
    prefix: str
    log_dir: Path
    supervisor: Supervisor = field(default_factory=Supervisor)

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
            "ORDERFLEET_BROKER_URL": self.servers.broker_url,
            "ORDERFLEET_REDIS_URL": self.servers.redis_url,
            "ORDERFLEET_DATABASE_URL": self.database_url,
            "ORDERFLEET_BROKER_PREFIX": self.prefix,
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
            noop_app.BROKER_ENV: self.servers.broker_url,
            noop_app.PREFIX_ENV: self.prefix,
        }

    def reset(self, keep_store: bool = False) -> None:
        """Delete the run's Redis keys, empty the tables (all, or all but the pre-fill) and
        checkpoint, so that each measurement starts clean."""
        delete_prefix(self.redis, self.prefix)
        if keep_store:
            clear_except_store(self.engine)
        else:
            truncate_all(self.engine)
        checkpoint(self.engine)

    def fleet_depth(self) -> int:
        """Messages waiting in orderfleet's partition queues."""
        pipe = self.redis.pipeline(transaction=False)
        for partition in range(self.config.partitions):
            pipe.llen(self.prefix + routing.queue_name(partition))
        return sum(pipe.execute())

    def noop_depth(self) -> int:
        """Messages waiting in the no-op queue."""
        return int(self.redis.llen(self.prefix + noop_app.QUEUE))

    def monitor(self, workers: Sequence[FleetProcess]) -> ResourceMonitor:
        """A monitor of these workers and, when embedded, of the servers."""
        return ResourceMonitor([w.pid for w in workers], server_pids(self.servers.embedded_dir))

    def stats(self, workers: Sequence[FleetProcess]) -> dict[str, int]:
        """The workers' tallies (applied, duplicate, retry:<cause>, ...) from their metrics."""
        return tallies_of(workers)
