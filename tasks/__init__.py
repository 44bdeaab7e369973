"""Celery tasks of orderfleet and the producer API."""
