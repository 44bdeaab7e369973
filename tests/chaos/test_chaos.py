"""Faults under live `orderfleet simulate` traffic: real workers, Redis and PostgreSQL.

Each scenario runs simulate as a subprocess with a rate, so traffic is still flowing when the
fault strikes, then waits until every message ended and the broker is idle, and requires exact
counts: every distinct event published is logged once, every message sent was counted as applied
or duplicate (re-deliveries may add to that), the only dead letters are the invalid events sent
on purpose, and `orderfleet check` finds no divergent order (the decision invariant included).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis
from orderfleet.models.tables import DeadLetterRow
from orderfleet.worker.dev import embedded
from orderfleet.worker.dev.lifeline import guarded_popen
from orderfleet.worker.metrics import retries_by_cause
from orderfleet.worker.routing import queue_name
from sqlalchemy import create_engine, func, select, text

from tests.fleet import ORDERFLEET, Fleet, kill_with_a_message_in_hand, ledger, wait_for

pytestmark = [pytest.mark.chaos, pytest.mark.slow, pytest.mark.timeout(150)]

PARTITIONS = 8  # fleet_env's ORDERFLEET_PARTITIONS
FIRST_HALF = [queue_name(p) for p in range(4)]
VISIBILITY = 10.0  # fleet_env's ORDERFLEET_VISIBILITY_TIMEOUT
RATE = 150  # messages per second: about 11 s of traffic for 250 orders


def traffic(prefix: str, seed: int, orders: int = 250, invalid: float = 0.01) -> list[str]:
    """simulate's arguments: traffic at RATE from 2 producers, with re-deliveries, late, invalid."""
    return [
        *("--orders", str(orders), "--seed", str(seed), "--prefix", prefix),
        *("--rate", str(RATE), "--producers", "2", "--duplicate-rate", "0.3"),
        *("--late-rate", "0.05", "--late-delay", "2", "--invalid-rate", str(invalid)),
    ]


# --------------------------------------------------------------------------- fixtures


# --------------------------------------------------------------------------- traffic


@dataclass
class Traffic:
    """One `orderfleet simulate` subprocess and the files it writes."""

    process: subprocess.Popen
    out: Path
    report_path: Path

    def finish(self, timeout: float = 90) -> dict:
        """Wait for the run to end; its JSON report."""
        assert self.process.wait(timeout) == 0, self.report_path.with_suffix(".log").read_text()
        return json.loads(self.report_path.read_text())


def start_traffic(fleet: Fleet, producers: list, name: str, *args: str) -> Traffic:
    """Start `orderfleet simulate --json --out` with the fleet's settings."""
    out = fleet.log_dir / f"{name}.jsonl"
    report = fleet.log_dir / f"{name}.json"
    fleet.log_dir.mkdir(parents=True, exist_ok=True)
    command = [
        *ORDERFLEET,
        "simulate",
        "--json",
        "--out",
        str(out),
        *args,
    ]
    with report.open("w") as stdout, report.with_suffix(".log").open("w") as stderr:
        process = guarded_popen(command, env=fleet.env, stdout=stdout, stderr=stderr)
    producers.append(process)
    return Traffic(process, out, report)


@dataclass(frozen=True)
class Sent:
    """What the simulate runs of a scenario say they published."""

    distinct: int
    valid: int
    invalid: int
    publish_retries: int

    @classmethod
    def of(cls, reports: list[dict]) -> Sent:
        return cls(
            sum(r["published_distinct"] for r in reports),
            sum(r["valid_sent"] for r in reports),
            sum(r["invalid_sent"] for r in reports),
            sum(r["publish_retries"] for r in reports),
        )


# --------------------------------------------------------------------------- the end state


def broker_idle(client: redis.Redis, prefix: str) -> bool:
    """No message waits in a partition queue or sits unacknowledged (in hand or in a retry)."""
    pipe = client.pipeline(transaction=False)
    for p in range(PARTITIONS):
        pipe.llen(f"{prefix}{queue_name(p)}")
    pipe.hlen(f"{prefix}unacked")
    return not any(pipe.execute())


