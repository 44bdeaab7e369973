"""orderfleet infrastructure: the Celery app, routing, locks, the store, embedded servers."""
