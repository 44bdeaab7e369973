"""The one rate limiter of the dev tools: a token bucket, paced in ticks of at least TICK.

`orderfleet simulate` bounds its bursts (a stalled producer does not catch up all at once);
the bench's paced producer does not (open loop: a late send is not skipped, it goes at once).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

BURST_SECONDS = 0.1  # the most a bounded pacer grants at once: this many seconds of its rate
TICK = 0.002  # seconds: the shortest pause between two sends (see Pacer.pause)
LONGEST_PAUSE = 0.05  # seconds: a pause never outlasts this (deadlines are checked between)


class Pacer:
    """`rate` sends a second on average (0: no limit); bursts bounded to `burst` seconds of it,
    or not at all (None)."""

    def __init__(
        self,
        rate: float,
        burst: float | None = BURST_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.rate = rate
        self.capacity = math.inf if burst is None else max(1.0, rate * burst)
        self.tokens = 1.0
        self.clock = clock
        self.stamp = clock()

    def grant(self, wanted: int) -> int:
        """How many of `wanted` sends may go now (all of them when the rate is 0)."""
        if self.rate <= 0:
            return wanted
        self._refill()
        granted = min(wanted, int(self.tokens))
        self.tokens -= granted
        return granted

    def give_back(self, unused: int) -> None:
        """Return granted sends that were not made."""
        if self.rate > 0:
            self.tokens = min(self.capacity, self.tokens + unused)

    def delay(self) -> float:
        """Seconds until the next send may go."""
        if self.rate <= 0:
            return 0.0
        self._refill()
        return max(0.0, (1.0 - self.tokens) / self.rate)

    def pause(self, sleep: Callable[[float], None] = time.sleep) -> None:
        """Sleep until the next send may go, at least TICK: what is due then goes in one call,
        as a busy service publishes. A publish call costs about 230 us besides its events:
        calls of 1.6 events on average took the producer to 260 us per event, a core at 3,500
        events/s, taken from the fleet it measures."""
        sleep(min(LONGEST_PAUSE, max(TICK, self.delay())))

    def _refill(self) -> None:
        now = self.clock()
        self.tokens = min(self.capacity, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
