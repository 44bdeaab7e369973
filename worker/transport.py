"""kombu's Redis transport, hardened: bytes on a queue that are not a message are dead-lettered.

kombu pops an item from the queue list (BRPOP) and parses it as a message envelope; an item
that does not parse (a plain string, a JSON array, a body that is not base64, headers that are
not a mapping) raises inside the worker's event loop: the worker exits with "Unrecoverable
error", and the item, already popped, is gone. Here such an item is written to the dead letters
(raw, with the queue it came from) and the worker goes on; if the dead letter cannot be written,
the item is pushed back where it was and tried again a second later.

It also keeps the broker side of the message ledger: every message taken for the first time
is counted per queue (HINCRBY), beside the outcomes the database counts (`orderfleet ledger`).

It also takes messages atomically (see `Channel`), and tells a batching consumer when the
queues are empty, so that a gathered batch is applied after a short linger instead of waiting
for a full batch (`when_idle`).

Workers install it with `install()` (worker/startup.py), which points kombu's `redis` transport
names at this class in the worker process only; producers keep kombu's own.
"""

from __future__ import annotations

import hashlib
import logging
import time
import weakref
from collections.abc import Callable, Iterator
from typing import Any

from kombu import transport as kombu_transports
from kombu.transport import redis as kombu_redis
from kombu.transport import virtual as kombu_virtual
from kombu.utils.encoding import bytes_to_str
from orderfleet.worker.exact_json import loads_envelope
from orderfleet.worker.pipeline import dead_letter, dead_letter_all, subjects_of
from orderfleet.worker.routing import MAINTENANCE_QUEUE
from orderfleet.worker.runtime import get_runtime
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError
from redis.exceptions import TimeoutError as RedisTimeoutError

log = logging.getLogger(__name__)
TAKEN_KEY = "orderfleet.taken"  # hash: queue -> messages taken (first deliveries)
RETRY_PAUSE = 1.0  # seconds before a not-a-message item whose dead letter failed is retried
RECORD_PAUSES = (0.1, 0.2, 0.4, 0.8, 1.6)  # then every 1.6 s: a popped message's record
RECORD_PATIENCE = 60.0  # seconds a popped message waits for Redis before it is dead-lettered
BROKER_DOWN = (RedisConnectionError, RedisTimeoutError, OSError)


_channels: weakref.WeakSet[Channel] = weakref.WeakSet()
_idle: list[tuple[Callable[[], bool], Callable[[], None]]] = []

# Pop up to ARGV[2] messages (at most ARGV[3] bytes), one from each non-empty queue list in
# turn, AND record each as unacknowledged (and count a first delivery as taken) in one atomic
# step: no moment exists in which a message is off its queue but not in `unacked`, so a
# SIGKILL anywhere loses nothing. An item that is not a message envelope ends the fetch and is
# returned unrecorded, for the worker to dead-letter.
# KEYS: queue lists..., unacked hash, unacked index, taken hash.
# ARGV: now, most messages, most bytes, then per queue list the queue name to count as taken
# ('' = not counted).
# Returns key, item, 'ok' or 'bad', delivery tag ('' when bad) for each item taken, in order,
# then 'empty' when every queue list was found empty, else 'more'.
_FETCH = """
local n = #KEYS - 3
local most, budget = tonumber(ARGV[2]), tonumber(ARGV[3])
local out, taken, size = {}, 0, 0
local found = true
while found and taken < most and size < budget do
  found = false
  for i = 1, n do
    local item = redis.call('RPOP', KEYS[i])
    if item then
      found = true
      taken = taken + 1
      size = size + #item
      local ok, m = pcall(cjson.decode, item)
      local props = ok and type(m) == 'table' and m.properties
      local tag = type(props) == 'table' and props.delivery_tag
      if type(tag) ~= 'string' and type(tag) ~= 'number' then
        out[#out + 1] = KEYS[i]; out[#out + 1] = item; out[#out + 1] = 'bad'; out[#out + 1] = ''
        out[#out + 1] = 'more'
        return out
      end
      local info = props.delivery_info
      if type(info) ~= 'table' then info = {} end
      local ex, rk = info.exchange, info.routing_key
      if type(ex) ~= 'string' then ex = '' end
      if type(rk) ~= 'string' then rk = '' end
      local record = '[' .. item .. ',' .. cjson.encode(ex) .. ',' .. cjson.encode(rk) .. ']'
      redis.call('HSET', KEYS[n + 1], tag, record)
      redis.call('ZADD', KEYS[n + 2], ARGV[1], tag)
      local h = m.headers
      if type(h) ~= 'table' then h = {} end
      local again = h.redelivered == true or info.redelivered == true
        or (type(h.retries) == 'number' and h.retries > 0)
      if ARGV[i + 3] ~= '' and not again then
        redis.call('HINCRBY', KEYS[n + 3], ARGV[i + 3], 1)
      end
      out[#out + 1] = KEYS[i]; out[#out + 1] = item; out[#out + 1] = 'ok'
      out[#out + 1] = tostring(tag)
      if taken >= most or size >= budget then
        out[#out + 1] = 'more'
        return out
      end
    end
  end
end
out[#out + 1] = 'empty'
return out
"""
_FETCH_SHA = hashlib.sha1(_FETCH.encode()).hexdigest()
FETCH_MOST = 100  # messages one fetch may take (and the consumer's prefetch allows)
FETCH_BYTES = 1024 * 1024  # a fetch stops once it holds this much (one full bulk message)
MIN_BRPOP_TIMEOUT = 0.001  # Redis >= 6 takes fractions of a second; 0 would block forever