def settle(sessions, client: redis.Redis, prefix: str, sent: Sent, timeout: float = 90) -> None:
    """Wait until every message ended and the broker has nothing left for the workers."""

    def done() -> bool:
        logged, deliveries, letters = ledger(sessions)
        ended = logged >= sent.distinct and deliveries >= sent.valid and letters >= sent.invalid
        return ended and broker_idle(client, prefix)

    try:
        wait_for(done, timeout, f"every message to end ({sent})")
    except AssertionError as exc:
        raise AssertionError(f"{exc}; {state(sessions, client, prefix)}") from None


def state(sessions, client: redis.Redis, prefix: str) -> str:
    """The ledger, the dead letters by reason and the broker's queues, for a failure message."""
    with sessions() as s:
        reasons = s.execute(
            select(DeadLetterRow.reason, func.count()).group_by(DeadLetterRow.reason)
        ).all()
        first = s.scalar(select(DeadLetterRow.error).order_by(DeadLetterRow.id).limit(1))
    depths = [client.llen(f"{prefix}{queue_name(p)}") for p in range(PARTITIONS)]
    unacked = client.hlen(f"{prefix}unacked")
    letters = dict(reasons)
    return (
        f"ledger {ledger(sessions)}, dead letters {letters} (first: {first!r}), "
        f"queues {depths}, unacked {unacked}"
    )


def assert_exact(sessions, sent: Sent, extra_deliveries: int = 0) -> tuple[int, int, int]:
    """Each distinct event logged once, every delivery counted, only the invalid dead-lettered."""
    logged, deliveries, letters = ledger(sessions)
    assert logged == sent.distinct
    assert sent.valid <= deliveries <= sent.valid + extra_deliveries
    assert letters == sent.invalid
    with sessions() as s:
        reasons = s.execute(
            select(DeadLetterRow.reason, func.count()).group_by(DeadLetterRow.reason)
        ).all()
    assert dict(reasons) == ({"invalid_event": sent.invalid} if sent.invalid else {})
    return logged, deliveries, letters


