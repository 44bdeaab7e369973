"""Hot standby on RabbitMQ: SIGKILL the active consumer of a partition range, time the takeover.

Two `orderfleet worker --partitions 0-3` subscribe to the same queues of one RabbitMQ virtual
host (single active consumer on every partition queue: one consumes, the other waits) while
`orderfleet simulate` publishes a steady stream. The worker that is ending events is SIGKILLed;
the takeover time is from the kill to the first event the other one ends (its Prometheus
tallies, polled every 20 ms). The killed worker is started again as the next standby, `--kills`
times. Servers: the machine's PostgreSQL, Redis and RabbitMQ (loopback URLs below), in a
database, key prefix and virtual host of the run's own, removed afterwards.

    python -m bench.takeover [--kills 10] [--rate 300]
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

from orderfleet.worker.db import driver_url
from orderfleet.worker.dev.processes import FleetProcess, Supervisor, tallies_of
from orderfleet.worker.dev.scratch import fresh_database, fresh_prefix, fresh_vhost, unique_id

from bench.fleet import ended

ADMIN_DATABASE_URL = driver_url("postgresql://postgres@127.0.0.1:5432/postgres")
REDIS_URL = "redis://127.0.0.1:6379/0"
AMQP_URL = "amqp://guest:guest@127.0.0.1:5672//"
POLL = 0.02  # seconds between two reads of the standby's tallies
GIVE_UP = 30.0  # seconds a takeover may take before the run fails


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=10, help="SIGKILLs of the active worker")
    parser.add_argument("--rate", type=float, default=300.0, help="messages/s published")
    parser.add_argument("--seed", type=int, default=1)
    return parser.parse_args()


def worker(name: str, env: dict[str, str], log_dir: Path) -> FleetProcess:
    return FleetProcess(name, ["worker", "--partitions", "0-3"], env, log_dir)


def active_of(workers: list[FleetProcess]) -> FleetProcess:
    """The worker whose tallies grow (the other one is the standby)."""
    before = [ended(tallies_of([w])) for w in workers]
    deadline = time.monotonic() + GIVE_UP
    while time.monotonic() < deadline:
        time.sleep(0.5)
        grown = [w for w, b in zip(workers, before, strict=True) if ended(tallies_of([w])) > b]
        if len(grown) == 1:
            return grown[0]
        before = [ended(tallies_of([w])) for w in workers]
    raise RuntimeError("no single worker is ending events: is the producer running?")


def takeover(standby: FleetProcess, killed_at: float) -> float:
    """Seconds from the kill to the first event the standby ends."""
    start = ended(tallies_of([standby]))
    while time.monotonic() - killed_at < GIVE_UP:
        if ended(tallies_of([standby])) > start:
            return time.monotonic() - killed_at
        time.sleep(POLL)
    raise RuntimeError(f"the standby ended nothing within {GIVE_UP:g} s of the kill")


def measure(args: argparse.Namespace, env: dict[str, str], log_dir: Path) -> list[float]:
    rng, supervisor = random.Random(args.seed), Supervisor()
    workers = supervisor.start_ready([worker(f"w{i}", env, log_dir) for i in range(2)])
    orders = int(args.rate * 10 * (args.kills + 2) / 6)  # ~6.5 messages an order: enough
    producer = FleetProcess(
        "producer", ["simulate", "--orders", str(orders), "--rate", str(args.rate)], env, log_dir
    )
    supervisor.start(producer)
    times = []
    try:
        for n in range(args.kills):
            time.sleep(rng.uniform(1.0, 3.0))
            active = active_of(workers)
            standby = next(w for w in workers if w is not active)
            active.kill()
            times.append(takeover(standby, time.monotonic()))
            print(f"kill {n + 1}: standby took over in {times[-1] * 1000:.0f} ms", flush=True)
            workers = [standby, supervisor.start_ready([worker(f"w{n}-again", env, log_dir)])[0]]
    finally:
        supervisor.stop_all()
    return times


def main() -> None:
    args = arguments()
    rid = unique_id()
    with ExitStack() as stack:
        log_dir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="takeover-")))
        database = stack.enter_context(fresh_database(ADMIN_DATABASE_URL, f"takeover_{rid}"))
        prefix = stack.enter_context(fresh_prefix(REDIS_URL, f"takeover:{rid}:"))
        broker = stack.enter_context(fresh_vhost(AMQP_URL, f"takeover-{rid}"))
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("ORDERFLEET_")},
            "ORDERFLEET_BROKER_URL": broker,
            "ORDERFLEET_REDIS_URL": REDIS_URL,
            "ORDERFLEET_KEY_PREFIX": prefix,
            "ORDERFLEET_DATABASE_URL": database,
            "ORDERFLEET_PARTITIONS": "4",
        }
        times = measure(args, env, log_dir)
    ms = sorted(t * 1000 for t in times)
    print(
        f"takeover after SIGKILL, {len(ms)} kills: median {statistics.median(ms):.0f} ms, "
        f"max {ms[-1]:.0f} ms, min {ms[0]:.0f} ms"
    )


if __name__ == "__main__":
    main()
