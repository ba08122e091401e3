"""A per-account budget of ThingSpace calls per second (GCRA, a token bucket variant)."""

import asyncio
import time
from collections.abc import Callable


class RateLimiter:
    """Lets at most ``rate`` calls per second through, with bursts of up to ``burst``.

    Callers wait their turn; nobody is refused. The budget holds even during a mass
    re-registration, because every call for the account goes through the same limiter.
    """

    def __init__(
        self, rate: float, burst: int = 1, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("rate must be positive and burst at least 1")
        self._interval = 1.0 / rate
        self._tolerance = (burst - 1) * self._interval
        self._clock = clock
        self._theoretical_arrival = clock()

    def reserve(self) -> float:
        """Book the next slot; returns how long to wait for it (no await: atomic)."""
        now = self._clock()
        arrival = max(self._theoretical_arrival, now)
        self._theoretical_arrival = arrival + self._interval
        return max(0.0, arrival - self._tolerance - now)

    async def acquire(self) -> None:
        delay = self.reserve()
        if delay > 0:
            await asyncio.sleep(delay)
