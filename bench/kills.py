"""SIGKILL a worker at random moments during a drain; count what was lost or applied twice.

    python -m bench.kills --kills 20 [--seed N] [--orders N] [--workers 2] [--monitor]
    python -m bench.kills --kills 20 --env ORDERFLEET_BATCHING=true

A backlog of shuffled events (about 30 % re-delivered copies, the bench traffic of
worker/dev/workload.py) is published before any worker starts and its messages are listed from
the queues (task id, delivery tag, eventId of each). One or two `orderfleet worker` processes
drain it; at `--kills` random moments a worker is SIGKILLed (its whole process group) and
started again. When the broker is idle the run counts, per message and per event:

- lost messages: with --monitor exactly, the messages never recorded in kombu's `unacked_index`
  (ZADD, from kombu or from a fetch script) yet gone from the broker; without it, the outcomes
  an event is short of its copies sent (`deliveries` + dead letters per eventId; approximate: a
  batch holding two copies of one event counts one delivery, so use --monitor with batching);
- lost events: distinct eventIds sent that are neither in `order_events` nor in `dead_letters`
  (a lost message whose event had a re-delivered copy loses no event: both are reported);
- double-applied: orders whose `eventCount` differs from their distinct logged events, and the
  divergent orders of `orderfleet verify`;
- the message ledger (`orderfleet ledger --json`) and deliveries against messages sent.

With --monitor, Redis MONITOR (filtered to the run's key prefix) records the broker commands;
each lost message is traced to the BRPOP that popped it (by replaying the queue commands from
the listing), its window is named and the commands up to the kill are kept (traces.json); the
run also measures how long each popped message stayed unrecorded, and the share of consuming
time with one unrecorded (the chance that a SIGKILL at a uniform moment loses a message).
MONITOR slows Redis and the workers: the windows it measures are somewhat longer than without.

Everything lives in its own database (kills_<id>, dropped at the end) and Redis key prefix
(deleted at the end); every process runs in a guarded process group and dies with this one.
Extra settings go to the workers as environment: ORDERFLEET_* variables of this process (other
than servers and prefixes) and every --env NAME=VALUE. Exit status: 0 nothing lost or applied
twice, 1 something was, 2 the run itself failed.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import os
import random
import re
import shlex
import signal
import subprocess
import sys
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis
from orderfleet.models.tables import DeadLetterRow, EventRow, OrderRow
from orderfleet.worker.db import driver_url, make_engine, session_factory
from orderfleet.worker.dev.processes import FleetProcess, Supervisor
from orderfleet.worker.dev.scratch import create_database, delete_prefix, drop_database, unique_id
from orderfleet.worker.dev.workload import bench_traffic
from orderfleet.worker.routing import queue_name
from orderfleet.worker.servers import broker_url_of_redis
from sqlalchemy import func, select

EVENTS_PER_ORDER = 4.96  # mean distinct events of workload.compact_order
OWN = (  # settings the harness owns: servers and prefixes
    "ORDERFLEET_DATABASE_URL",
    "ORDERFLEET_BROKER_URL",
    "ORDERFLEET_REDIS_URL",
    "ORDERFLEET_BROKER_PREFIX",
    "ORDERFLEET_KEY_PREFIX",
    "ORDERFLEET_READY_FILE",
)
TAG = re.compile(r'"delivery_tag": "([^"]+)"')
START_ATTEMPTS = 4  # a worker that fails to start (someone's edit in progress) is retried
START_RETRY_PAUSE = 20.0


class RunError(RuntimeError):
    """The run could not be carried out (not a finding about the fleet)."""


# --------------------------------------------------------------------------- options


def arguments(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.kills", description=__doc__.split("\n")[0])
    p.add_argument("--kills", type=int, default=20, help="SIGKILLs during the drain")
    p.add_argument("--seed", type=int, default=1, help="traffic and kill moments")
    p.add_argument("--orders", type=int, default=3000, help="orders in the backlog (about)")
    p.add_argument("--bulk", action="store_true", help="publish bulk messages (if supported)")
    p.add_argument("--redeliver", type=float, default=0.3, help="share of re-delivered copies")
    p.add_argument("--workers", type=int, choices=(1, 2), default=2, help="partition workers")
    p.add_argument("--shared", action="store_true", help="both workers on all partitions")
    p.add_argument("--partitions", type=int, default=8)
    p.add_argument("--min-up", type=float, default=0.2, help="seconds a worker runs at least")
    p.add_argument("--max-up", type=float, default=2.5, help="...and at most, before a kill")
    p.add_argument("--visibility", type=float, default=10.0, help="broker visibility timeout")
    p.add_argument("--monitor", action="store_true", help="record Redis MONITOR, trace losses")
    p.add_argument("--env", action="append", default=[], metavar="NAME=VALUE")
    p.add_argument("--worker-command", help="command instead of `python -m orderfleet.worker`")
    p.add_argument("--drain-timeout", type=float, default=180.0)
    p.add_argument("--timeout", type=float, default=600.0, help="bound of the whole run")
    p.add_argument("--database-url", default=None, help="admin URL (a database is created)")
    p.add_argument("--redis-url", default=None)
    p.add_argument("--out", type=Path, default=None, help="logs and report (kept)")
    p.add_argument("--json", action="store_true", help="print the report as JSON at the end")
    return p.parse_args(argv)


def server_urls(args: argparse.Namespace) -> tuple[str, str]:
    db = (
        args.database_url
        or os.environ.get("ORDERFLEET_TEST_DATABASE_URL")
        or "postgresql://postgres@127.0.0.1:5432/postgres"
    )
    rd = args.redis_url or os.environ.get("ORDERFLEET_TEST_REDIS_URL") or "redis://127.0.0.1:6379/0"
    return driver_url(db), rd


def extra_env(args: argparse.Namespace) -> dict[str, str]:
    """ORDERFLEET_* of this process (not servers or prefixes), then --env, for the workers."""
    extra = {k: v for k, v in os.environ.items() if k.startswith("ORDERFLEET_") and k not in OWN}
    extra.pop("ORDERFLEET_TEST_DATABASE_URL", None)
    extra.pop("ORDERFLEET_TEST_REDIS_URL", None)
    for item in args.env:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise SystemExit(f"--env {item!r}: expected NAME=VALUE")
        extra[name] = value
    return extra


# --------------------------------------------------------------------------- the run


@dataclass
class Message:
    """One message of the backlog, as listed from its queue before any worker started."""

    task_id: str
    tag: str
    queue: str
    event_ids: list[str]


@dataclass
class Kill:
    number: int
    victim: str
    pid: int
    at: float  # time.time(), comparable with MONITOR's timestamps
    up: float
    backlog: int
    held: list[str]  # task ids recorded in `unacked` for the victim's queues after the kill
    lost: list[str] = field(default_factory=list)


@dataclass
class Run:
    args: argparse.Namespace
    run_id: str
    prefix: str
    admin_url: str
    database_url: str
    redis_url: str
    out: Path
    env: dict[str, str]
    client: redis.Redis
    started: float = field(default_factory=time.monotonic)
    supervisor: Supervisor = field(default_factory=Supervisor)
    monitor: FleetProcess | None = None

    def left(self) -> float:
        return self.args.timeout - (time.monotonic() - self.started)

    def queues(self) -> list[str]:
        return [queue_name(p) for p in range(self.args.partitions)]


def open_run(args: argparse.Namespace) -> Run:
    admin_url, redis_url = server_urls(args)
    run_id = unique_id(8)
    name = f"kills_{run_id}"
    url = create_database(admin_url, name)
    prefix = f"{name}:"
    out = args.out or Path(f"/tmp/{name}")
    out.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("ORDERFLEET_")}
    env.update(
        {
            "ORDERFLEET_DATABASE_URL": url,
            "ORDERFLEET_BROKER_URL": broker_url_of_redis(redis_url),
            "ORDERFLEET_REDIS_URL": redis_url,
            "ORDERFLEET_BROKER_PREFIX": prefix,
            "ORDERFLEET_KEY_PREFIX": prefix,
            "ORDERFLEET_PARTITIONS": str(args.partitions),
            "ORDERFLEET_VISIBILITY_TIMEOUT": f"{args.visibility:g}",
            "ORDERFLEET_RETRY_BACKOFF_MAX": f"{min(2.0, args.visibility / 2 - 0.5):g}",
            "ORDERFLEET_LOCK_LEASE": "2",
            "ORDERFLEET_OUTBOX_RELAY_AFTER": "2",
            "ORDERFLEET_LOG_LEVEL": "WARNING",
            "ORDERFLEET_TASK_EVENTS": "false",
        }
    )
    env.update(extra_env(args))
    client = redis.Redis.from_url(redis_url)
    return Run(args, run_id, prefix, admin_url, url, redis_url, out, env, client)


def close_run(run: Run) -> None:
    """Stop every process, delete the prefix's keys, drop the database; never raises."""
    run.supervisor.stop_all()
    if run.monitor:
        with contextlib.suppress(Exception):
            run.monitor.stop(timeout=15)
    with contextlib.suppress(Exception):
        delete_prefix(run.client, run.prefix)
    with contextlib.suppress(Exception):
        run.client.close()
    with contextlib.suppress(Exception):
        drop_database(run.admin_url, f"kills_{run.run_id}")


