"""orderfleet infrastructure: the Celery app, routing, locks, the store; dev tools in `dev/`.

`celery -A orderfleet.worker ...` finds the app here; importing this package loads nothing else.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from celery import Celery

    app: Celery

__all__ = ["app"]


def __getattr__(name: str) -> Any:
    """`app`, loaded on first use (Celery's `-A` looks it up by attribute)."""
    if name != "app":
        raise AttributeError(f"module 'orderfleet.worker' has no attribute {name!r}")
    from orderfleet.worker.celery_app import app

    return app
