"""kombu's py-amqp transport with publish batches: a batch waits for its confirms together.

With publisher confirms (`confirm_publish`) py-amqp waits for the broker's ack of each message
before it sends the next: a round trip, and a quorum queue's replicated write, per message.
kombu's `Producer.batch()` lets a transport batch publishes (its Redis transport pipelines
them): here a batch sends its messages at once, and its flush waits until the broker has
confirmed every one of them. A nack, or a connection lost before every confirm came, raises
BatchPublishError: the delivery of the batch is uncertain, and its sender sends it again
(tasks/producer.py: events are deduplicated by eventId) or leaves it to the outbox relay
(worker/outbox.py). A publish outside a batch still waits for its own confirm.

The Celery configuration chooses this transport on RabbitMQ (`broker_transport`), for producers
and workers alike.
"""

from __future__ import annotations

import contextlib
from typing import Any

from amqp import spec
from amqp.exceptions import MessageNacked
from kombu.exceptions import BatchPublishError
from kombu.transport import pyamqp

CONFIRMS = [spec.Basic.Ack, spec.Basic.Nack]


class PublishBatch:
    """Messages sent on one channel in confirm mode whose confirms are still due.

    The broker's confirms may be read while the batch is still sending (py-amqp reads what
    arrives whenever it waits for anything): they are taken from the channel's events."""

    def __init__(self, channel: Channel, max_size: int) -> None:
        self.channel, self.max_size = channel, max_size
        self.due: set[int] = set()  # delivery tags not confirmed yet
        self.nacked = 0
        channel.events["basic_ack"].add(self._acked)
        channel.events["basic_nack"].add(self._nacked)

    def publish(self, message: Any, **kwargs: Any) -> None:
        kwargs.pop("confirm_timeout", None)
        tag = self.channel.next_delivery_tag()
        self.due.add(tag)  # before sending: its confirm may be read while sending
        try:
            self.channel.publish_unconfirmed(message, **kwargs)
        except BaseException:
            self.due.discard(tag)
            raise
        if len(self.due) >= self.max_size:
            self.flush()

    def flush(self) -> None:
        """Wait for every due confirm; raise if the broker refused any message."""
        try:
            while self.due:
                self.channel.wait(CONFIRMS)
        except Exception as exc:
            self.due.clear()
            raise BatchPublishError("confirms lost: delivery uncertain") from exc
        if self.nacked:
            refused, self.nacked = self.nacked, 0
            nack = MessageNacked(f"the broker refused {refused} messages")
            raise BatchPublishError(f"{nack}: not sent") from nack

    def discard(self) -> None:
        """Nothing sent can be unsent; the confirms still due are read, so that the channel's
        next publish does not take one of them for its own."""
        with contextlib.suppress(BatchPublishError):
            self.flush()

    def close(self) -> None:
        """Stop listening to the channel's confirms (the channel belongs to the producer)."""
        self.channel.events["basic_ack"].discard(self._acked)
        self.channel.events["basic_nack"].discard(self._nacked)

    def _acked(self, delivery_tag: int, multiple: bool) -> None:
        self.due -= self._ended(delivery_tag, multiple)

    def _nacked(self, delivery_tag: int, multiple: bool) -> None:
        ended = self._ended(delivery_tag, multiple)
        self.nacked += len(ended)
        self.due -= ended

    def _ended(self, delivery_tag: int, multiple: bool) -> set[int]:
        if multiple:
            return {t for t in self.due if t <= delivery_tag}
        return {delivery_tag} & self.due


class Channel(pyamqp.Channel):
    """py-amqp's channel, counting its publishes in confirm mode (the broker's delivery tags)."""

    published = 0

    def confirm_select(self, nowait: bool = False) -> None:
        self.published = 0
        super().confirm_select(nowait)

    def _basic_publish(self, *args: Any, **kwargs: Any) -> Any:
        sent = super()._basic_publish(*args, **kwargs)
        if self._confirm_selected:
            self.published += 1
        return sent

    def next_delivery_tag(self) -> int:
        """The delivery tag the broker will confirm the next publish with (confirm mode on)."""
        if not self._confirm_selected:
            self._confirm_selected = True
            self.confirm_select()
        return self.published + 1

    def publish_unconfirmed(self, message: Any, **kwargs: Any) -> None:
        """Send without waiting for the confirm."""
        self.next_delivery_tag()
        self._basic_publish(message, **kwargs)

    def create_publish_batch(self, max_size: int) -> PublishBatch:
        return PublishBatch(self, max_size)


class Connection(pyamqp.Connection):
    Channel = Channel


class Transport(pyamqp.Transport):
    Connection = Connection


class SSLTransport(pyamqp.SSLTransport):
    Connection = Connection
