"""The Celery application. Creating it connects to nothing and loads only Celery.

Producers use it as it is; a worker or beat also imports the modules of `include`, and with
them `orderfleet.worker.startup` (its start-up checks, metrics and ready file).
"""

from __future__ import annotations

from celery import Celery

TASK_MODULES = [
    "orderfleet.tasks.events",
    "orderfleet.tasks.decisions",
    "orderfleet.tasks.maintenance",
    "orderfleet.worker.startup",
]

app = Celery("orderfleet", include=TASK_MODULES)
app.config_from_object("orderfleet.celeryconfig")
