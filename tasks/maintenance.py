"""Periodic maintenance run by beat on the maintenance queue."""

from __future__ import annotations

from datetime import timedelta

from orderfleet.worker.celery_app import app
from orderfleet.worker.outbox import relay
from orderfleet.worker.runtime import get_runtime


@app.task(name="orderfleet.maintenance.relay_outbox", acks_late=True)
def relay_outbox() -> int:
    """Re-publish decisions left unpublished (a crash between commit and publish)."""
    runtime = get_runtime()
    return relay(app, runtime, timedelta(seconds=runtime.settings.outbox_relay_after))