# --------------------------------------------------------------------------- backlog


def prefill(run: Run) -> tuple[list[dict[str, Any]], dict[str, Message]]:
    """Publish the backlog with `orderfleet publish`; the events sent and the listed messages."""
    messages = round(run.args.orders * EVENTS_PER_ORDER * (1 + run.args.redeliver))
    sent = bench_traffic(messages, run.args.seed, f"k{run.run_id}", redeliver=run.args.redeliver)
    path = run.out / "backlog.jsonl"
    path.write_text("".join(json.dumps(e) + "\n" for e in sent))
    done = subprocess.run(
        [sys.executable, "-m", "orderfleet.worker", "publish", str(path), *publish_mode(run)],
        env=run.env,
        capture_output=True,
        text=True,
        timeout=min(300, run.left()),
    )
    if done.returncode != 0:
        raise RunError(f"publish failed: {done.stdout[-2000:]}{done.stderr[-2000:]}")
    inventory: dict[str, Message] = {}
    for queue in run.queues():
        for raw in run.client.lrange(run.prefix + queue, 0, -1):
            message = listed(raw, queue)
            inventory[message.tag] = message
    carried = sum(len(m.event_ids) for m in inventory.values())
    if carried != len(sent):
        raise RunError(f"{len(sent)} events published but {carried} listed on the queues")
    return sent, inventory


