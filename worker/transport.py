"""kombu's Redis transport, hardened: bytes on a queue that are not a message are dead-lettered.

kombu pops an item from the queue list (BRPOP) and parses it as a message envelope; an item
that does not parse (a plain string, a JSON array, a body that is not base64, headers that are
not a mapping) raises inside the worker's event loop: the worker exits with "Unrecoverable
error", and the item, already popped, is gone. Here such an item is written to the dead letters
(raw, with the queue it came from) and the worker goes on; if the dead letter cannot be written,
the item is pushed back where it was and tried again a second later.

It also keeps the broker side of the message ledger: every message taken for the first time
is counted per queue (HINCRBY), beside the outcomes the database counts (`orderfleet ledger`).

Workers install it with `install()` (worker/startup.py), which points kombu's `redis` transport
names at this class in the worker process only; producers keep kombu's own.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from kombu import transport as kombu_transports
from kombu.transport import redis as kombu_redis
from kombu.utils.encoding import bytes_to_str
from kombu.utils.json import loads
from orderfleet.worker.pipeline import dead_letter
from orderfleet.worker.routing import MAINTENANCE_QUEUE
from orderfleet.worker.runtime import get_runtime

log = logging.getLogger(__name__)
TAKEN_KEY = "orderfleet.taken"  # hash: queue -> messages taken (first deliveries)
RETRY_PAUSE = 1.0  # seconds before a not-a-message item whose dead letter failed is retried


class NotAMessage(ValueError):
    """A queue item that is not a kombu message envelope; the text says why."""


class Channel(kombu_redis.Channel):
    """kombu's Redis channel whose BRPOP reader cannot be crashed by a foreign item."""

    def _brpop_read(self, **options: Any) -> bool:
        # kombu 5.7's Channel._brpop_read, with the parse of the item guarded.
        try:
            try:
                dest__item = self.client.parse_response(self.client.connection, "BRPOP", **options)
            except self.connection_errors:
                self.client.connection.disconnect()
                raise
            if not dest__item:
                raise kombu_redis.Empty()
            key, item = bytes_to_str(dest__item[0]), dest__item[1]
            queue = key.rsplit(self.sep, 1)[0]
            self._queue_cycle.rotate(queue)
            try:
                payload = self._envelope(item)
            except NotAMessage as exc:
                self._dead_letter(queue, key, item, str(exc))
            else:
                if _first_delivery(payload):
                    self._count_taken(queue)
                self.connection._deliver(payload, queue)
            return True
        finally:
            self._in_poll = None
            flush = getattr(self, "_flush_brpop_reauth", None)  # kombu >= 5.7
            if flush is not None:
                flush()

    def _envelope(self, item: bytes | str) -> dict[str, Any]:
        """The parsed envelope, or NotAMessage saying what is wrong with it."""
        try:
            payload = loads(bytes_to_str(item))
        except Exception as exc:
            raise NotAMessage(f"not JSON: {exc}") from None
        if not isinstance(payload, dict):
            raise NotAMessage(f"a JSON {type(payload).__name__}, not a message envelope")
        properties, headers = payload.get("properties"), payload.get("headers")
        if not isinstance(properties, dict) or "delivery_tag" not in properties:
            raise NotAMessage("no `properties` with a `delivery_tag`")
        if not isinstance(properties.get("delivery_info", {}), dict):
            raise NotAMessage("`properties.delivery_info` is not an object")
        if headers is not None and not isinstance(headers, dict):
            raise NotAMessage("`headers` is not an object")
        body = payload.get("body")
        if body:
            try:
                self.decode_body(body, properties.get("body_encoding"))
            except Exception as exc:
                raise NotAMessage(f"undecodable body: {exc}") from None
        return payload

    def _dead_letter(self, queue: str, key: str, item: bytes | str, problem: str) -> None:
        error = f"not a message, from queue {queue}: {problem}"
        text = item.decode("utf-8", errors="replace") if isinstance(item, bytes) else item
        try:
            dead_letter(get_runtime(), "not_a_message", error, text, None, queue)
        except Exception:
            log.exception("could not dead-letter an item of %s; pushed back", queue)
            self.client.rpush(key, item)  # BRPOP takes from the right: it is next again
            time.sleep(RETRY_PAUSE)
            return
        self._count_taken(queue)

    def _count_taken(self, queue: str) -> None:
        """The broker side of the message ledger (`orderfleet ledger`): one more taken."""
        if queue == MAINTENANCE_QUEUE:  # periodic tasks end by running again, not counted
            return
        try:
            self.client.hincrby(self.global_keyprefix + TAKEN_KEY, queue, 1)
        except Exception as exc:  # never at the cost of the message itself
            log.warning("message ledger: not counted as taken from %s (%s)", queue, exc)


def _first_delivery(payload: dict[str, Any]) -> bool:
    """Neither a re-delivery (kombu's restore marks them) nor a retry (a copy it publishes)."""
    headers = payload.get("headers") or {}
    info = payload["properties"].get("delivery_info") or {}
    return not (headers.get("redelivered") or info.get("redelivered") or headers.get("retries"))


class Transport(kombu_redis.Transport):
    """kombu's Redis transport with the guarded channel."""

    Channel = Channel


def install() -> None:
    """Make this process's Redis broker connections use the guarded transport."""
    for name in ("redis", "rediss"):
        kombu_transports.TRANSPORT_ALIASES[name] = f"{__name__}:Transport"
        kombu_transports._transport_cache.pop(name, None)
