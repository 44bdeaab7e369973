"""`orderfleet simulate` and `orderfleet check` against a real worker, Redis and PostgreSQL."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
import redis
from orderfleet.models import parse_event
from orderfleet.models.tables import DeadLetterRow
from orderfleet.worker.dev.lifeline import guarded_popen
from orderfleet.worker.dev.pacing import BURST_SECONDS, LONGEST_PAUSE, TICK, Pacer
from orderfleet.worker.dev.simulate import SimulateOptions, plan, shares
from orderfleet.worker.routing import queue_name
from sqlalchemy import func, select, text

from tests.fleet import ORDERFLEET, Fleet, fleet_env, ledger, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]


@pytest.fixture
def fleet(database_url, redis_server_url, key_prefix, sessions, tmp_path):
    """One worker on every partition, on the test database and a test-only key prefix."""
    env = fleet_env(database_url, redis_server_url, key_prefix, ORDERFLEET_LOG_LEVEL="WARNING")
    running = Fleet(env, tmp_path)
    running.start("w0", "worker", "--partitions", "0-7")
    yield running
    running.stop_all()


def orderfleet(
    env: dict[str, str], *args: str, timeout: float = 120
) -> subprocess.CompletedProcess:
    """Run `python -m worker ARGS` with the fleet's settings; its output as text."""
    return subprocess.run(
        [sys.executable, "-m", "orderfleet.worker", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def simulate(fleet: Fleet, out: Path, *args: str) -> dict:
    """Run `orderfleet simulate --json --out OUT ARGS`; its report."""
    done = orderfleet(fleet.env, "simulate", "--json", "--out", str(out), *args)
    assert done.returncode == 0, done.stdout + done.stderr
    return json.loads(done.stdout)


def settled(sessions, report: dict) -> None:
    """Wait until every message of the run ended: applied, duplicate or dead letter."""
    expected = (report["published_distinct"], report["valid_sent"], report["invalid_sent"])
    wait_for(lambda: ledger(sessions) == expected, 90, f"the ledger to reach {expected}")


# --------------------------------------------------------------------------- simulate + check


def test_simulate_publishes_everything_and_check_finds_no_divergence(fleet, sessions, tmp_path):
    out = tmp_path / "published.jsonl"
    args = ["--orders", "60", "--producers", "2", "--seed", "7", "--prefix", "it-"]
    args += ["--invalid-rate", "0.03", "--late-rate", "0.05", "--late-delay", "0.5"]
    report = simulate(fleet, out, *args)
    published = [json.loads(line) for line in out.read_text().splitlines()]
    workload, sends = plan(SimulateOptions(60, 0, 2, 0.3, 0.03, 0.05, 0.5, seed=7, prefix="it-"))
    assert published == workload.distinct
    assert report["published_distinct"] == report["distinct"] == len(workload.distinct)
    assert report["valid_sent"] == len(workload.distinct) + workload.duplicates
    assert report["invalid_sent"] == len(workload.invalid) > 0
    assert report["late_sent"] == round(0.05 * report["valid_sent"]) > 0
    assert report["sent"] == len(sends) and report["errors"] == []
    settled(sessions, report)
    with sessions() as s:
        reasons = s.execute(
            select(DeadLetterRow.reason, func.count()).group_by(DeadLetterRow.reason)
        ).all()
    assert dict(reasons) == {"invalid_event": len(workload.invalid)}
    done = orderfleet(fleet.env, "check", str(out))
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.splitlines()[-1] == "60 orders checked, 0 divergent"


def test_check_names_a_tampered_order_and_a_missing_one(fleet, sessions, tmp_path):
    out = tmp_path / "published.jsonl"
    report = simulate(fleet, out, "--orders", "20", "--seed", "8", "--prefix", "tamper-")
    settled(sessions, report)
    with sessions.begin() as s:
        s.execute(
            text(
                "UPDATE orders SET document = jsonb_set(document, '{customer,currency}', "
                "'\"XXX\"') WHERE order_id = 'tamper-000004'"
            )
        )
        s.execute(text("DELETE FROM orders WHERE order_id = 'tamper-000011'"))
    done = orderfleet(fleet.env, "check", str(out))
    assert done.returncode == 1, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert "tamper-000004: customer" in lines
    assert any(line.strip().startswith('customer.currency: stored "XXX"') for line in lines)
    assert "tamper-000011: missing from the store" in lines
    assert lines[-1] == "20 orders checked, 1 divergent, 1 missing"


def test_check_reports_a_broken_decision(fleet, sessions, tmp_path):
    out = tmp_path / "published.jsonl"
    report = simulate(fleet, out, "--orders", "20", "--seed", "9", "--prefix", "dec-")
    settled(sessions, report)
    with sessions.begin() as s:
        decided = s.scalar(
            text("SELECT order_id FROM orders WHERE status = 'confirmed' ORDER BY order_id LIMIT 1")
        )
        s.execute(
            text(
                "UPDATE orders SET document = jsonb_set(document, '{decision}', 'null') "
                "WHERE order_id = :o"
            ),
            {"o": decided},
        )
    done = orderfleet(fleet.env, "check", str(out))
    assert done.returncode == 1
    assert f"{decided}: status, decision" in done.stdout.splitlines()
    assert '  decision: last emitted null, decide() says ["confirmed", null]' in done.stdout
    assert done.stdout.splitlines()[-1] == "20 orders checked, 1 divergent"


def test_check_refuses_a_file_that_is_not_events(fleet, tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"eventType": "OrderCreated"}\n')
    done = orderfleet(fleet.env, "check", str(bad))
    assert done.returncode == 2 and f"{bad}:1:" in done.stderr
    missing = orderfleet(fleet.env, "check", str(tmp_path / "nope.jsonl"))
    assert missing.returncode == 2


# --------------------------------------------------------------------------- the rate


@pytest.mark.parametrize("rate, producers", [(150, 2), (400, 3)])
def test_rate_limit_holds_within_ten_percent(
    database_url, redis_server_url, key_prefix, tmp_path, rate, producers
):
    """No worker: the queues only grow, so their depth over time is the rate sent."""
    env = fleet_env(database_url, redis_server_url, key_prefix)
    client = redis.Redis.from_url(redis_server_url)
    orders = rate * 3 // 5  # about 4 s of traffic
    args = ["--orders", str(orders), "--rate", str(rate), "--producers", str(producers)]
    command = [
        *ORDERFLEET,
        "simulate",
        "--json",
        *args,
        "--prefix",
        "rate-",
    ]
    with guarded_popen(command, env=env, stdout=subprocess.PIPE, text=True) as running:
        samples = depth_samples(client, key_prefix, running)
        report = json.loads(running.stdout.read())
    client.close()
    expected = (report["sent"] - 1) / rate
    measured = slope(samples, report["sent"])
    print(
        f"\nrate {rate}/s from {producers} producers: {report['sent']} messages in "
        f"{report['seconds']:.2f} s (report {report['rate']:.1f}/s, queues grew {measured:.1f}/s)"
    )
    assert report["sent"] == samples[-1][1] > 2 * rate
    assert abs(report["seconds"] - expected) <= 0.1 * expected, report
    assert abs(report["rate"] - rate) <= 0.1 * rate, report
    assert abs(measured - rate) <= 0.1 * rate


def depth_samples(
    client: redis.Redis, prefix: str, running: subprocess.Popen
) -> list[tuple[float, int]]:
    """(time, messages in the partition queues) every 50 ms until the producer exits."""
    keys = [f"{prefix}{queue_name(p)}" for p in range(8)]
    samples = []
    while True:
        done = running.poll() is not None
        pipe = client.pipeline(transaction=False)
        for key in keys:
            pipe.llen(key)
        samples.append((time.monotonic(), sum(pipe.execute())))
        if done:
            return samples
        time.sleep(0.05)


def slope(samples: list[tuple[float, int]], total: int) -> float:
    """Messages per second between 10% and 90% of the total (least squares)."""
    middle = [(t, n) for t, n in samples if 0.1 * total <= n <= 0.9 * total]
    mean_t = sum(t for t, _ in middle) / len(middle)
    mean_n = sum(n for _, n in middle) / len(middle)
    covariance = sum((t - mean_t) * (n - mean_n) for t, n in middle)
    return covariance / sum((t - mean_t) ** 2 for t, _ in middle)


def test_pacer_is_accurate_and_its_bursts_are_bounded():
    now = [0.0]
    pacer = Pacer(200, clock=lambda: now[0])
    sent = 0
    while now[0] < 10:
        sent += pacer.grant(1000)
        now[0] += 0.013
    assert abs(sent - 2000) <= 1 + 200 * BURST_SECONDS
    now[0] += 60  # a long stall (a broker outage): no catch-up burst after it
    assert pacer.grant(1000) == int(200 * BURST_SECONDS)
    assert pacer.grant(1000) == 0 and pacer.delay() == pytest.approx(1 / 200)


def test_an_open_loop_pacer_sends_event_k_at_k_over_rate_and_catches_up():
    now = [0.0]
    pacer = Pacer(100, burst=None, clock=lambda: now[0])
    assert pacer.grant(1000) == 1  # event 0 at once
    now[0] = 0.255
    assert pacer.grant(1000) == 25  # events 1..25 are due by 0.25 s
    assert pacer.delay() == pytest.approx(0.005)
    now[0] += 60  # a stall: every late send goes at once, none is skipped
    assert pacer.grant(10_000) == 6000


def test_pauses_last_a_tick_at_least_and_until_the_next_send_at_most():
    slept: list[float] = []
    for rate in (10_000, 50, 0.5):
        pacer = Pacer(rate, clock=lambda: 0.0)
        pacer.grant(1)
        pacer.pause(slept.append)
    assert slept == [TICK, pytest.approx(1 / 50), LONGEST_PAUSE]


def test_plan_is_seeded_by_seed_and_prefix_and_shares_cover_it():
    a = plan(SimulateOptions(30, late_rate=0.1, seed=1, prefix="a-"))[1]
    assert a == plan(SimulateOptions(30, late_rate=0.1, seed=1, prefix="a-"))[1]
    b = plan(SimulateOptions(30, late_rate=0.1, seed=1, prefix="b-"))[1]
    ids_a = {parse_event(s.wire).event_id for s in a if not s.invalid}
    ids_b = {parse_event(s.wire).event_id for s in b if not s.invalid}
    assert not ids_a & ids_b  # two prefixes never share an eventId
    assert sum(s.late for s in a) == round(0.1 * len(a))
    parts = shares(a, 3)
    assert sorted(map(id, (s for p in parts for s in p))) == sorted(map(id, a))


def test_simulate_refuses_bad_options(fleet):
    for args in (["--late-rate", "2"], ["--producers", "0"], ["--prefix", "a b"]):
        done = orderfleet(fleet.env, "simulate", "--orders", "1", *args)
        assert done.returncode == 2, (args, done.stdout, done.stderr)