def publish_mode(run: Run) -> list[str]:
    """One message per event unless --bulk (when `orderfleet publish` knows the difference)."""
    shown = subprocess.run(
        [sys.executable, "-m", "orderfleet.worker", "publish", "--help"],
        env=run.env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    if "--per-event" not in shown.stdout:
        return []
    return ["--bulk"] if run.args.bulk else ["--per-event"]


def listed(raw: bytes, queue: str) -> Message:
    """The identity of one queued kombu envelope and the eventIds it carries (one or a bulk)."""
    payload = json.loads(raw)
    properties, headers = payload["properties"], payload.get("headers") or {}
    events: list[Any] = []
    with contextlib.suppress(Exception):
        body = json.loads(base64.b64decode(payload["body"]))
        kwargs = body[1] if isinstance(body, list) else {}
        events = [kwargs["event"]] if "event" in kwargs else list(kwargs.get("events") or [])
    ids = [e.get("eventId") for e in events if isinstance(e, dict) and e.get("eventId")]
    return Message(headers.get("id", ""), properties["delivery_tag"], queue, ids)


def queue_snapshots(run: Run) -> dict[str, list[str]]:
    """Delivery tags on each queue key, left to right (BRPOP takes from the right)."""
    lists: dict[str, list[str]] = {}
    for queue in run.queues():
        key = run.prefix + queue
        lists[key] = [
            json.loads(raw)["properties"]["delivery_tag"] for raw in run.client.lrange(key, 0, -1)
        ]
    return lists


# --------------------------------------------------------------------------- workers


def worker_command(run: Run) -> list[str]:
    if run.args.worker_command:
        return shlex.split(run.args.worker_command)
    return [sys.executable, "-m", "orderfleet.worker"]


def partition_spec(run: Run, slot: int) -> str:
    last = run.args.partitions - 1
    if run.args.workers == 1 or run.args.shared:
        return f"0-{last}"
    half = run.args.partitions // 2
    return f"0-{half - 1}" if slot == 0 else f"{half}-{last}"


def start_worker(run: Run, name: str, spec: str) -> FleetProcess:
    """`orderfleet worker --partitions spec`, ready; retried when it cannot start."""
    for attempt in range(1, START_ATTEMPTS + 1):
        process = FleetProcess(
            name, ["worker", "--partitions", spec], run.env, run.out, command=worker_command(run)
        )
        run.supervisor.start(process)
        try:
            return process.wait_ready(timeout=min(60.0, max(5.0, run.left())))
        except RuntimeError as exc:
            run.supervisor.kill([process])
            if attempt == START_ATTEMPTS or run.left() < START_RETRY_PAUSE + 30:
                raise RunError(f"worker {name} does not start: {exc}") from None
            print(f"worker {name} did not start (attempt {attempt}); retrying", flush=True)
            time.sleep(START_RETRY_PAUSE)
    raise AssertionError("unreachable")


def queues_of(run: Run, spec: str) -> list[str]:
    low, _, high = spec.partition("-")
    return [queue_name(p) for p in range(int(low), int(high or low) + 1)]


def held_by(run: Run, queues: list[str]) -> list[str]:
    """Task ids in kombu's `unacked` hash whose message came from these queues."""
    found = []
    for raw in run.client.hvals(f"{run.prefix}unacked"):
        message, _exchange, routing_key = json.loads(raw)
        if routing_key in queues:
            found.append((message.get("headers") or {}).get("id", "?"))
    return found


def backlog(run: Run, queues: list[str]) -> int:
    pipe = run.client.pipeline(transaction=False)
    for queue in queues:
        pipe.llen(run.prefix + queue)
    return sum(pipe.execute())


def kill_loop(run: Run, rng: random.Random) -> list[Kill]:
    """Start the workers, then SIGKILL one at `--kills` random moments, restarting it each time."""
    slots = {}
    for slot in range(run.args.workers):
        spec = partition_spec(run, slot)
        slots[slot] = (start_worker(run, f"w{slot}", spec), spec, time.monotonic())
    kills: list[Kill] = []
    for number in range(1, run.args.kills + 1):
        if run.left() < run.args.drain_timeout + 30:
            print(f"time bound reached after {number - 1} kills", flush=True)
            break
        slot = rng.randrange(run.args.workers)
        victim, spec, ready_at = slots[slot]
        up = rng.uniform(run.args.min_up, run.args.max_up)
        time.sleep(max(0.0, ready_at + up - time.monotonic()))
        if not victim.alive():
            raise RunError(f"{victim.name} died by itself:\n{victim.log_text()[-3000:]}")
        at, pid = time.time(), victim.pid
        victim.kill()  # SIGKILL to its process group; reaped, released from the watchdog
        queues = queues_of(run, spec)
        kill = Kill(number, victim.name, pid, at, time.monotonic() - ready_at, 0, [])
        kill.backlog, kill.held = backlog(run, queues), held_by(run, queues)
        kills.append(kill)
        print(
            f"kill {number:2d}/{run.args.kills}: {victim.name} (pid {pid}) after "
            f"{kill.up:.2f} s up; backlog of its queues {kill.backlog}, "
            f"{len(kill.held)} held in unacked",
            flush=True,
        )
        restarted = start_worker(run, f"w{slot}-{number}", spec)
        slots[slot] = (restarted, spec, time.monotonic())
    return kills


def drain(run: Run) -> float:
    """Wait until no message waits or is unacknowledged (twice, a second apart); seconds."""
    began = time.monotonic()
    deadline = began + min(run.args.drain_timeout, max(10.0, run.left() - 20))
    quiet = 0
    while time.monotonic() < deadline:
        idle = backlog(run, run.queues()) == 0 and run.client.hlen(f"{run.prefix}unacked") == 0
        quiet = quiet + 1 if idle else 0
        if quiet >= 3:
            return time.monotonic() - began
        time.sleep(0.5)
    depth = backlog(run, run.queues())
    unacked = run.client.hlen(f"{run.prefix}unacked")
    raise RunError(f"not drained in {deadline - began:.0f} s: {depth} waiting, {unacked} unacked")


# --------------------------------------------------------------------------- MONITOR


def start_monitor(run: Run) -> FleetProcess:
    """redis-cli MONITOR, only the lines naming the run's prefix, to monitor.log."""
    url = shlex.quote(run.redis_url)
    script = (
        f"redis-cli -u {url} monitor | grep --line-buffered -F {shlex.quote(run.prefix)}"
        " > " + shlex.quote(str(run.out / "monitor.txt"))
    )
    process = FleetProcess("monitor", ["-c", script], run.env, run.out, command=["sh"])
    run.monitor = process.start()
    time.sleep(0.5)
    if not process.alive():
        raise RunError(f"redis-cli monitor did not start: {process.log_text()[-500:]}")
    return process


@dataclass
class Line:
    at: float
    client: str
    words: list[str]
    raw: str


def monitor_lines(path: Path) -> list[Line]:
    lines = []
    with path.open(errors="replace") as handle:
        for raw in handle:
            head, _, rest = raw.partition("] ")
            stamp, _, where = head.partition(" [")
            try:
                at = float(stamp)
                words = shlex.split(rest)
            except ValueError:
                continue
            lines.append(Line(at, where.split(" ", 1)[-1], words, raw.rstrip("\n")))
    return lines


@dataclass
class Pop:
    tag: str
    key: str
    line: int  # index of the BRPOP in the MONITOR lines
    client: str
    at: float
    atomic: bool = False  # taken by a script that records it too: no window on the server


def replay(lines: list[Line], lists: dict[str, list[str]]) -> dict[str, list[Pop]]:
    """Which BRPOP (or fetch script's RPOP) took which message: the queues replayed."""
    queues = {key: deque(tags) for key, tags in lists.items()}
    blocked: list[tuple[str, list[str], float, int]] = []  # client, keys, until, line
    pops: dict[str, list[Pop]] = {}

    def take(key: str, client: str, index: int, at: float, atomic: bool = False) -> None:
        tag = queues[key].pop()
        pops.setdefault(tag, []).append(Pop(tag, key, index, client, at, atomic))

    script = ("", 0)  # the client and line of the last EVAL/EVALSHA: its RPOPs are `lua` lines
    for index, line in enumerate(lines):
        if not line.words:
            continue
        command = line.words[0].upper()
        if command in ("EVAL", "EVALSHA") and line.client != "lua":
            script = (line.client, index)
        elif command == "RPOP" and line.client == "lua" and queues.get(line.words[1]):
            take(line.words[1], script[0], script[1], line.at, atomic=True)
        elif command == "BRPOP":
            keys, timeout = line.words[1:-1], float(line.words[-1])
            blocked = [b for b in blocked if b[0] != line.client]
            ready = next((k for k in keys if queues.get(k)), None)
            if ready is not None:
                take(ready, line.client, index, line.at)
            else:
                until = line.at + timeout if timeout else float("inf")
                blocked.append((line.client, keys, until, index))
        elif command in ("LPUSH", "RPUSH") and line.words[1] in queues:
            key = line.words[1]
            for value in line.words[2:]:
                match = TAG.search(value)
                tag = match.group(1) if match else f"?{index}"
                (queues[key].appendleft if command == "LPUSH" else queues[key].append)(tag)
            while queues[key]:
                waiting = [b for b in blocked if key in b[1] and b[2] >= line.at]
                if not waiting:
                    break
                client, _keys, _until, where = waiting[0]
                blocked.remove(waiting[0])
                take(key, client, where, line.at)
    return pops


def recorded_at(lines: list[Line], prefix: str) -> dict[str, list[float]]:
    """When kombu recorded each delivery tag as unacknowledged (ZADD unacked_index score tag)."""
    index_key = f"{prefix}unacked_index"
    found: dict[str, list[float]] = {}
    for line in lines:
        words = line.words
        if len(words) >= 4 and words[0].upper() == "ZADD" and words[1] == index_key:
            found.setdefault(words[3], []).append(line.at)
    return found


def exposure(pops: dict[str, list[Pop]], recorded: dict[str, list[float]]) -> dict[str, Any]:
    """How long popped messages stayed unrecorded: the share of time a SIGKILL loses one."""
    windows: list[float] = []
    spans: dict[str, list[float]] = {}
    for taken in pops.values():  # a consuming connection's time: its first to its last pop
        for pop in taken:
            span = spans.setdefault(pop.client, [pop.at, pop.at])
            span[0], span[1] = min(span[0], pop.at), max(span[1], pop.at)
    for tag, taken in pops.items():
        marks = sorted(recorded.get(tag, []))
        for pop in taken:
            after = next((t for t in marks if t >= pop.at), None)
            if after is not None:
                windows.append(0.0 if pop.atomic else after - pop.at)
    if not windows:
        return {}
    windows.sort()
    busy = sum(end - start for start, end in spans.values())
    share = sum(windows) / busy if busy else 0.0

    def q(f: float) -> float:
        return round(windows[min(len(windows) - 1, int(f * len(windows)))] * 1000, 3)

    return {
        "pops_recorded": len(windows),
        "pops_atomic": sum(1 for taken in pops.values() for pop in taken if pop.atomic),
        "window_ms": {"p50": q(0.5), "p90": q(0.9), "p99": q(0.99), "max": q(1.0)},
        "windows_over_5ms": sum(1 for w in windows if w > 0.005),
        "consuming_seconds": round(busy, 1),
        "unrecorded_share": round(share, 4),  # P(a kill at a uniform moment loses a message)
    }


def trace(
    lines: list[Line], pop: Pop, kills: list[Kill], last_seen: dict[str, float], window: int = 40
) -> dict[str, Any]:
    """The BRPOP that took a lost message, what happened until the kill, and which window."""
    kill = next((k for k in kills if k.at >= pop.at), None)
    until = kill.at if kill else pop.at + 1.0
    after = [line for line in lines[pop.line + 1 :] if pop.at <= line.at <= until + 0.05]
    same = [line for line in after if line.client == pop.client]
    # the victim's other connections: busy after the BRPOP, never seen after the kill
    victim = [
        line
        for line in after
        if line.client not in (pop.client, "lua") and last_seen[line.client] <= until + 0.05
    ]
    counted = any(line.words[0].upper() == "HINCRBY" and "taken" in line.raw for line in same)
    if counted:
        kind = "read and counted (HINCRBY taken), killed before kombu's ZADD/HSET unacked"
    elif victim:
        kind = f"reply left unread while the worker went on ({len(victim)} commands after it)"
    else:
        kind = "killed between the BRPOP and the end of reading its reply"
    return {
        "tag": pop.tag,
        "queue": pop.key,
        "kind": kind,
        "brpop": lines[pop.line].raw[:400],
        "kill": kill.number if kill else None,
        "kill_after_brpop_ms": round((until - pop.at) * 1000, 3) if kill else None,
        "same_connection_after": [line.raw[:300] for line in same][:window],
        "victim_commands_after": [line.raw[:300] for line in victim][:window],
    }


# --------------------------------------------------------------------------- counting


def count(run: Run, sent: list[dict[str, Any]]) -> dict[str, Any]:
    """Events and messages accounted for in the database, `verify` and the message ledger."""
    engine = make_engine(run.database_url)
    sessions = session_factory(engine)
    with sessions() as s:
        delivered = Counter(dict(s.execute(select(EventRow.event_id, EventRow.deliveries)).all()))
        lettered = Counter(e for e in s.scalars(select(DeadLetterRow.event_id)) if e)
        letters = int(s.scalar(select(func.count()).select_from(DeadLetterRow)) or 0)
        grouped = select(DeadLetterRow.reason, func.count()).group_by(DeadLetterRow.reason)
        reasons = {reason: n for reason, n in s.execute(grouped)}
        per_order = (
            select(EventRow.order_id, func.count().label("n"))
            .group_by(EventRow.order_id)
            .subquery()
        )
        doubled = s.execute(
            select(OrderRow.order_id, OrderRow.event_count, per_order.c.n)
            .join(per_order, per_order.c.order_id == OrderRow.order_id, isouter=True)
            .where(OrderRow.event_count != func.coalesce(per_order.c.n, 0))
        ).all()
    engine.dispose()
    copies = Counter(e["eventId"] for e in sent)
    lost_events = sorted(e for e in copies if e not in delivered and e not in lettered)
    # a message that never reached an outcome leaves its event with fewer outcomes than copies
    # (a re-delivery of the same event after a kill could hide one: rare, MONITOR does not; a
    # batch holding two copies of one event may count one delivery: use --monitor there)
    short = {e: n - delivered[e] - lettered[e] for e, n in copies.items()}
    return {
        "events_sent": len(sent),
        "distinct_events": len(copies),
        "events_logged": sum(1 for e in copies if e in delivered),
        "deliveries_counted": sum(delivered.values()),
        "dead_letters": letters,
        "dead_letter_reasons": reasons,
        "lost_events": lost_events,
        "messages_short": {e: n for e, n in sorted(short.items()) if n > 0},
        "double_applied": [
            {"orderId": o, "eventCount": c, "distinctLogged": n} for o, c, n in doubled
        ],
        "verify_divergent": orderfleet(run, "verify", "--json"),
        "ledger": orderfleet(run, "ledger", "--json"),
    }


def orderfleet(run: Run, *args: str) -> Any:
    done = subprocess.run(
        [sys.executable, "-m", "orderfleet.worker", *args],
        env=run.env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    try:
        return json.loads(done.stdout)
    except ValueError:
        return {"exit": done.returncode, "stdout": done.stdout[-500:], "stderr": done.stderr[-500:]}


# --------------------------------------------------------------------------- main


def execute(run: Run) -> dict[str, Any]:
    rng = random.Random(run.args.seed)
    sent, inventory = prefill(run)
    lists = queue_snapshots(run)
    print(
        f"backlog: {len(inventory)} messages of {len(sent)} events "
        f"({len({e['eventId'] for e in sent})} distinct) "
        f"on {run.args.partitions} partitions; prefix {run.prefix}, logs in {run.out}",
        flush=True,
    )
    if run.args.monitor:
        start_monitor(run)
    began = time.monotonic()
    kills = kill_loop(run, rng)
    killing = time.monotonic() - began
    drained = drain(run)
    run.supervisor.stop(list(run.supervisor.processes))
    if run.monitor:
        time.sleep(0.5)
        run.monitor.stop(timeout=5)
    report = count(run, sent)
    report.update(
        messages_sent=len(inventory),
        run=run.run_id,
        seed=run.args.seed,
        kills=len(kills),
        killing_seconds=round(killing, 1),
        drain_seconds=round(drained, 1),
        settings={k: v for k, v in run.env.items() if k.startswith("ORDERFLEET_")},
    )
    if run.args.monitor:
        report["monitor"] = analyse_monitor(run, lists, inventory, kills)
    report["per_kill"] = [k.__dict__ for k in kills]
    return report


def analyse_monitor(
    run: Run, lists: dict[str, list[str]], inventory: dict[str, Message], kills: list[Kill]
) -> dict[str, Any]:
    """Messages never recorded as unacknowledged, each traced to its BRPOP and its kill."""
    lines = monitor_lines(run.out / "monitor.txt")
    pops = replay(lines, lists)
    recorded = recorded_at(lines, run.prefix)
    last_seen = {line.client: line.at for line in lines}
    never = sorted(tag for tag in inventory if tag not in recorded)
    traces = []
    for tag in never:
        taken = pops.get(tag, [])
        entry = trace(lines, taken[-1], kills, last_seen) if taken else {"tag": tag}
        entry.update(task=inventory[tag].task_id, events=inventory[tag].event_ids)
        traces.append(entry)
        if entry.get("kill"):
            kills[entry["kill"] - 1].lost.append(inventory[tag].task_id)
    (run.out / "traces.json").write_text(json.dumps(traces, indent=2))
    return {
        "lines": len(lines),
        "brpop_replies_with_a_message": sum(len(p) for p in pops.values()),
        "never_recorded_unacked": len(never),
        "exposure": exposure(pops, recorded),
        "traces": traces,
    }


def lost_messages(report: dict[str, Any]) -> int:
    """Messages without an outcome: MONITOR's exact count, else the events' missing outcomes."""
    monitor = report.get("monitor")
    if monitor:
        return monitor["never_recorded_unacked"]
    return sum(report["messages_short"].values())


def summary(report: dict[str, Any]) -> str:
    rows = report["ledger"] if isinstance(report["ledger"], list) else []
    taken = sum(row.get("taken", 0) for row in rows)
    ended = sum(row.get("ended", 0) for row in rows)
    ledger_lost = sum(row.get("lost", 0) for row in rows)
    divergent = report["verify_divergent"]
    divergent_n = len(divergent) if isinstance(divergent, list) else f"? {divergent}"
    extra = report["deliveries_counted"] + report["dead_letters"] - report["events_sent"]
    exposure = (report.get("monitor") or {}).get("exposure") or {}
    share = f"; unrecorded share {exposure['unrecorded_share']:.2%}" if exposure else ""
    return (
        f"TOTAL {report['kills']} kills, {report['messages_sent']} messages of "
        f"{report['events_sent']} events ({report['distinct_events']} distinct): lost messages "
        f"{lost_messages(report)} "
        f"(events short of an outcome {sum(report['messages_short'].values())}), lost events "
        f"{len(report['lost_events'])}, double-applied orders {len(report['double_applied'])}, "
        f"verify divergent {divergent_n}; event outcomes - copies sent {extra:+d}; ledger "
        f"taken {taken} ended {ended} lost {ledger_lost}{share}; kills took "
        f"{report['killing_seconds']} s, drain {report['drain_seconds']} s"
    )


def failed(report: dict[str, Any]) -> bool:
    divergent = report["verify_divergent"]
    return bool(
        lost_messages(report)
        or report["lost_events"]
        or report["double_applied"]
        or not isinstance(divergent, list)
        or divergent
    )


def code_of() -> dict[str, str]:
    """Which orderfleet the run used: its path, and the commit and changes when it is a checkout."""
    import orderfleet

    path = Path(orderfleet.__file__).resolve().parent
    found = {"path": str(path)}
    with contextlib.suppress(Exception):
        git = ["git", "-C", str(path)]
        head = subprocess.run([*git, "rev-parse", "HEAD"], capture_output=True, text=True)
        diff = subprocess.run([*git, "diff", "HEAD", "--stat"], capture_output=True, text=True)
        if head.returncode == 0:
            found["commit"] = head.stdout.strip()
            found["changed"] = diff.stdout.strip().splitlines()[-1] if diff.stdout.strip() else ""
    return found


def main(argv: list[str] | None = None) -> int:
    args = arguments(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(2))
    run = open_run(args)
    try:
        report = execute(run)
    except (RunError, subprocess.TimeoutExpired) as exc:
        print(f"kills: run failed: {exc}", file=sys.stderr)
        return 2
    finally:
        close_run(run)
    report["code"] = code_of()
    (run.out / "report.json").write_text(json.dumps(report, indent=2, default=str))
    for kill in report["per_kill"]:
        lost = f", lost {len(kill['lost'])} {kill['lost']}" if args.monitor else ""
        print(
            f"kill {kill['number']:2d}: {kill['victim']} up {kill['up']:.2f} s, backlog "
            f"{kill['backlog']}, {len(kill['held'])} held in unacked{lost}"
        )
    for found in (report.get("monitor") or {}).get("traces", []):
        print(
            f"lost {found['task']} (events {found['events'][:3]}): {found.get('kind')}; BRPOP "
            f"{found.get('kill_after_brpop_ms')} ms before kill {found.get('kill')}"
        )
    if args.json:
        print(json.dumps(report, indent=2, default=str))
    print(summary(report))
    print(f"report: {run.out / 'report.json'}")
    return 1 if failed(report) else 0


if __name__ == "__main__":
    sys.exit(main())