def check(fleet: Fleet, *outs: Path) -> str:
    """`orderfleet check` of the published events; its last line, which must say 0 divergent."""
    published = fleet.log_dir / "published-all.jsonl"
    published.write_text("".join(out.read_text() for out in outs))
    done = subprocess.run(
        [sys.executable, "-m", "orderfleet.worker", "check", str(published)],
        env=fleet.env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    last = done.stdout.splitlines()[-1]
    assert last.endswith(" orders checked, 0 divergent"), last
    return last


def retries(fleet: Fleet) -> dict[str, int]:
    """The retries of the fleet's live workers so far, by cause."""
    return retries_by_cause(fleet.tallies())


def logged_events(sessions) -> int:
    return ledger(sessions)[0]


def log_count(fleet: Fleet, needle: str) -> int:
    return sum(p.log_text().count(needle) for p in fleet.processes)


def unacknowledged_after_commit(fleet: Fleet) -> int:
    """Messages whose batch committed but whose acknowledgement failed, from the workers' logs."""
    found = (
        re.findall(r"could not acknowledge (\d+) messages", p.log_text()) for p in fleet.processes
    )
    return sum(int(n) for counts in found for n in counts)


# --------------------------------------------------------------------------- (a) SIGKILL


def test_sigkilled_worker_recovers_within_the_visibility_timeout(
    fleets, producers, sessions, redis_server_url, key_prefix
):
    client = redis.Redis.from_url(redis_server_url)
    fleet = fleets(redis_server_url)
    victim = fleet.start("w0", "worker", "--partitions", "0-3")
    fleet.start("w1", "worker", "--partitions", "4-7")
    run = start_traffic(fleet, producers, "sim", *traffic("kill-", seed=1))
    wait_for(lambda: logged_events(sessions) > 300, 60, "traffic to flow")
    killed_at, in_hand = kill_with_a_message_in_hand(client, key_prefix, victim, FIRST_HALF)
    restarted = fleet.start("w0-restarted", "worker", "--partitions", "0-3")
    task_id = next(iter(in_hand))
    wait_for(
        lambda: f"[{task_id}] succeeded" in restarted.log_text(),
        VISIBILITY + 20,
        "the message in hand to come back",
    )
    recovery = time.monotonic() - killed_at
    sent = Sent.of([run.finish()])
    settle(sessions, client, key_prefix, sent)
    drained = time.monotonic() - killed_at
    logged, deliveries, _ = assert_exact(sessions, sent, extra_deliveries=len(in_hand))
    last = check(fleet, run.out)
    print(
        f"\nchaos sigkill: {sent.valid + sent.invalid} messages, {logged} distinct events, "
        f"{deliveries - sent.valid} extra deliveries; message in hand re-delivered "
        f"{recovery:.1f} s after the kill (visibility {VISIBILITY:g} s), drained "
        f"{drained:.1f} s after it; retries {retries(fleet)}; {last}"
    )
    assert VISIBILITY - 1 <= recovery <= VISIBILITY + 10
    client.close()


# --------------------------------------------------------------------------- (b) Redis restart

REDIS_DOWN = 2.0  # seconds Redis stays stopped


def test_workers_and_producers_reconnect_after_a_redis_restart(
    own_redis, fleets, producers, sessions, key_prefix
):
    url = embedded.redis_url(own_redis)
    client = redis.Redis.from_url(url)
    fleet = fleets(url)
    workers = [
        fleet.start("w0", "worker", "--partitions", "0-3"),
        fleet.start("w1", "worker", "--partitions", "4-7"),
    ]
    run = start_traffic(fleet, producers, "sim", *traffic("rr-", seed=2))
    wait_for(lambda: logged_events(sessions) > 300, 60, "traffic to flow")
    assert embedded.stop_redis(own_redis)
    time.sleep(REDIS_DOWN)
    embedded.ensure_redis(own_redis)
    up_at, before = time.monotonic(), logged_events(sessions)
    wait_for(lambda: logged_events(sessions) > before, 60, "events to be applied again")
    resumed = time.monotonic() - up_at
    sent = Sent.of([run.finish()])
    settle(sessions, client, key_prefix, sent)
    drained = time.monotonic() - up_at
    # A batch committed as Redis went away keeps its messages unacknowledged; each comes back
    # once (a duplicate). Beyond those, a message in hand per worker may come back.
    unacked = unacknowledged_after_commit(fleet)
    extra = unacked + len(workers) * 2
    logged, deliveries, _ = assert_exact(sessions, sent, extra_deliveries=extra)
    last = check(fleet, run.out)
    assert all(w.alive() for w in workers)
    lost = log_count(fleet, "Connection to broker lost")
    print(
        f"\nchaos redis-restart: {sent.valid + sent.invalid} messages, {logged} distinct "
        f"events, {deliveries - sent.valid} extra deliveries; Redis down {REDIS_DOWN:g} s; "
        f"applying again {resumed:.1f} s after it came back, drained {drained:.1f} s after; "
        f"{sent.publish_retries} producer re-sends, workers lost the broker {lost} times "
        f"with {unacked} committed messages unacknowledged; "
        f"retries {retries(fleet)}; {last}"
    )
    assert sent.publish_retries > 0
    client.close()


# --------------------------------------------------------------------------- (c) PostgreSQL

KILL_FOR = 5.0  # seconds of killing every client connection of the test database...
KILL_EVERY = 0.01  # ...this often
TERMINATE = text(
    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
    "WHERE datname = current_database() AND pid <> pg_backend_pid() "
    "AND backend_type = 'client backend'"
)


def kill_connections(database_url: str) -> tuple[int, int]:
    """pg_terminate_backend every client of the test database, again and again; (killed, rounds)."""
    admin = create_engine(database_url, isolation_level="AUTOCOMMIT")
    terminated = rounds = 0
    end = time.monotonic() + KILL_FOR
    with admin.connect() as conn:
        while time.monotonic() < end:
            terminated += conn.scalar(TERMINATE)
            rounds += 1
            time.sleep(KILL_EVERY)
    admin.dispose()
    return terminated, rounds


def test_workers_retry_when_their_database_connections_are_killed(
    fleets, producers, sessions, database_url, redis_server_url, key_prefix
):
    client = redis.Redis.from_url(redis_server_url)
    fleet = fleets(redis_server_url)
    workers = [
        fleet.start("w0", "worker", "--partitions", "0-3"),
        fleet.start("w1", "worker", "--partitions", "4-7"),
    ]
    run = start_traffic(fleet, producers, "sim", *traffic("pg-", seed=3, invalid=0.05))
    wait_for(lambda: logged_events(sessions) > 200, 60, "traffic to flow")
    terminated, rounds = kill_connections(database_url)
    sent = Sent.of([run.finish()])
    settle(sessions, client, key_prefix, sent)
    logged, deliveries, _ = assert_exact(sessions, sent, extra_deliveries=terminated)
    last = check(fleet, run.out)
    assert all(w.alive() for w in workers)
    retried = retries(fleet)
    print(
        f"\nchaos pg-terminate: {sent.valid + sent.invalid} messages, {logged} distinct "
        f"events, {deliveries - sent.valid} extra deliveries; {terminated} backends terminated "
        f"in {rounds} rounds over {KILL_FOR:g} s; retries {retried}; {last}"
    )
    assert retried.get("OperationalError", 0) > 0
    client.close()


# --------------------------------------------------------------------------- (d) shared partitions


def test_two_workers_on_the_same_partitions_under_traffic(
    fleets, producers, sessions, redis_server_url, key_prefix
):
    client = redis.Redis.from_url(redis_server_url)
    fleet = fleets(redis_server_url)
    workers = [fleet.start(f"w{n}", "worker", "--partitions", "0-7") for n in range(2)]
    run = start_traffic(fleet, producers, "sim", *traffic("twin-", seed=4))
    sent = Sent.of([run.finish()])
    settle(sessions, client, key_prefix, sent)
    logged, deliveries, letters = assert_exact(sessions, sent)
    last = check(fleet, run.out)
    stats = fleet.tallies()
    assert (stats["applied"], stats["duplicate"]) == (logged, deliveries - logged)
    assert letters > 0 and stats["dead_lettered"] == letters
    assert all(w.alive() for w in workers)
    print(
        f"\nchaos shared-partitions: {sent.valid + sent.invalid} messages, {logged} distinct "
        f"events, 2 workers on partitions 0-7; retries {retries(fleet)}; {last}"
    )
    client.close()


# --------------------------------------------------------------------------- (e) short lease

LEASE = "0.001"  # seconds: 1 ms, shorter than any apply (redis-py sets it as PX 1)
LEASE_RUNS = 8  # simulate runs on the same 20 orders per round (other seeds: other events)
LEASE_ROUNDS = 4  # at most; two batches must overlap on an order, which a round may not bring


def test_a_lock_lease_shorter_than_an_apply_leaves_the_version_fence_to_do_the_work(
    fleets, producers, sessions, redis_server_url, key_prefix
):
    client = redis.Redis.from_url(redis_server_url)
    fleet = fleets(redis_server_url, ORDERFLEET_LOCK_LEASE=LEASE)
    workers = [fleet.start(f"w{n}", "worker", "--partitions", "0-7") for n in range(2)]
    args = ["--orders", "20", "--prefix", "lease-", "--rate", "100", "--invalid-rate", "0"]
    runs: list[Traffic] = []
    for first in range(1, LEASE_ROUNDS * LEASE_RUNS, LEASE_RUNS):
        round_ = [
            start_traffic(fleet, producers, f"sim{seed}", *args, "--seed", str(seed))
            for seed in range(first, first + LEASE_RUNS)
        ]
        runs += round_
        sent = Sent.of([run.finish() for run in runs])
        settle(sessions, client, key_prefix, sent)
        retried = retries(fleet)
        if retried.get("VersionConflict", 0) > 0:
            break
    logged, _, _ = assert_exact(sessions, sent)
    last = check(fleet, *(run.out for run in runs))
    ran_out = log_count(fleet, "ran out before release")
    assert all(w.alive() for w in workers)
    print(
        f"\nchaos short-lease: {sent.valid} messages, {logged} distinct events on 20 orders "
        f"({len(runs) // LEASE_RUNS} rounds), lease {LEASE} s ran out {ran_out} times; "
        f"conflicts retried {retried}; {last}"
    )
    assert last == "20 orders checked, 0 divergent"
    assert ran_out > 0
    assert retried.get("VersionConflict", 0) > 0
    client.close()
