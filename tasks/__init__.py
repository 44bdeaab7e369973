"""Celery tasks of orderfleet (events, decisions, maintenance) and the producer API.

Importing this package loads nothing: the producer (`orderfleet.tasks.producer`) stays light,
and the task modules load the apply pipeline only where a worker imports them.
"""
