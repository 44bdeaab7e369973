"""(d) The producer from one process: publish_many bulk and per event vs a raw send_task loop.

Each mode runs in its own process and publishes into a throwaway key prefix that no worker
consumes; its keys are deleted after each mode.
"""

from __future__ import annotations

import json
from typing import Any

from orderfleet.worker.dev.processes import FleetProcess
from orderfleet.worker.dev.scratch import delete_prefix

from bench.context import Context
from bench.procs import module_command, wait_quiet
from bench.servers import BenchError

MODES = {"bulk": ["--bulk"], "per_event": [], "raw": ["--raw"]}


def run_producer(ctx: Context, run: int) -> dict[str, Any]:
    """Every mode once, on the same traffic; events/s of each and per-event / raw."""
    waited = wait_quiet(ctx.config.wait_quiet)
    out: dict[str, Any] = {mode: _one_mode(ctx, run, mode) for mode in MODES}
    per_event, raw = out["per_event"]["events_per_s"], out["raw"]["events_per_s"]
    out["per_event_to_raw"] = round(per_event / raw, 4) if raw else 0.0
    out["waited_for_quiet_s"] = waited
    return out


def _one_mode(ctx: Context, run: int, mode: str) -> dict[str, Any]:
    """One producer process publishing --producer-events events in this mode."""
    prefix = f"{ctx.prefix}producer:"
    name = f"r{run}d-{mode}"
    path = ctx.log_dir / f"{name}.json"
    producer = FleetProcess(
        name,
        [
            "speed",
            f"--out={path}",
            f"--tag={name}",
            f"--seed={ctx.config.seed + run}",
            f"--messages={ctx.config.producer_events}",
            *MODES[mode],
        ],
        ctx.fleet_env(ORDERFLEET_BROKER_PREFIX=prefix, ORDERFLEET_KEY_PREFIX=prefix),
        ctx.log_dir,
        command=module_command("bench.producer"),
    )
    ctx.supervisor.start(producer)
    try:
        code = producer.wait_exit(120.0 + ctx.config.producer_events / 500)
        if code != 0:
            raise BenchError(f"{name} failed ({code}):\n{producer.log_text()[-3000:]}")
    finally:
        ctx.supervisor.stop([producer])
        delete_prefix(ctx.redis, prefix)
    result = json.loads(path.read_text(encoding="utf-8"))
    return {
        "events_per_s": round(result["events"] / result["seconds"], 1),
        "messages": result["messages"],
        "events": result["events"],
        "seconds": round(result["seconds"], 3),
    }
