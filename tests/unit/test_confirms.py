"""A publish batch on RabbitMQ: its confirms are awaited together, a nack fails the batch."""

from __future__ import annotations

from collections import defaultdict, deque

import pytest
from amqp import spec
from kombu.exceptions import BatchPublishError
from orderfleet.worker.confirms import PublishBatch

ACK, NACK = spec.Basic.Ack, spec.Basic.Nack


class FakeChannel:
    """Delivery tags 1, 2, ... for what is published; the broker's confirms from a script,
    read one at a time while waiting, or `early` ones while still publishing."""

    def __init__(self, *confirms: tuple, early: int = 0) -> None:
        self.published = 0
        self.confirms = deque(confirms)
        self.early = early
        self.waits = 0
        self.events: dict[str, set] = defaultdict(set)

    def next_delivery_tag(self) -> int:
        return self.published + 1

    def publish_unconfirmed(self, message, **kwargs) -> None:
        assert "confirm_timeout" not in kwargs
        self.published += 1
        if self.published <= self.early:
            self._read()

    def wait(self, methods):
        assert methods == [ACK, NACK]
        self.waits += 1
        if not self.confirms:
            raise ConnectionResetError("connection lost")
        self._read()

    def _read(self) -> None:
        method, tag, multiple = self.confirms.popleft()
        for listener in list(self.events["basic_ack" if method == ACK else "basic_nack"]):
            listener(tag, multiple)


def _send(batch: PublishBatch, n: int) -> None:
    for i in range(n):
        batch.publish(f"m{i}", exchange="", routing_key="q", confirm_timeout=None)


def test_the_flush_waits_for_every_confirm_single_or_multiple():
    channel = FakeChannel((ACK, 2, False), (ACK, 1, False), (ACK, 4, True))
    batch = PublishBatch(channel, max_size=100)
    _send(batch, 4)
    assert channel.waits == 0  # nothing waited for while publishing
    batch.flush()
    assert (batch.due, channel.waits) == (set(), 3)


def test_a_nacked_message_fails_the_batch():
    channel = FakeChannel((ACK, 1, False), (NACK, 3, True))
    batch = PublishBatch(channel, max_size=100)
    _send(batch, 3)
    with pytest.raises(BatchPublishError, match="refused 2 messages"):
        batch.flush()


def test_confirms_lost_with_the_connection_fail_the_batch():
    batch = PublishBatch(FakeChannel((ACK, 1, False)), max_size=100)
    _send(batch, 2)
    with pytest.raises(BatchPublishError, match="delivery uncertain"):
        batch.flush()
    assert batch.due == set()


def test_a_full_batch_waits_for_its_confirms_before_sending_more():
    channel = FakeChannel((ACK, 2, True), (ACK, 3, False))
    batch = PublishBatch(channel, max_size=2)
    _send(batch, 2)
    assert (channel.waits, batch.due) == (1, set())
    _send(batch, 1)
    batch.flush()
    assert batch.due == set()


def test_confirms_read_while_still_publishing_count():
    channel = FakeChannel((ACK, 1, False), (ACK, 2, False), (ACK, 3, False), early=2)
    batch = PublishBatch(channel, max_size=100)
    _send(batch, 3)
    batch.flush()
    assert (batch.due, channel.waits) == (set(), 1)


def test_a_closed_batch_stops_listening():
    channel = FakeChannel()
    PublishBatch(channel, max_size=1).close()
    assert not any(channel.events.values())


def test_a_discarded_batch_reads_its_confirms_and_raises_nothing():
    channel = FakeChannel((NACK, 1, False))
    batch = PublishBatch(channel, max_size=100)
    _send(batch, 1)
    batch.discard()
    assert batch.due == set()
