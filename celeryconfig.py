"""Celery settings for orderfleet, all derived from ORDERFLEET_* settings (worker/settings.py)."""

from kombu import Queue
from orderfleet.worker import rabbitmq, routing
from orderfleet.worker.settings import load_settings

if __name__ != "orderfleet.celeryconfig":
    # Celery's default loader imports a plain `celeryconfig` from the working directory; in
    # this repository that must not be orderfleet's (ImportError makes Celery skip it).
    raise ImportError("this is orderfleet.celeryconfig, not a service's celeryconfig")

_settings = load_settings()


def route_task(name, args, kwargs, options, task=None, **kw):
    """Celery router: every way of sending (delay, apply_async, send_task) lands here."""
    queue = routing.route_for(name, kwargs, _settings.partitions)
    return {"queue": queue, "routing_key": queue} if queue else None


# Unset means unset: the producer and the worker's start-up check refuse, naming the variable
# (worker/servers.py); no server is started behind a missing URL.
broker_url = _settings.broker_url
broker_connection_retry_on_startup = True
_redis_transport_options = {
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
# No task-sent event per published message (each costs a second publish: a sixth of a worker's
# time when it sends decisions); Flower learns of a task when a worker receives it.
task_send_sent_event = False
worker_hijack_root_logger = False
worker_consumer = "orderfleet.worker.consumer:DeadLetteringConsumer"

if rabbitmq.is_rabbitmq(broker_url):
    # Quorum queues (worker/rabbitmq.py): Celery then uses per-consumer prefetch (no global QoS).
    broker_transport = rabbitmq.transport(broker_url)
    broker_transport_options = rabbitmq.transport_options()
    task_queues = rabbitmq.task_queues(_settings)
    task_default_queue_type = task_create_missing_queue_type = "quorum"
    worker_detect_quorum_queues = True
else:
    broker_transport_options = _redis_transport_options
    task_queues = [Queue(n, routing_key=n) for n in routing.all_queues(_settings.partitions)]
task_default_queue = routing.MAINTENANCE_QUEUE
task_routes = (route_task,)

beat_schedule = {
    "relay-unpublished-decisions": {
        "task": "orderfleet.maintenance.relay_outbox",
        "schedule": _settings.outbox_relay_interval,
    },
}
