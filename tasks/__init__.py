"""Celery tasks of orderfleet and the producer API (`publish`, `publish_many`)."""

from tasks.producer import PublishReceipt, publish, publish_many

__all__ = ["PublishReceipt", "publish", "publish_many"]
