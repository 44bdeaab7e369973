"""The `python -m bench` command line: every option, its default, and what --quick sets."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from typer.testing import CliRunner

from bench import cli as bench_cli
from bench.config import DEFAULT_DATA_DIR, BenchConfig

OPTIONS = ["--workers", "--runs", "--duration", "--warmup", "--bulk-duration", "--load"]
OPTIONS += ["--rate-duration", "--latency-warmup", "--noop-messages", "--producer-events"]
OPTIONS += ["--orders-in-store", "--producers", "--partitions", "--seed", "--wait-quiet"]
OPTIONS += ["--quick", "--data-dir", "--output", "--brokers", "--amqp-url"]
WIDE = {"COLUMNS": "200"}  # one line per option: Rich wraps help text to the terminal

DEFAULTS = BenchConfig(
    workers=2,
    runs=3,
    duration=30.0,
    warmup=1.0,
    bulk_duration=10.0,
    load=0.5,
    rate_duration=20.0,
    latency_warmup=2.0,
    noop_messages=20_000,
    producer_events=100_000,
    orders_in_store=None,
    producers=2,
    partitions=16,
    seed=7,
    wait_quiet=60.0,
    quick=False,
    data_dir=DEFAULT_DATA_DIR,
    output=None,
    brokers=None,
    amqp_url=None,
)
QUICK = {
    "runs": 1,
    "duration": 5.0,
    "warmup": 0.5,
    "bulk_duration": 3.0,
    "rate_duration": 5.0,
    "latency_warmup": 0.5,
    "noop_messages": 3_000,
    "producer_events": 10_000,
    "wait_quiet": 0.0,
}


def parsed(monkeypatch: pytest.MonkeyPatch, *args: str) -> BenchConfig:
    """The config a command line gives, without running the bench."""
    seen: list[BenchConfig] = []
    monkeypatch.setattr(bench_cli, "measure", lambda config, argv: seen.append(config) or 0)
    result = CliRunner().invoke(bench_cli.cli, list(args))
    assert result.exit_code == 0, result.output
    [config] = seen
    return config


def test_help_shows_every_option_its_default_and_its_quick_value() -> None:
    result = CliRunner().invoke(bench_cli.cli, ["--help"], env=WIDE)
    assert result.exit_code == 0, result.output
    assert "Raw Celery no-op ceiling vs orderfleet" in result.output
    for option in OPTIONS:
        assert option in result.output, option
    knobs = {"--" + field.name.replace("_", "-") for field in dataclasses.fields(BenchConfig)}
    assert set(OPTIONS) == knobs
    for shown in ["[default: 2]", "[default: 30.0]", "[default: 100000]", "(--quick: 3000)"]:
        assert shown in result.output, shown
    assert "runs of each measurement; the table shows medians (--quick: 1)" in result.output


def test_without_options_the_config_is_make_bench_s(monkeypatch: pytest.MonkeyPatch) -> None:
    assert parsed(monkeypatch) == DEFAULTS


def test_quick_gives_its_value_to_every_option_left_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    config = parsed(monkeypatch, "--quick")
    assert config == dataclasses.replace(DEFAULTS, quick=True, **QUICK)


def test_an_option_set_beats_quick(monkeypatch: pytest.MonkeyPatch) -> None:
    config = parsed(monkeypatch, "--runs=2", "--quick", "--duration", "7", "--wait-quiet=30")
    expected = {**QUICK, "runs": 2, "duration": 7.0, "wait_quiet": 30.0}
    assert config == dataclasses.replace(DEFAULTS, quick=True, **expected)


def test_an_option_set_to_its_default_still_beats_quick(monkeypatch: pytest.MonkeyPatch) -> None:
    assert parsed(monkeypatch, "--quick", "--runs=3").runs == 3


def test_options_are_parsed_to_their_types(monkeypatch: pytest.MonkeyPatch) -> None:
    config = parsed(monkeypatch, "--orders-in-store=20000", "--data-dir=/tmp/d", "--output=o.json")
    assert config.orders_in_store == 20_000
    assert config.data_dir == Path("/tmp/d")
    assert config.output == Path("o.json")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--runs=0"], "invalid options: runs"),
        (["--load=1.5"], "invalid options: load"),
        (["--orders-in-store=5000"], "orders_in_store (at least 10,000)"),
        (["--workers=4", "--partitions=2"], "--workers must not exceed --partitions"),
    ],
)
def test_values_that_cannot_give_a_measurement_are_refused(
    monkeypatch: pytest.MonkeyPatch, args: list[str], message: str
) -> None:
    monkeypatch.setattr(bench_cli, "measure", lambda config, argv: pytest.fail("ran"))
    result = CliRunner().invoke(bench_cli.cli, args)
    assert result.exit_code == 1
    assert message in result.output
