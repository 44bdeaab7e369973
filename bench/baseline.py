"""(a) The ceiling: raw no-op Celery workers draining a pre-enqueued backlog."""

from __future__ import annotations

import time
from typing import Any

from orderfleet.worker.dev.processes import FleetProcess

from bench import noop_app
from bench.context import Context
from bench.procs import celery_command, usage, wait_quiet
from bench.servers import BenchError

POLL = 0.02


def noop_workers(ctx: Context, name: str) -> list[FleetProcess]:
    """The no-op workers: solo pool, one at a time, prefetch 1, on the no-op queue."""
    return [
        FleetProcess(
            f"{name}-w{index}",
            [
                "worker",
                "-P",
                "solo",
                "-c",
                "1",
                "--prefetch-multiplier",
                "1",
                "-Q",
                noop_app.QUEUE,
                "--without-gossip",
                "--without-mingle",
                "--loglevel",
                "INFO",
                "-n",
                f"{name}-w{index}@%h",
            ],
            ctx.noop_env(),
            ctx.log_dir,
            command=celery_command("bench.noop_app"),
        )
        for index in range(ctx.config.workers)
    ]


def run_baseline(ctx: Context, name: str) -> dict[str, Any]:
    """Drain `noop_messages` pre-enqueued no-op messages; messages/s once all workers run."""
    ctx.reset()
    waited = wait_quiet(ctx.config.wait_quiet)
    count = ctx.config.noop_messages
    with noop_app.make_app(ctx.broker.url, ctx.prefix) as app:
        enqueue_seconds = noop_app.enqueue(app, count)
    workers = noop_workers(ctx, name)
    ctx.supervisor.start_ready(workers)
    try:
        with ctx.monitor(workers) as monitor:
            before, depth_before = monitor.snapshot(), ctx.noop_depth()
            _wait_drained(ctx, workers, timeout=max(60.0, count / 100))
            after = monitor.snapshot()
            peak = monitor.peak_rss_mb()
    finally:
        ctx.supervisor.stop(workers)
    seconds = after.at - before.at
    if depth_before == 0:
        raise BenchError(f"the no-op backlog of {count} messages was gone before the workers ran")
    return {
        "messages_per_s": round(depth_before / seconds, 1),
        "messages": depth_before,
        "seconds": round(seconds, 3),
        "enqueued": count,
        "enqueue_per_s": round(count / enqueue_seconds, 1),
        **usage(before, after, depth_before, ctx.config.workers),
        "worker_peak_rss_mb": round(peak, 1),
        "waited_for_quiet_s": waited,
    }


def _wait_drained(ctx: Context, workers: list[FleetProcess], timeout: float) -> None:
    """Poll the queue until it is empty; raise when a worker dies or time runs out."""
    deadline = time.monotonic() + timeout
    while ctx.noop_depth() > 0:
        if time.monotonic() > deadline:
            raise BenchError(f"the no-op queue did not drain in {timeout:.0f} s")
        dead = [w.name for w in workers if not w.alive()]
        if dead:
            raise BenchError(f"no-op worker(s) {dead} exited:\n{workers[0].log_text()[-2000:]}")
        time.sleep(POLL)