def _record_pauses() -> Iterator[float]:
    yield from RECORD_PAUSES
    while True:
        yield RECORD_PAUSES[-1]


def _keep_unrecorded(message: Any, exc: BaseException) -> None:
    """Dead-letter (replayable) a taken message that Redis never came back to record."""
    error = f"taken from {message.delivery_info.get('routing_key')} but never recorded: {exc}"
    queue = message.delivery_info.get("routing_key") or None
    name, subjects = subjects_of(message)
    try:
        dead_letter_all(get_runtime(), "broker_unreachable", error, subjects, name, queue)
    except Exception:
        log.critical("message lost with its broker: %s", message.body, exc_info=True)


def ack_all(messages: list[Any]) -> None:
    """Acknowledge messages: in one round trip per channel of ours, one by one otherwise."""
    by_channel: dict[int, list[Any]] = {}
    for message in messages:
        by_channel.setdefault(id(message.channel), []).append(message)
    for group in by_channel.values():
        channel = group[0].channel
        if not isinstance(channel, Channel):
            for message in group:
                message.ack()
            continue
        channel.qos.ack_many([m.delivery_tag for m in group])
        for message in group:
            message._state = "ACK"


def when_idle(linger: Callable[[], float | None], on_idle: Callable[[], None]) -> None:
    """Call `on_idle` when every queue was found empty and `linger()` says 0 seconds.

    `linger()` is None when nothing is gathered, else how long to wait for more first.
    """
    _idle.append((linger, on_idle))


def brpop_outstanding() -> bool:
    """Whether a BRPOP of this process is waiting for its reply (work now could lose it)."""
    return any(channel._in_poll and channel._blocking for channel in list(_channels))


def _linger() -> float | None:
    """None: nothing gathered; else the seconds a gathered batch may still wait for more."""
    waits = [w for w in (linger() for linger, _ in _idle) if w is not None]
    return min(waits) if waits else None


class NotAMessage(ValueError):
    """A queue item that is not a kombu message envelope; the text says why."""


class QoS(kombu_redis.QoS):
    """kombu's QoS; a message the fetch script already recorded is not recorded again, a
    popped one is recorded even across a Redis restart, and many messages are acknowledged
    in one round trip."""

    def ack_many(self, delivery_tags: list[Any]) -> None:
        with self.pipe_or_acquire() as pipe:
            for tag in delivery_tags:
                pipe.zrem(self.unacked_index_key, tag).hdel(self.unacked_key, tag)
            pipe.execute()
        for tag in delivery_tags:
            kombu_virtual.QoS.ack(self, tag)

    def append(self, message: Any, delivery_tag: Any) -> None:
        recorded = self.channel._recorded
        if delivery_tag in recorded:
            recorded.discard(delivery_tag)
            kombu_virtual.QoS.append(self, message, delivery_tag)
            return
        self._record_popped(message, delivery_tag)

    def _record_popped(self, message: Any, delivery_tag: Any) -> None:
        """kombu's unacked record of a message BRPOP took, tried again while Redis is away.

        Until it is recorded this process holds the message's only copy: a Redis that stops
        right after answering the BRPOP must not take it along. After RECORD_PATIENCE seconds
        the message goes to the dead letters instead (replayable) and is not delivered.
        """
        started = time.monotonic()
        for pause in _record_pauses():
            try:
                super().append(message, delivery_tag)
                return
            except BROKER_DOWN as exc:
                if time.monotonic() - started + pause > RECORD_PATIENCE:
                    _keep_unrecorded(message, exc)
                    raise
                log.warning("a taken message is not recorded yet (%s): again in %g s", exc, pause)
                time.sleep(pause)


