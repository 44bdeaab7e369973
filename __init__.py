"""orderfleet: order events in any order, once each, into one correct state per order.

The producer API is all that importing `orderfleet` gives, and it is light (Celery, kombu and
pydantic; no database, metrics or CLI libraries):

    from orderfleet import publish, publish_many, InvalidEvent
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from orderfleet.models.parsing import InvalidEvent
    from orderfleet.tasks.producer import PublishReceipt, publish, publish_many
    from orderfleet.worker.settings import SettingsError

__all__ = ["InvalidEvent", "PublishReceipt", "SettingsError", "publish", "publish_many"]

_EXPORTS = {
    "InvalidEvent": "orderfleet.models.parsing",
    "PublishReceipt": "orderfleet.tasks.producer",
    "SettingsError": "orderfleet.worker.settings",
    "publish": "orderfleet.tasks.producer",
    "publish_many": "orderfleet.tasks.producer",
}


def __getattr__(name: str) -> Any:
    """Load the producer API on first use, so `orderfleet.worker.cli` pays nothing for it."""
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'orderfleet' has no attribute {name!r}")
    from importlib import import_module

    return getattr(import_module(module), name)
