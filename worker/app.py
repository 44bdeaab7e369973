"""The Celery application. Creating it connects to nothing."""

from __future__ import annotations

from celery import Celery, signals

from worker import metrics
from worker.retries import check_visibility
from worker.runtime import get_runtime, reset_runtime

TASK_MODULES = ["tasks.events", "tasks.decisions", "tasks.maintenance"]

app = Celery("orderfleet", include=TASK_MODULES)
app.config_from_object("celeryconfig")


@signals.worker_init.connect
def _refuse_bad_configuration(**_: object) -> None:
    """A worker refuses to start when retries could outlive the visibility timeout."""
    runtime = get_runtime()
    check_visibility(runtime.settings)
    runtime.check_schema()
    metrics.serve(runtime.settings.metrics_port)


@signals.worker_process_init.connect
def _fresh_runtime_after_fork(**_: object) -> None:
    reset_runtime()