class Channel(kombu_redis.Channel):
    """kombu's Redis channel that takes messages atomically and survives foreign items.

    While messages are waiting, they are taken with the fetch script (pop + unacked record +
    taken count of up to FETCH_MOST messages, as the prefetch count allows, in one round
    trip). Only when every queue was found empty, and no batch is in hand, does it block in
    BRPOP until something arrives: the one moment in which a message is popped before it is
    recorded: a kill in the microseconds before the worker reads the reply loses it; a Redis
    that stops right after replying does not (`QoS._record_popped`).
    """

    QoS = QoS

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._drained = False  # the last fetch found every queue empty
        self._blocking = False  # the command in flight is a BRPOP
        self._recorded: set[str] = set()
        self._script_loaded = False
        self._queue_lists: dict[str, list[str]] = {}
        _channels.add(self)

    def _brpop_start(self, timeout: float | None = None) -> None:
        linger = _linger()
        if self._drained and (linger is None or linger > 0):
            # Queues empty: wait for the next message, in a batch's linger at most. The worker
            # sits in its event loop meanwhile, so the reply is read the moment it comes.
            self._blocking = True
            if linger is not None:
                timeout = max(linger, MIN_BRPOP_TIMEOUT)
            super()._brpop_start(timeout)
            return
        queues = self._queue_cycle.consume(len(self.active_queues))
        if not queues:
            return
        keys, counted = self._fetch_args(tuple(queues))
        self._blocking = False
        self._in_poll = self.client.connection
        self._brpop_sent_at = time.monotonic()
        script = ("EVALSHA", _FETCH_SHA) if self._script_loaded else ("EVAL", _FETCH)
        bounds = (time.time(), self._fetch_most(), FETCH_BYTES)
        self.client.connection.send_command(*script, len(keys), *keys, *bounds, *counted)
        self._script_loaded = True  # EVAL cached it on the server

    def _fetch_most(self) -> int:
        """How many messages the next fetch may take: what the prefetch count still allows."""
        room = self.qos.can_consume_max_estimate()
        return FETCH_MOST if room is None else max(1, min(FETCH_MOST, room))

    def _fetch_args(self, queues: tuple[str, ...]) -> tuple[list[str], list[str]]:
        """The fetch script's keys and queue names for queues in this order.

        Per queue, its lists (one per priority step) are worked out once; the order of the
        queues changes with every message taken (kombu's fair rotation), so it is not memoised.
        """
        lists = [self._lists_of(q) for q in queues]
        keys = [group[step] for step in range(len(self.priority_steps)) for group in lists]
        keys += self._bookkeeping_keys
        counted = ["" if q == MAINTENANCE_QUEUE else q for q in queues]
        return keys, counted * len(self.priority_steps)

    def _lists_of(self, queue: str) -> list[str]:
        found = self._queue_lists.get(queue)
        if found is None:
            prefix = self.global_keyprefix
            found = [prefix + self._q_for_pri(queue, pri) for pri in self.priority_steps]
            self._queue_lists[queue] = found
        return found

    @property
    def _bookkeeping_keys(self) -> list[str]:
        prefix = self.global_keyprefix
        return [prefix + self.unacked_key, prefix + self.unacked_index_key, prefix + TAKEN_KEY]

    def _brpop_read(self, **options: Any) -> bool:
        # kombu 5.7's Channel._brpop_read, for the fetch script too, with the item guarded.
        try:
            command = "BRPOP" if self._blocking else "EVAL"
            try:
                reply = self.client.parse_response(self.client.connection, command, **options)
            except self.connection_errors:
                self.client.connection.disconnect()
                raise
            except NoScriptError:  # a restarted Redis forgot the script: send it again
                self._script_loaded = False
                raise kombu_redis.Empty() from None
            self._in_poll = None  # the reply is in hand: nothing is outstanding from here on
            if command == "BRPOP":
                self._drained = not reply
                if reply:
                    self._take(command, reply)
                    return True
            else:
                *items, end = reply
                for at in range(0, len(items), 4):
                    self._take(command, items[at : at + 4])
                # Every queue was found empty: apply what is gathered now, no fetch to learn it.
                self._drained = bytes_to_str(end) == "empty"
                if items and not self._drained:
                    return True
                reply = items
            if not (_linger() or 0) > 0:
                self._on_idle()
            if reply:
                return True
            raise kombu_redis.Empty()
        finally:
            self._in_poll = None
            flush = getattr(self, "_flush_brpop_reauth", None)  # kombu >= 5.7
            if flush is not None:
                flush()

    def _on_idle(self) -> None:
        for _, on_idle in list(_idle):
            try:
                on_idle()
            except Exception:  # the event loop must go on
                log.exception("flushing a batch on an empty queue failed")

    def _take(self, command: str, reply: list[Any]) -> None:
        """Deliver a fetched or popped item, or dead-letter one that is not a message."""
        key = bytes_to_str(reply[0])
        if command == "EVAL":
            key = key[len(self.global_keyprefix) :]
        item = reply[1]
        queue = key.rsplit(self.sep, 1)[0]
        self._queue_cycle.rotate(queue)
        recorded = command == "EVAL" and bytes_to_str(reply[2]) == "ok"
        try:
            payload = self._envelope(item)
        except NotAMessage as exc:
            if recorded:  # the script took it for a message; Python's parser disagrees
                self.qos._remove_from_indices(bytes_to_str(reply[3])).execute()
            self._dead_letter(queue, key, item, str(exc))
            return
        if recorded:
            self._recorded.add(payload["properties"]["delivery_tag"])
        elif _first_delivery(payload):
            self._count_taken(queue)
        self.connection._deliver(payload, queue)

    def _envelope(self, item: bytes | str) -> dict[str, Any]:
        """The parsed envelope, or NotAMessage saying what is wrong with it."""
        try:
            payload = loads_envelope(bytes_to_str(item))
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
