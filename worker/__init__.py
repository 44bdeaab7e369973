"""orderfleet infrastructure: the Celery app, routing, locks, the store, embedded servers.

`celery -A worker ...` finds the app here.
"""

from worker.app import app

__all__ = ["app"]
