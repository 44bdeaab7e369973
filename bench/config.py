"""What one bench run measures, and how its options resolve: `--quick` shortens everything."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import typer
from typer.models import OptionInfo

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
DEFAULT_DATA_DIR = BENCH_DIR / ".data"
RESULTS_DIR = BENCH_DIR / "results"
SMALL_STORE = 10_000  # orders in the store of (e)'s first measurement
REDIS, RABBITMQ = "redis", "rabbitmq"
BROKERS = (REDIS, RABBITMQ)
AMQP_URL_ENV = "ORDERFLEET_BENCH_AMQP_URL"
DEFAULT_AMQP_URL = "amqp://guest:guest@127.0.0.1:5672"


@dataclass(frozen=True)
class BenchConfig:
    """Every knob of a bench run: the options of `python -m bench` (bench/cli.py: defaults)."""

    workers: int
    runs: int
    duration: float
    warmup: float
    bulk_duration: float
    load: float
    rate_duration: float
    latency_warmup: float
    noop_messages: int
    producer_events: int
    orders_in_store: int | None
    producers: int
    partitions: int
    seed: int
    wait_quiet: float
    brokers: str | None
    amqp_url: str | None
    quick: bool
    data_dir: Path
    output: Path | None


class Knob(OptionInfo):
    """A bench option; under --quick, when the user did not set it, it takes its `quick` value."""

    def __init__(self, help: str, quick: float | None = None) -> None:
        shown = help if quick is None else f"{help} (--quick: {quick:g})"
        super().__init__(default=..., help=shown, show_default=True, callback=self.resolve)
        self.quick = quick

    def resolve(self, ctx: typer.Context, param: typer.CallbackParam, value: Any) -> Any:
        """The value set, else --quick's when --quick is on (an eager option), else the default."""
        # By name: recent typer vendors click, and its ParameterSource is not the click package's.
        unset = getattr(ctx.get_parameter_source(str(param.name)), "name", None) == "DEFAULT"
        quick = self.quick is not None and ctx.params.get("quick", False)
        return self.quick if unset and quick else value


def check(config: BenchConfig) -> None:
    """Refuse values that cannot give a measurement."""
    positive = ["workers", "runs", "duration", "bulk_duration", "rate_duration"]
    positive += ["noop_messages", "producer_events", "producers"]
    bad = [name for name in positive if getattr(config, name) <= 0]
    if not 0 < config.load <= 1:
        bad.append("load")
    if config.orders_in_store is not None and config.orders_in_store < SMALL_STORE:
        bad.append(f"orders_in_store (at least {SMALL_STORE:,})")
    if bad:
        raise SystemExit(f"python -m bench: invalid options: {', '.join(bad)}")
    if config.workers > config.partitions:
        raise SystemExit("python -m bench: --workers must not exceed --partitions")
    if config.orders_in_store is not None and REDIS not in chosen_brokers(config):
        raise SystemExit(
            "python -m bench: --orders-in-store measures on Redis: add it to --brokers"
        )


def chosen_brokers(config: BenchConfig) -> tuple[str, ...]:
    """The brokers of --brokers, in BROKERS order; both when it is not given."""
    if config.brokers is None:
        return BROKERS
    named = {name.strip().lower() for name in config.brokers.split(",") if name.strip()}
    unknown = sorted(named - set(BROKERS))
    if unknown or not named:
        raise SystemExit(
            f"python -m bench: --brokers {config.brokers!r}: name one or more of "
            f"{', '.join(BROKERS)}" + (f" (not {', '.join(unknown)})" if unknown else "")
        )
    return tuple(name for name in BROKERS if name in named)


def rabbitmq_required(config: BenchConfig) -> bool:
    """Whether --brokers names RabbitMQ: then an unreachable one fails the run, not skips."""
    return config.brokers is not None and RABBITMQ in chosen_brokers(config)


def amqp_url(config: BenchConfig) -> str:
    """The RabbitMQ of the RabbitMQ columns: --amqp-url, else $ORDERFLEET_BENCH_AMQP_URL,
    else the machine's (guest on 127.0.0.1:5672)."""
    return config.amqp_url or os.environ.get(AMQP_URL_ENV) or DEFAULT_AMQP_URL
