"""What a worker or beat process does as it starts: refuse a bad configuration, serve metrics.

Celery imports this module (through the app's `include`) before it builds the worker's
bootsteps, so a plain `celery -A orderfleet.worker worker` runs the same checks as
`orderfleet worker`.
"""

from __future__ import annotations

import os
import sys

from celery import bootsteps, signals
from orderfleet.worker import metrics
from orderfleet.worker.celery_app import app
from orderfleet.worker.db import SchemaBehind
from orderfleet.worker.retries import check_visibility
from orderfleet.worker.runtime import get_runtime, reset_runtime
from orderfleet.worker.servers import FLEET, Embedded, resolve_servers
from orderfleet.worker.settings import SettingsError


class StartupCheck(bootsteps.Step):
    """A worker refuses to start on a bad configuration or a schema that is behind.

    Its servers must be configured by now: `orderfleet worker` exports the URLs it chose
    (embedded ones only when nothing is set); a plain `celery worker` must have them set.
    """

    def __init__(self, parent: object, **kwargs: object) -> None:
        runtime = get_runtime()
        try:
            resolve_servers(runtime.settings, FLEET, Embedded.NEVER)
            check_visibility(runtime.settings)
            runtime.check_schema()
        except (SettingsError, SchemaBehind) as exc:
            print(f"orderfleet: {exc}", file=sys.stderr, flush=True)
            raise SystemExit(2) from exc
        metrics.serve(runtime.settings.metrics_port)
        super().__init__(parent, **kwargs)


app.steps["worker"].add(StartupCheck)


@signals.worker_process_init.connect
def _fresh_runtime_after_fork(**_: object) -> None:
    reset_runtime()


@signals.worker_ready.connect
@signals.beat_init.connect
def _announce_ready(**_: object) -> None:
    """Touch ORDERFLEET_READY_FILE so a supervisor knows this process is up."""
    path = get_runtime().settings.ready_file
    if path is not None:
        path.write_text(str(os.getpid()))
