"""Celery settings for orderfleet, all derived from ORDERFLEET_* settings (worker/settings.py)."""

from kombu import Queue

from worker import routing
from worker.settings import load_settings

_settings = load_settings()


def _broker_url() -> str:
    if _settings.broker_url:
        return _settings.broker_url
    from worker import embedded

    return embedded.broker_url(_settings.data_dir)


def route_task(name, args, kwargs, options, task=None, **kw):
    """Celery router: every way of sending (delay, apply_async, send_task) lands here."""
    queue = routing.route_for(name, kwargs, _settings.partitions)
    return {"queue": queue, "routing_key": queue} if queue else None


broker_url = _broker_url()
broker_connection_retry_on_startup = True
broker_transport_options = {
    "visibility_timeout": _settings.visibility_timeout,
    # Sweep for unacked messages of dead workers every second, not every 100 s.
    "unacked_restore_interval": 1,
    "unacked_restore_throttle": 1,
    **({"global_keyprefix": _settings.broker_prefix} if _settings.broker_prefix else {}),
}
result_backend_transport_options = {"visibility_timeout": _settings.visibility_timeout}

task_serializer = "json"
result_serializer = "json"
accept_content = ["json"]
event_serializer = "json"
task_ignore_result = True

task_acks_late = True
task_reject_on_worker_lost = True
worker_prefetch_multiplier = 1
worker_send_task_events = _settings.task_events
task_send_sent_event = _settings.task_events
worker_hijack_root_logger = False
worker_consumer = "worker.consumer:DeadLetteringConsumer"

task_queues = [Queue(name, routing_key=name) for name in routing.all_queues(_settings.partitions)]
task_default_queue = routing.MAINTENANCE_QUEUE
task_routes = (route_task,)

beat_schedule = {
    "relay-unpublished-decisions": {
        "task": "orderfleet.maintenance.relay_outbox",
        "schedule": _settings.outbox_relay_interval,
    },
}
