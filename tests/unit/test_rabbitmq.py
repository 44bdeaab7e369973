"""RabbitMQ's queue declarations and the celeryconfig that chooses them by broker kind."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from types import SimpleNamespace

import pytest
from orderfleet.worker.rabbitmq import DEAD_LETTER_QUEUE, death_of, is_rabbitmq, task_queues
from orderfleet.worker.settings import SettingsError, load_settings

SHOW_CONFIG = """
import json
from orderfleet.worker.celery_app import app
queues = {q.name: q.queue_arguments for q in app.conf.task_queues}
conf = app.conf
print(json.dumps({"queues": queues, "options": conf.broker_transport_options,
                  "transport": conf.broker_transport}))
"""


def _config(broker_url: str, **extra: str) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ORDERFLEET_")}
    env.update({"ORDERFLEET_BROKER_URL": broker_url, "ORDERFLEET_PARTITIONS": "4", **extra})
    done = subprocess.run(
        [sys.executable, "-c", SHOW_CONFIG], env=env, capture_output=True, text=True, check=True
    )
    return json.loads(done.stdout)


@pytest.mark.parametrize(
    ("url", "rabbit"),
    [
        ("amqp://guest:guest@host:5672/v", True),
        ("amqps://host", True),
        ("pyamqp://host//", True),
        ("redis://host:6379/0", False),
        ("redis+socket:///tmp/r.sock", False),
        (None, False),
    ],
)
def test_rabbitmq_is_told_by_the_url_scheme(url, rabbit):
    assert is_rabbitmq(url) is rabbit


def test_partition_queues_are_quorum_queues_with_a_single_active_consumer():
    queues = {q.name: q for q in task_queues(load_settings({"ORDERFLEET_PARTITIONS": "3"}))}
    assert sorted(queues) == [
        DEAD_LETTER_QUEUE,
        "orderfleet.decisions",
        "orderfleet.maintenance",
        "orderfleet.p000",
        "orderfleet.p001",
        "orderfleet.p002",
    ]
    assert all(q.durable and q.queue_arguments["x-queue-type"] == "quorum" for q in queues.values())
    single = {n for n, q in queues.items() if q.queue_arguments.get("x-single-active-consumer")}
    assert single == {"orderfleet.p000", "orderfleet.p001", "orderfleet.p002"}


def test_every_queue_but_the_dead_letter_queue_dead_letters_past_its_delivery_limit():
    settings = load_settings({"ORDERFLEET_PARTITIONS": "2", "ORDERFLEET_DELIVERY_LIMIT": "7"})
    for queue in task_queues(settings):
        args = queue.queue_arguments
        if queue.name == DEAD_LETTER_QUEUE:
            assert "x-delivery-limit" not in args and "x-dead-letter-routing-key" not in args
            continue
        assert args["x-delivery-limit"] == 7
        assert (args["x-dead-letter-exchange"], args["x-dead-letter-routing-key"]) == (
            "",
            DEAD_LETTER_QUEUE,
        )
        assert (args["x-dead-letter-strategy"], args["x-overflow"]) == (
            "at-least-once",
            "reject-publish",
        )


def test_the_quorum_group_size_is_rabbitmqs_default_unless_set():
    unset = task_queues(load_settings({"ORDERFLEET_PARTITIONS": "1"}))
    assert all("x-quorum-initial-group-size" not in q.queue_arguments for q in unset)
    three = task_queues(
        load_settings({"ORDERFLEET_PARTITIONS": "1", "ORDERFLEET_QUORUM_GROUP_SIZE": "3"})
    )
    assert {q.queue_arguments["x-quorum-initial-group-size"] for q in three} == {3}


@pytest.mark.parametrize("variable", ["ORDERFLEET_QUORUM_GROUP_SIZE", "ORDERFLEET_DELIVERY_LIMIT"])
def test_a_group_size_or_delivery_limit_below_one_is_refused(variable):
    with pytest.raises(SettingsError, match=f"{variable}=0: must be at least 1"):
        load_settings({variable: "0"})


def _message(routing_key: str, **headers: str) -> SimpleNamespace:
    return SimpleNamespace(delivery_info={"routing_key": routing_key}, headers=headers)


def test_a_message_of_the_dead_letter_queue_says_why_and_whence_it_died():
    message = _message(
        DEAD_LETTER_QUEUE,
        **{"x-first-death-reason": "delivery_limit", "x-first-death-queue": "orderfleet.p003"},
    )
    assert death_of(message) == ("delivery_limit", "orderfleet.p003")
    assert death_of(_message(DEAD_LETTER_QUEUE)) == ("unknown", None)


def test_a_message_of_any_other_queue_did_not_die_even_with_death_headers():
    """A future delay queue (TTL, then dead-lettered back) must not be mistaken for a death."""
    message = _message("orderfleet.p003", **{"x-first-death-reason": "expired"})
    assert death_of(message) is None


def test_the_celery_config_on_rabbitmq_declares_quorum_queues_and_confirms_publishes():
    config = _config("amqp://guest:guest@127.0.0.1:5672/x")
    assert config["options"] == {"confirm_publish": True}
    assert config["transport"] == "orderfleet.worker.confirms:Transport"
    assert config["queues"]["orderfleet.p003"]["x-single-active-consumer"] is True
    assert {args["x-queue-type"] for args in config["queues"].values()} == {"quorum"}


def test_the_celery_config_on_redis_is_as_it_was():
    config = _config("redis://127.0.0.1:6379/0", ORDERFLEET_BROKER_PREFIX="p:")
    assert all(args is None for args in config["queues"].values())
    assert config["options"]["global_keyprefix"] == "p:"
    assert config["options"]["visibility_timeout"] == 30.0
    assert "confirm_publish" not in config["options"]
    assert config["transport"] is None
